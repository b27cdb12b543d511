"""Evaluation reports: a run folder holds `evaluation.json` (every score, per-item scores and bootstrap 95%
intervals), `evaluation.md` (tasks x models, main score ± half the interval, best in bold, averages; with several
models, each one's differences from the first, marked where the paired-bootstrap interval excludes zero) and
`evaluation.png` (a bar chart with the intervals as error bars). `compare` puts earlier runs side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .bootstrap import RESAMPLES, SEED, add_intervals, paired_difference, percentile_interval, resampled_scores

RESULTS_FILE = "evaluation.json"
TABLE_FILE = "evaluation.md"
CHART_FILE = "evaluation.png"


def write_report(folder: str | Path, runs: list[dict[str, Any]]) -> str:
    """Write evaluation.json, .md and .png for `runs` ({"model", "settings", "tasks": [...]}) and
    return the Markdown table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    add_intervals(runs)
    document = {"format_version": 2, "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "level": 0.95}, "runs": runs}
    (folder / RESULTS_FILE).write_text(json.dumps(document, indent=1), encoding="utf-8")
    table = markdown_table(runs)
    if len(runs) > 1:
        table += "\n\n" + differences_table(runs)
    if any(run.get("contamination") for run in runs):
        table += "\n\n" + contamination_table(runs)
    (folder / TABLE_FILE).write_text(table + "\n", encoding="utf-8")
    bar_chart(runs, folder / CHART_FILE)
    return table


def read_runs(folders: list[str]) -> list[dict[str, Any]]:
    """The runs recorded in earlier run folders (nothing is recomputed)."""
    runs = []
    for name in folders:
        path = Path(name) / RESULTS_FILE
        if not path.is_file():
            raise ConfigError("--compare", name, f"a folder written by bg2vec evaluate (with {RESULTS_FILE})")
        try:
            runs.extend(json.loads(path.read_text(encoding="utf-8"))["runs"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a bg2vec evaluate result ({exc})") from None
    return runs


def _grid(runs: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    tasks: list[str] = []
    for run in runs:
        tasks += [t["task"] for t in run["tasks"] if t["task"] not in tasks]
    labels = [run_label(run, i, runs) for i, run in enumerate(runs)]
    scores = {(t["task"], label): t["main_score"] for run, label in zip(runs, labels) for t in run["tasks"]}
    return tasks, labels, scores


def _half_width(interval: list[float] | None) -> str:
    return f" ± {(interval[1] - interval[0]) / 2:.3f}" if interval else ""


def run_label(run: dict[str, Any], index: int, runs: list[dict[str, Any]]) -> str:
    label = run.get("label") or run["model"]
    same = [r for r in runs if (r.get("label") or r["model"]) == label]
    return label if len(same) == 1 else f"{label} #{index + 1}"


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """Tasks x models, main scores to 3 decimals ± half the 95% interval (where there is one), each task's best in
    bold, and each model's average."""
    tasks, labels, scores = _grid(runs)
    intervals = {(t["task"], label): t.get("interval") for run, label in zip(runs, labels) for t in run["tasks"]}
    lines = ["| task | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    for task in tasks:
        values = [scores.get((task, label)) for label in labels]
        best = max((v for v in values if v is not None and not math.isnan(v)), default=None)
        cells = ["–" if v is None else (f"**{v:.3f}**" if v == best and len(labels) > 1 else f"{v:.3f}") + _half_width(intervals.get((task, label)))
                 for v, label in zip(values, labels)]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    averages = []
    for run, label in zip(runs, labels):
        values = [scores[(task, label)] for task in tasks if (task, label) in scores]
        complete = len(values) == len(tasks)
        averages.append(f"{sum(values) / len(values):.3f}" + (_half_width(run.get("average_interval")) if complete else f" ({len(values)} tasks)") if values else "–")
    lines.append("| **average** | " + " | ".join(averages) + " |")
    return "\n".join(lines)


def differences_table(runs: list[dict[str, Any]]) -> str:
    """Each later model minus the first, per task and on the average: difference [95% paired-bootstrap interval],
    with * where the interval excludes zero (– where a task has no per-item scores)."""
    tasks, labels, _ = _grid(runs)
    by_task = [{t["task"]: t for t in run["tasks"]} for run in runs]
    lines = [f"Difference from {labels[0]} (95% paired bootstrap; * = the interval excludes zero)", "",
             "| task | " + " | ".join(labels[1:]) + " |", "| --- |" + " ---: |" * (len(labels) - 1)]
    for task in tasks + ["**average**"]:
        cells = []
        for other in by_task[1:]:
            found = _average_difference(by_task[0], other, tasks) if task == "**average**" else (
                paired_difference(task, other[task], by_task[0][task]) if task in other and task in by_task[0] else None)
            cells.append("–" if found is None else f"{found['difference']:+.3f} [{found['interval'][0]:+.3f}, {found['interval'][1]:+.3f}]"
                         + (" *" if found["significant"] else ""))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _average_difference(base: dict[str, Any], other: dict[str, Any], tasks: list[str]) -> dict[str, Any] | None:
    """The average over all tasks, other minus base, resampling every task at once (paired)."""
    pairs = [(base.get(t), other.get(t)) for t in tasks]
    if not all(a and b and a.get("items") and b.get("items") and len(a["items"]["values"]) == len(b["items"]["values"]) for a, b in pairs):
        return None
    samples = [resampled_scores(t, b["items"], b["main_score"]) - resampled_scores(t, a["items"], a["main_score"])
               for t, (a, b) in zip(tasks, pairs)]
    low, high = percentile_interval(sum(samples) / len(samples))
    difference = sum(b["main_score"] - a["main_score"] for a, b in pairs) / len(pairs)
    return {"difference": difference, "interval": [low, high], "significant": low > 0 or high < 0}


def contamination_table(runs: list[dict[str, Any]]) -> str:
    """Per model and task: the share of task texts found exactly, and sharing an n-gram, in its training files."""
    lines = ["Training-text overlap (exact / 13-gram share of each task's texts; – = not checked)", "",
             "| model | " + " | ".join(t["task"] for t in runs[0]["tasks"]) + " |", "| --- |" + " ---: |" * len(runs[0]["tasks"])]
    for index, run in enumerate(runs):
        found = (run.get("contamination") or {}).get("tasks", {})
        cells = [f"{found[t['task']]['exact']:.1%} / {found[t['task']]['ngram']:.1%}" if found.get(t["task"]) else "–"
                 for t in runs[0]["tasks"]]
        lines.append(f"| {run_label(run, index, runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(runs: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: one group per task, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, labels, scores = _grid(runs)
    width = 0.8 / max(len(labels), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(tasks) * max(1, len(labels)) ** 0.5), 4))
    intervals = {(t["task"], label): t.get("interval") for run, label in zip(runs, labels) for t in run["tasks"]}
    for i, label in enumerate(labels):
        xs = [t + i * width for t in range(len(tasks))]
        heights = [scores.get((task, label), 0.0) for task in tasks]
        spans = [intervals.get((task, label)) for task in tasks]
        errors = [[h - s[0] if s else 0.0 for h, s in zip(heights, spans)], [s[1] - h if s else 0.0 for h, s in zip(heights, spans)]]
        axis.bar(xs, heights, width, label=label, yerr=errors, capsize=2, error_kw={"elinewidth": 0.8})
    axis.set_xticks([t + width * (len(labels) - 1) / 2 for t in range(len(tasks))])
    axis.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("main score")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
