"""Pure pooling functions: token states (B, T, H) + a mask of the positions to pool (B, T) → (B, H).

The pooling mask says which positions count: with `skip_instruction` it covers only the text's own tokens
(no BOS, no instruction, no padding), as llm2vec's "embed mask" does. Works with left or right padding.
"""

from __future__ import annotations

import torch

from .choices import POOLING_MODES


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the masked positions."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, H)


def weighted_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Position-weighted mean (SGPT): the k-th pooled token weighs k, so later tokens, which have seen more
    of the text in a causal model, count more."""
    positions = torch.cumsum(mask.long(), dim=1) * mask.long()  # (B, T): 1..n over the pooled tokens
    weights = positions.to(hidden.dtype)
    weights = (weights / weights.sum(1, keepdim=True).clamp(min=1e-9)).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1)  # (B, H)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state at the last masked position of each row (the EOS token when one was appended)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)


def bos_token_pool(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, bos_token_id: int) -> torch.Tensor:
    """The state at each row's first attended BOS token."""
    is_bos = (input_ids == bos_token_id) & attention_mask.bool()  # (B, T)
    if not is_bos.any(dim=1).all():
        raise ValueError("bos_token pooling needs a BOS token in every input; this tokenizer adds none")
    first = is_bos.long().argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]  # (B, H)


def pool(
    mode: str,
    hidden: torch.Tensor,
    pooling_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    bos_token_id: int | None = None,
) -> torch.Tensor:
    """Dispatch on `mode` (one of POOLING_MODES)."""
    if mode == "mean":
        return mean_pool(hidden, pooling_mask)
    if mode == "weighted_mean":
        return weighted_mean_pool(hidden, pooling_mask)
    if mode in ("eos_token", "last_token"):
        return last_token_pool(hidden, pooling_mask)
    if mode == "bos_token":
        if input_ids is None or attention_mask is None or bos_token_id is None:
            raise ValueError("bos_token pooling needs input_ids, attention_mask and bos_token_id")
        return bos_token_pool(hidden, input_ids, attention_mask, bos_token_id)
    from ..errors import ConfigError

    raise ConfigError("pooling_mode", mode, "one of " + ", ".join(POOLING_MODES))
