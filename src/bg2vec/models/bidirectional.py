"""Bidirectional attention for any decoder, through transformers 5.x's `config.is_causal = False`.

transformers' mask utilities build a bidirectional (padding-only) mask when the config says
`is_causal=False`, and the forward passes `is_causal=False` on to the attention kernels, so eager, sdpa and
flash_attention_2 all attend both ways, with or without padding and at any batch size. Flipping only the
attention modules' `is_causal` attribute (what llm2vec's subclasses amount to) is not enough: as soon as a
padding mask exists, sdpa receives the causal mask built from the config.

`enable_bidirectional` does the switch and then *checks* it by running the model: a decoder whose code
ignores the flag gets an error, never a silently causal encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def _configs(model: nn.Module) -> list:
    """The model's config and any text sub-config (multimodal wrappers keep the decoder's there)."""
    config = model.config
    found = [config]
    text_config = getattr(config, "text_config", None)
    if text_config is not None and text_config is not config:
        found.append(text_config)
    return found


def set_causal(model: nn.Module, causal: bool) -> None:
    """Set `is_causal` on the model's config(s); it is saved with the config and read on every forward."""
    for config in _configs(model):
        config.is_causal = causal


def is_bidirectional(model: nn.Module) -> bool:
    """Whether the model's config asks for bidirectional attention."""
    return not getattr(model.config, "is_causal", True)


@torch.inference_mode()
def attends_to_later_tokens(model: nn.Module, with_padding: bool = False) -> bool:
    """Run the model twice on 4 tokens that differ only in the last one; True if position 0 changed.

    With `with_padding` the probe runs as a batch of two, the second row left-padded, so the padding-mask
    code path is exercised too (that is where sdpa used to fall back to causal).
    """
    param = next(model.parameters())
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.tensor([[1, 2, 3, 4]], device=param.device) % vocab
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % vocab
    mask = torch.ones_like(ids)
    if with_padding:
        ids, changed = (torch.cat([t, torch.tensor([[0, 1, 2, 3]], device=param.device) % vocab]) for t in (ids, changed))
        mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]], device=param.device)
    was_training = model.training
    model.eval()
    try:
        first = _last_hidden(model, ids, mask)[0, 0]
        second = _last_hidden(model, changed, mask)[0, 0]
    finally:
        model.train(was_training)
    return not torch.allclose(first.float(), second.float(), atol=1e-6, rtol=0)


def _last_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if hidden is not None else out.hidden_states[-1]


def enable_bidirectional(model: nn.Module, check: bool = True) -> nn.Module:
    """Make a decoder attend both ways, verify it really does, and return it.

    Raises `ConfigError` if the architecture ignores `config.is_causal` (the model is restored to causal).

    >>> model = enable_bidirectional(AutoModel.from_pretrained("INSAIT-Institute/BgGPT-7B-Instruct-v0.2"))
    """
    set_causal(model, False)
    if check and not (attends_to_later_tokens(model) and attends_to_later_tokens(model, with_padding=True)):
        set_causal(model, True)
        raise ConfigError(
            "bidirectional",
            True,
            "a decoder whose attention honours config.is_causal=False (e.g. mistral, llama, qwen2, gemma3), but "
            f"model_type '{model.config.model_type}' with attn_implementation "
            f"'{model.config._attn_implementation}' still sees only earlier tokens",
            fix="pick another model or attn_implementation, or set bidirectional false",
        )
    return model
