"""Evaluation reports: a run folder holds `evaluation.json` (every score), `evaluation.md` (tasks x models, main
score, best in bold, averages) and `evaluation.png` (a bar chart). `compare` puts earlier runs side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

RESULTS_FILE = "evaluation.json"
TABLE_FILE = "evaluation.md"
CHART_FILE = "evaluation.png"


def write_report(folder: str | Path, runs: list[dict[str, Any]]) -> str:
    """Write evaluation.json, .md and .png for `runs` ({"model", "settings", "tasks": [...]}) and
    return the Markdown table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_FILE).write_text(json.dumps({"format_version": 1, "runs": runs}, indent=1), encoding="utf-8")
    table = markdown_table(runs)
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


def run_label(run: dict[str, Any], index: int, runs: list[dict[str, Any]]) -> str:
    label = run.get("label") or run["model"]
    same = [r for r in runs if (r.get("label") or r["model"]) == label]
    return label if len(same) == 1 else f"{label} #{index + 1}"


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """Tasks x models, main scores to 3 decimals, each task's best in bold, and each model's average."""
    tasks, labels, scores = _grid(runs)
    lines = ["| task | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    for task in tasks:
        values = [scores.get((task, label)) for label in labels]
        best = max((v for v in values if v is not None and not math.isnan(v)), default=None)
        cells = ["–" if v is None else (f"**{v:.3f}**" if v == best and len(labels) > 1 else f"{v:.3f}") for v in values]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    averages = []
    for label in labels:
        values = [scores[(task, label)] for task in tasks if (task, label) in scores]
        complete = len(values) == len(tasks)
        averages.append(f"{sum(values) / len(values):.3f}" + ("" if complete else f" ({len(values)} tasks)") if values else "–")
    lines.append("| **average** | " + " | ".join(averages) + " |")
    return "\n".join(lines)


def bar_chart(runs: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: one group per task, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, labels, scores = _grid(runs)
    width = 0.8 / max(len(labels), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(tasks) * max(1, len(labels)) ** 0.5), 4))
    for i, label in enumerate(labels):
        xs = [t + i * width for t in range(len(tasks))]
        axis.bar(xs, [scores.get((task, label), 0.0) for task in tasks], width, label=label)
    axis.set_xticks([t + width * (len(labels) - 1) / 2 for t in range(len(tasks))])
    axis.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("main score")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
