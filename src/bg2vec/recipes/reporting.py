"""The end-of-run report: a table on the terminal, `metrics.json`, and a PNG of the curves."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


@dataclass
class TrainingResult:
    """What a finished training run reports: where it wrote, the table rows, the final figures, the trained
    model, and (SimCSE with a pair file) each pair's similarity before and after."""

    output_dir: str
    rows: list[dict[str, Any]]
    final: dict[str, Any]
    table: str
    model: Any
    pairs: list[dict[str, Any]] = field(default_factory=list)


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


def write_metrics(
    output_dir: str | Path, log_history: list[dict[str, Any]], rows: list[dict], final: dict, **sections: Any
) -> Path:
    """Save the full log history, the table rows, the final figures and any extra `sections` as JSON."""
    path = Path(output_dir) / METRICS_FILE
    payload = {"final": final, "table": rows, **sections, "log_history": log_history}
    path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    return path


def plot_curves(
    log_history: list[dict[str, Any]], path: str | Path, title: str, extra_key: str | list[str] | None
) -> Path:
    """Training/validation loss (left) and `extra_key` (e.g. eval_accuracy; or several keys, one panel each)
    against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(e["step"], e[key]) for e in log_history if key in e]
        return [p[0] for p in points], [p[1] for p in points]

    extra_keys = [extra_key] if isinstance(extra_key, str) else list(extra_key or [])
    panels = 1 + len(extra_keys)
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    loss_axis = axes[0][0]
    for key, label in (("loss", "training loss"), ("eval_loss", "validation loss")):
        steps, values = series(key)
        if steps:
            loss_axis.plot(steps, values, marker="o" if key == "eval_loss" else None, label=label)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    if loss_axis.get_legend_handles_labels()[0]:
        loss_axis.legend()
    loss_axis.grid(alpha=0.3)
    for axis, key in zip(axes[0][1:], extra_keys):
        steps, values = series(key)
        axis.plot(steps, values, marker="o", color="tab:green")
        axis.set_xlabel("step")
        axis.set_ylabel(key.removeprefix("eval_"))
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def format_pair_similarities(pairs: list[dict[str, Any]], source: str, shown: int = 3) -> str:
    """Cosine similarity of labelled pairs before and after training: the mean per label (for a few distinct
    labels, e.g. 1 = similar, 0 = unrelated), the Spearman correlation with the labels, and examples.

    Each pair is {"sentence1", "sentence2", "score", "before", "after"}.
    """
    import torch

    from ..objectives.contrastive import spearman

    scores = torch.tensor([p["score"] for p in pairs])
    lines = [f"pair similarities (cosine) on {source}: before (MNTP only) -> after SimCSE"]
    labels = sorted({p["score"] for p in pairs}, reverse=True)
    means: dict[float, tuple[float, float]] = {}
    for label in labels if len(labels) <= 5 else []:
        group = [p for p in pairs if p["score"] == label]
        means[label] = (sum(p["before"] for p in group) / len(group), sum(p["after"] for p in group) / len(group))
        lines.append(f"  label {label:g} ({len(group)} pairs): mean {means[label][0]:.3f} -> {means[label][1]:.3f}")
    if len(labels) == 2:
        (high_before, high_after), (low_before, low_after) = means[labels[0]], means[labels[1]]
        gap = f"{high_before - low_before:+.3f} -> {high_after - low_after:+.3f}"
        lines.append(f"  gap (label {labels[0]:g} minus {labels[1]:g}): {gap}")
    rho = [spearman(torch.tensor([p[when] for p in pairs]), scores) for when in ("before", "after")]
    lines.append(f"  Spearman with the labels: {rho[0]:.3f} -> {rho[1]:.3f}")
    ranked = sorted(pairs, key=lambda p: p["score"], reverse=True)
    examples = ranked[:shown] + ranked[-shown:] if len(ranked) > 2 * shown else ranked
    for p in examples:
        text = f"{_clip(p['sentence1'])} | {_clip(p['sentence2'])}"
        lines.append(f"  {p['before']:.3f} -> {p['after']:.3f}  [{p['score']:g}] {text}")
    return "\n".join(lines)


def _clip(text: str, width: int = 45) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
