"""LoRA on a decoder (Hu et al. 2021, arXiv 2106.09685): which modules it wraps per architecture, and the
summary of what trains. The inner decoder is wrapped, never the LM head: llm2vec's key layout."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from ..errors import ConfigError
from .adapters import quiet_renames
from .architectures import ARCHITECTURES, STANDARD_LORA_TARGETS


def lora_targets(model: nn.Module, requested: list[str] | None) -> list[str]:
    """The requested LoRA targets, or the architecture's defaults, keeping only names the model has."""
    model_type = model.config.model_type
    known = ARCHITECTURES.get(model_type)
    wanted = requested or list(known.lora_target_modules if known else STANDARD_LORA_TARGETS)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [name for name in wanted if name in present]
    if not found:
        raise ConfigError("lora_target_modules", wanted, f"module names present in this {model_type} model")
    return found


def add_lora(decoder: PreTrainedModel, r: int, alpha: int, dropout: float, targets: list[str] | None = None, lean: bool = True):
    """Wrap the inner decoder (not the LM head) in a fresh LoRA adapter: llm2vec's key layout. `lean`: the
    projections, MLPs and attention keep less for the backward pass (`models/lean_activations.py`; peft's files)."""
    from peft import LoraConfig, get_peft_model

    from .lean_activations import use_lean_activations

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(decoder, targets),
        bias="none",
        task_type=None,
    )
    with quiet_renames():
        model = get_peft_model(decoder, config)
    if lean:
        use_lean_activations(model)
    return model


def trainable_parameters_line(model: nn.Module) -> str:
    """peft's summary line: 'trainable params: N || all params: M || trainable%: P'."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
