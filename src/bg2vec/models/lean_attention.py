"""Attention with dropout that keeps no attention probabilities for the backward pass, where sdpa would.

On a GPU, sdpa's fused kernels apply attention dropout without keeping the probabilities. On a CPU, sdpa with
dropout takes its math path, and autograd keeps three (B, heads, T, S) float tensors per layer: the softmax,
the dropout mask and the dropped probabilities (a third of what SimCSE's step kept). `_DroppedAttention` keeps
q, k, v and the mask's seed (`models/dropout_masks.py`); the backward pass recomputes the probabilities, as
flash attention does. It works through the batch in blocks of rows whose (heads, T, S) tensors fit the CPU's
cache, which makes forward and backward about twice as fast as sdpa's math path on the benchmark's shape.

`use_lean_attention(model)` switches a model's "sdpa" to "bg2vec_sdpa": transformers' sdpa function itself,
except in training with attention dropout on a CPU, where the results are sdpa's for the masks drawn (tested).
The name is registered with transformers' attention and mask interfaces; it is never saved (transformers does
not write the attention implementation into config.json).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .dropout_masks import keep_mask, keep_scale, new_seed

LEAN_SDPA = "bg2vec_sdpa"


_CHUNK_ELEMENTS = 1 << 18  # (rows x heads x T x S) per block: 1 MiB of float32, so a block stays in cache


class _DroppedAttention(torch.autograd.Function):
    """softmax(q kᵀ · scale + mask) with dropout, times v; grouped-query heads without repeating k and v. It runs
    in blocks of batch rows: each (heads, T, S) tensor is made, used and freed while it is in the CPU's cache."""

    @staticmethod
    def forward(ctx, query, key, value, mask, scale, p):  # q (B, Hq, T, d), k/v (B, Hkv, S, d), mask (B|1, 1|H, T, S)
        seed, out = new_seed(), torch.empty_like(query)  # out (B, Hq, T, d)
        for rows, block_seed in _blocks(query, key, seed):
            q, k, v = _grouped(query[rows] * scale, key[rows], value[rows])  # (b, Hkv, G, T, d), (b, Hkv, 1, S, d) x2
            probs = _probabilities(q, k, _rows(mask, rows))  # (b, Hkv, G, T, S)
            probs.mul_(keep_mask(probs.shape, p, block_seed, probs.device, probs.dtype))
            out[rows] = (probs @ v).flatten(1, 2)
        ctx.save_for_backward(query, key, value, mask)
        ctx.scale, ctx.p, ctx.seed = scale, p, seed
        return out.mul_(keep_scale(p))  # dropout's 1 / (1 - p), on the smaller tensor

    @staticmethod
    def backward(ctx, grad_out):  # (B, Hq, T, d)
        query, key, value, mask = ctx.saved_tensors
        grad_query, grad_key, grad_value = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
        for rows, block_seed in _blocks(query, key, ctx.seed):
            q, k, v = _grouped(query[rows] * ctx.scale, key[rows], value[rows])
            probs = _probabilities(q, k, _rows(mask, rows))  # (b, Hkv, G, T, S), recomputed
            keep = keep_mask(probs.shape, ctx.p, block_seed, probs.device, probs.dtype)  # drawn again
            grad = grad_out[rows].reshape(q.shape) * keep_scale(ctx.p)  # (b, Hkv, G, T, d)
            grad_value[rows] = ((probs * keep).transpose(-1, -2) @ grad).sum(2)  # (b, Hkv, S, d)
            grad_probs = (grad @ v.transpose(-1, -2)).mul_(keep)  # (b, Hkv, G, T, S)
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)  # torch's fused backward
            grad_query[rows] = (grad_scores @ k).mul_(ctx.scale).flatten(1, 2)  # (b, Hq, T, d)
            grad_key[rows] = (grad_scores.transpose(-1, -2) @ q).sum(2)  # (b, Hkv, S, d)
        return grad_query, grad_key, grad_value, None, None, None


def _blocks(query: torch.Tensor, key: torch.Tensor, seed: int):
    """(slice of batch rows, the seed of their dropout mask) for each block."""
    batch, heads, length = query.shape[:3]
    step = max(1, _CHUNK_ELEMENTS // (heads * length * key.shape[2]))
    for start in range(0, batch, step):
        yield slice(start, start + step), seed + start


def _rows(mask: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return mask if mask is None or mask.shape[0] == 1 else mask[rows]


def _grouped(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """q as (B, Hkv, G, T, d) and k, v as (B, Hkv, 1, S, d): each key/value head serves G query heads."""
    groups = query.shape[1] // key.shape[1]
    return query.unflatten(1, (key.shape[1], groups)), key.unsqueeze(2), value.unsqueeze(2)


def _probabilities(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ + mask), (B, Hkv, G, T, S); a row that may see nothing gets zeros, as in sdpa."""
    scores = q @ k.transpose(-1, -2)  # (B, Hkv, G, T, S)
    if mask is None:
        return torch.softmax(scores, dim=-1)
    mask = mask.unflatten(1, (k.shape[1], -1)) if mask.shape[1] > 1 else mask.unsqueeze(1)  # (B|1, Hkv|1, G|1, T, S)
    scores = scores.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else scores.add_(mask)
    return torch._safe_softmax(scores, dim=-1)


def lean_sdpa_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention function, with `_DroppedAttention` for training with dropout on a CPU."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = kwargs.get("position_bias") is None and kwargs.get("softcap") is None
    # with or without a graph alike: a replay (gradient caching, reentrant checkpointing) must draw the same masks
    if not (dropout > 0 and plain and query.device.type == "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and causal and query.shape[2] > 1:  # as sdpa: a given mask already holds causality
        attention_mask = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril_()[None, None]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = _DroppedAttention.apply(query, key, value, attention_mask, scale, dropout)  # (B, H, T, d)
    return out.transpose(1, 2).contiguous(), None  # (B, T, H, d), as sdpa's function returns it


def use_lean_attention(model: nn.Module) -> bool:
    """Give a model that uses "sdpa" the lean attention; returns whether it did (not for eager, FA2, ...)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if LEAN_SDPA not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(LEAN_SDPA, lean_sdpa_forward)
        AttentionMaskInterface.register(LEAN_SDPA, sdpa_mask)
    config._attn_implementation = LEAN_SDPA  # sub-configs (a multimodal text config) follow transformers' setter
    return True
