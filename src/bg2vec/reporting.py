"""The end-of-run report: a table on the terminal, `metrics.json`, and a PNG of the curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


def eval_rows(log_history: list[dict[str, Any]], metric_keys: dict[str, str]) -> list[dict[str, Any]]:
    """One row per evaluation: the step, the last training loss logged by then, and the eval metrics.

    `metric_keys` maps a column title to a key of the eval log (e.g. {"Accuracy": "eval_accuracy"}).
    """
    rows = []
    last_train_loss: float | None = None
    for entry in log_history:
        if "loss" in entry:
            last_train_loss = entry["loss"]
        if "eval_loss" in entry:
            row = {"Step": entry["step"], "Training Loss": last_train_loss, "Validation Loss": entry["eval_loss"]}
            row.update({title: entry.get(key) for title, key in metric_keys.items()})
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table in the Trainer notebook's layout (Step | Training Loss | Validation Loss | ...)."""
    if not rows:
        return "(no evaluation was run)"
    titles = list(rows[0])
    cells = [[_cell(row[title]) for title in titles] for row in rows]
    widths = [max(len(title), *(len(r[i]) for r in cells)) for i, title in enumerate(titles)]
    lines = [" | ".join(t.rjust(w) for t, w in zip(titles, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def write_metrics(output_dir: str | Path, log_history: list[dict[str, Any]], rows: list[dict], final: dict) -> Path:
    """Save the full log history, the table rows and the final figures as JSON."""
    path = Path(output_dir) / METRICS_FILE
    payload = {"final": final, "table": rows, "log_history": log_history}
    path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    return path


def plot_curves(log_history: list[dict[str, Any]], path: str | Path, title: str, extra_key: str | None) -> Path:
    """Training/validation loss (left) and `extra_key` (e.g. eval_accuracy, right) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(e["step"], e[key]) for e in log_history if key in e]
        return [p[0] for p in points], [p[1] for p in points]

    panels = 2 if extra_key else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    loss_axis = axes[0][0]
    for key, label in (("loss", "training loss"), ("eval_loss", "validation loss")):
        steps, values = series(key)
        if steps:
            loss_axis.plot(steps, values, marker="o" if key == "eval_loss" else None, label=label)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    loss_axis.legend()
    loss_axis.grid(alpha=0.3)
    if extra_key:
        steps, values = series(extra_key)
        axes[0][1].plot(steps, values, marker="o", color="tab:green")
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel(extra_key.removeprefix("eval_"))
        axes[0][1].grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
