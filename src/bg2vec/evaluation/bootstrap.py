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
    count = len(items["values"])
    rows = np.arange(count) if index is None else np.asarray(index)
    return float(statistics(items, rows[None])[0])


def statistics(items: dict[str, Any], indices: np.ndarray) -> np.ndarray:
    """(R,) scores of the items on each row of `indices` (R, N): every resample at once, in numpy (the same values
    as scipy's spearmanr and scikit-learn's average precision, weighted F1 and V-measure, checked by the tests)."""
    values = np.asarray(items["values"], dtype=float)
    kind = items["statistic"]
    if kind == "mean":
        return values[indices].mean(axis=1)
    if kind == "spearman":
        from scipy.stats import rankdata  # average ranks for ties, as spearmanr

        return _pearson(rankdata(values[indices, 0], axis=1), rankdata(values[indices, 1], axis=1))
    if kind == "average_precision":
        labels = values[indices, -1]  # (R, N)
        return np.max([_average_precision(values[indices, c], labels) for c in range(values.shape[1] - 1)], axis=0)
    if kind == "bitext_f1":
        gold, size = values[indices, 0].astype(int), len(values)
        return np.mean([_weighted_f1(gold, values[indices, c].astype(int), size) for c in (1, 2)], axis=0)
    if kind == "v_measure":
        return _v_measure(values[indices, 1].astype(int), values[indices, 0].astype(int))
    raise ValueError(f"unknown item statistic {kind!r}")


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R,) correlation of the rows of x and y (R, N); 0 where either row is constant (spearmanr gives NaN)."""
    x, y = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    scale = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    return np.divide((x * y).sum(1), scale, out=np.zeros(len(x)), where=scale > 1e-12)


def _average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(R,) average precision of each row (R, N), ties as one threshold (scikit-learn's definition); a row with
    one class scores 1 if all positive, 0 if all negative."""
    order = np.argsort(-scores, axis=1, kind="stable")
    scores, labels = np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)
    positions = np.arange(1, scores.shape[1] + 1)
    precision = np.cumsum(labels, 1) / positions  # (R, N): precision once the first i rows are taken
    group_end = np.ones_like(scores, dtype=bool)
    group_end[:, :-1] = scores[:, :-1] != scores[:, 1:]  # a threshold sits after the last row of equal scores
    end_of = np.where(group_end, positions - 1, scores.shape[1])
    end_of = np.minimum.accumulate(end_of[:, ::-1], axis=1)[:, ::-1]  # each row's group's last position
    positives = labels.sum(1)
    found = (labels * np.take_along_axis(precision, end_of, 1)).sum(1)
    return np.where(positives > 0, found / np.maximum(positives, 1), 0.0)


def _weighted_f1(gold: np.ndarray, predicted: np.ndarray, size: int) -> np.ndarray:
    """(R,) support-weighted F1 over the labels 0..size-1 of each row (R, N) (scikit-learn's "weighted")."""
    offset = np.arange(len(gold))[:, None] * size  # (R, 1): one bincount for every row

    def counts(labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = np.bincount((labels + offset).ravel(), None if weights is None else weights.ravel(), len(gold) * size)
        return flat.reshape(len(gold), size)

    support, chosen, hits = counts(gold), counts(predicted), counts(gold, (gold == predicted).astype(float))
    f1 = np.divide(2 * hits, support + chosen, out=np.zeros(support.shape), where=support + chosen > 0)
    return (f1 * support).sum(1) / support.sum(1)


def _v_measure(gold: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(R,) V-measure (beta 1) of each row's clustering (R, N) against its gold labels."""
    classes, groups = gold.max() + 1, clusters.max() + 1
    offset = np.arange(len(gold))[:, None] * classes * groups
    table = np.bincount((gold * groups + clusters + offset).ravel(), minlength=len(gold) * classes * groups)
    table = table.reshape(len(gold), classes, groups).astype(float)  # (R, classes, clusters)
    total = table.sum((1, 2))[:, None]

    def entropy(counts: np.ndarray) -> np.ndarray:  # (R, K) -> (R,)
        share = counts / total
        return -(share * np.log(np.where(share > 0, share, 1))).sum(1)

    def conditional(joint: np.ndarray, given: np.ndarray) -> np.ndarray:  # H(X | Y), joint (R, X, Y), given (R, Y)
        share = joint / total[:, :, None]
        ratio = np.where(joint > 0, joint / np.maximum(given[:, None, :], 1), 1)
        return -(share * np.log(ratio)).sum((1, 2))

    class_sizes, cluster_sizes = table.sum(2), table.sum(1)
    h_class, h_cluster = entropy(class_sizes), entropy(cluster_sizes)
    homogeneity = np.where(h_class > 0, 1 - conditional(table, cluster_sizes) / np.where(h_class > 0, h_class, 1), 1.0)
    completeness = np.where(h_cluster > 0, 1 - conditional(table.transpose(0, 2, 1), class_sizes) / np.where(h_cluster > 0, h_cluster, 1), 1.0)
    both = homogeneity + completeness
    return np.divide(2 * homogeneity * completeness, both, out=np.zeros(len(gold)), where=both > 0)


def resample_indices(task: str, count: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, count) row indices, the same for every model scored on `task`."""
    digest = int(hashlib.sha256(f"{seed}:{task}:{count}".encode()).hexdigest()[:16], 16)
    return np.random.default_rng(digest).integers(0, count, size=(resamples, count))


def resampled_scores(task: str, items: dict[str, Any], main: float, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples,) scores of the task on resampled items, shifted to the main score."""
    indices = resample_indices(task, len(items["values"]), resamples, seed)
    shift = main - statistic(items)
    return statistics(items, indices) + shift


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
