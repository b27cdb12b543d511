"""Merging LoRA adapters trained on the same base, stage and rank: a "model soup" (average) or spherical
interpolation (slerp) of their weight updates.

Each adapter i changes a weight by ΔW_i = s · B_i A_i (s = lora_alpha / r). Averaging A and B separately would not
average the updates ((ΣB/n)(ΣA/n) ≠ ΣBA/n), so the merge is exact instead: A = [A_1; ...; A_n] stacked along the
rank and B = [c_1 B_1, ..., c_n B_n], so that B A = Σ c_i B_i A_i, with rank n·r and lora_alpha scaled to keep s.
The method only decides the coefficients c of each module:

- average: c_i = 1/n;
- slerp: the updates folded in one at a time, result_k = slerp(result_{k-1}, ΔW_k, t = 1/k) with the angle θ
  between the flattened matrices, so two adapters meet halfway along the arc (sin(θ/2)/sin θ each) rather than
  on the chord; nearly parallel updates (sin θ ≈ 0) fall back to the average.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: the config reads METHODS without it
    import torch

ADAPTER_WEIGHTS = "adapter_model.safetensors"
METHODS = ("average", "slerp")


def load_adapter_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / ADAPTER_WEIGHTS))


def coefficients(updates: list[torch.Tensor], method: str) -> list[float]:
    """The weight c_i of each adapter's update ΔW_i (flattened, any shape) in the merged update."""
    n = len(updates)
    if method == "average":
        return [1 / n] * n
    if method != "slerp":
        raise ValueError(f"method {method!r} is none of {', '.join(METHODS)}")
    c = [1.0] + [0.0] * (n - 1)
    current = updates[0].double().flatten()  # (P,)
    for k in range(1, n):
        t = 1 / (k + 1)
        nxt = updates[k].double().flatten()  # (P,)
        cosine = float(current @ nxt / (current.norm() * nxt.norm()).clamp_min(1e-30))
        theta = math.acos(max(-1.0, min(1.0, cosine)))
        if math.sin(theta) < 1e-6:
            a, b = 1 - t, t
        else:
            a, b = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
        c = [a * v for v in c]
        c[k] = b
        current = a * current + b * nxt
    return c


def merge_lora_weights(adapters: list[dict[str, torch.Tensor]], scaling: float, method: str) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """The merged adapter's tensors (rank n·r) and each module's coefficients. `scaling` (lora_alpha / r) weighs
    the updates only for slerp's angles (a common factor: it changes no angle), kept for clarity of ΔW."""
    import torch

    merged: dict[str, torch.Tensor] = {}
    used: dict[str, list[float]] = {}
    for key in adapters[0]:
        if ".lora_B." in key:
            continue
        if ".lora_A." not in key:  # a fully trained module (modules_to_save): averaged as it is
            merged[key] = sum(a[key].float() for a in adapters) / len(adapters)
            continue
        b_key = key.replace(".lora_A.", ".lora_B.")
        downs = [a[key] for a in adapters]  # each (r, in)
        ups = [a[b_key] for a in adapters]  # each (out, r)
        c = coefficients([scaling * (u.float() @ d.float()) for u, d in zip(ups, downs)], method)  # ΔW_i (out, in)
        merged[key] = torch.cat(downs, dim=0)  # (n·r, in)
        merged[b_key] = torch.cat([w * u.float() for w, u in zip(c, ups)], dim=1).to(ups[0].dtype)  # (out, n·r)
        used[key.replace(".lora_A.weight", "")] = c
    return merged, used
