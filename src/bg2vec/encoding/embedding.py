"""The one embedding step: a collated batch (`inputs.collate`'s keys) → one pooled float32 vector per row.

Training (SimCSE and supervised contrastive steps, through `objectives.simcse.SimCSEModel`) and encoding
(`Bg2Vec.embed_inputs`, the device workers) all call `embed_features`, so the vectors a run trains are the
vectors the finished encoder gives. It runs the model as it is: gradients, mode and device are the caller's.
"""

from __future__ import annotations

import torch
from torch import nn

from .pooling import pool


def embed_features(model: nn.Module, features: dict[str, torch.Tensor], pooling_mode: str, bos_token_id: int | None) -> torch.Tensor:
    """(B, H) float32 embeddings of one batch on the model's device: input_ids, attention_mask, pooling_mask
    (B, T) and, for left-padded batches, position_ids (B, T) counting from each row's first real token."""
    out = model(
        input_ids=features["input_ids"],
        attention_mask=features["attention_mask"],
        position_ids=features.get("position_ids"),
        use_cache=False,
    )
    hidden = out.last_hidden_state.float()  # (B, T, H)
    return pool(
        pooling_mode,
        hidden,
        features["pooling_mask"],
        input_ids=features["input_ids"],
        attention_mask=features["attention_mask"],
        bos_token_id=bos_token_id,
    )  # (B, H)
