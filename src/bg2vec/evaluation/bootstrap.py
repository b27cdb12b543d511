"""Bootstrap 95% intervals for task scores, their average, and paired differences between two models.

A task's items (`items.py`) are resampled with replacement, `RESAMPLES` times, with indices drawn from a generator
seeded by (SEED, task name, item count): every model sees the same resamples of a task, which is what makes a
difference between two models a paired bootstrap. The interval is the 2.5th and 97.5th percentiles of the
resampled score, shifted by (main score - the items' full-sample score); for every type but classification and
clustering that shift is zero (the items reproduce MTEB's score), for those two the items are a stand-in that
gives the width. The average's interval resamples every task at once and averages.

    >>> bootstrap_interval("t", {"statistic": "mean", "values": [0, 0, 0, 1]}, 0.25)
    (0.0, 0.75)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def statistic(items: dict[str, Any], index: np.ndarray | None = None) -> float:
    """The items' score on the rows `index` (all rows when None)."""
    values = np.asarray(items["values"], dtype=float)
    if index is not None:
        values = values[index]
    kind = items["statistic"]
    if kind == "mean":
        return float(values.mean())
    if kind == "spearman":
        from scipy.stats import spearmanr

        value = spearmanr(values[:, 0], values[:, 1]).statistic
        return float(value) if np.isfinite(value) else 0.0
    if kind == "average_precision":
        from sklearn.metrics import average_precision_score

        labels = values[:, -1]
        if labels.min() == labels.max():  # a resample with one class: AP is 1 if all positive, undefined else
            return float(labels[0])
        return float(max(average_precision_score(labels, values[:, c]) for c in range(values.shape[1] - 1)))
    if kind == "bitext_f1":
        from sklearn.metrics import f1_score

        both = [f1_score(values[:, 0], values[:, c], zero_division=0, average="weighted") for c in (1, 2)]
        return float(np.mean(both))
    if kind == "v_measure":
        from sklearn.metrics import v_measure_score

        return float(v_measure_score(values[:, 1], values[:, 0]))
    raise ValueError(f"unknown item statistic {kind!r}")


def resample_indices(task: str, count: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, count) row indices, the same for every model scored on `task`."""
    digest = int(hashlib.sha256(f"{seed}:{task}:{count}".encode()).hexdigest()[:16], 16)
    return np.random.default_rng(digest).integers(0, count, size=(resamples, count))


def resampled_scores(task: str, items: dict[str, Any], main: float, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples,) scores of the task on resampled items, shifted to the main score."""
    indices = resample_indices(task, len(items["values"]), resamples, seed)
    shift = main - statistic(items)
    return np.array([statistic(items, index) for index in indices]) + shift


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(task: str, items: dict[str, Any], main: float, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The 95% interval of one task's score."""
    return percentile_interval(resampled_scores(task, items, main, resamples, seed))


def add_intervals(runs: list[dict[str, Any]], resamples: int = RESAMPLES, seed: int = SEED) -> None:
    """Fill each task's "interval" and each run's "average" and "average_interval" (None where a task has no
    items, as MTEB's hub tasks: their evaluators report aggregates only)."""
    for run in runs:
        samples = []
        for task in run["tasks"]:
            items = task.get("items")
            if items:
                scores = resampled_scores(task["task"], items, task["main_score"], resamples, seed)
                task["interval"] = list(percentile_interval(scores))
                samples.append(scores)
            else:
                task["interval"] = None
        run["average"] = float(np.mean([t["main_score"] for t in run["tasks"]])) if run["tasks"] else None
        complete = run["tasks"] and len(samples) == len(run["tasks"])
        run["average_interval"] = list(percentile_interval(np.mean(samples, axis=0))) if complete else None


def paired_difference(task: str, a: dict[str, Any], b: dict[str, Any], resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any] | None:
    """Score of `a` minus `b` on one task (two task entries of a report), with its paired-bootstrap interval and
    whether that interval excludes zero; None when either lacks items or they cover different rows."""
    if not (a.get("items") and b.get("items")) or len(a["items"]["values"]) != len(b["items"]["values"]):
        return None
    difference = resampled_scores(task, a["items"], a["main_score"], resamples, seed) - resampled_scores(task, b["items"], b["main_score"], resamples, seed)
    low, high = percentile_interval(difference)
    return {"difference": a["main_score"] - b["main_score"], "interval": [low, high], "significant": low > 0 or high < 0}
