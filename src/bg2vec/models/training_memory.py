"""Switches on a decoder about to train that trade compute for memory or swap in faster kernels; what is
computed stays the same."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from ..errors import ConfigError


def apply_liger_kernels(model: nn.Module) -> None:
    """Swap in Liger's fused RMSNorm, SwiGLU and RoPE kernels (its cross-entropy stays off: MNTP has its own)."""
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        raise ConfigError("liger_kernel", True, "the liger-kernel package installed", fix="pip install liger-kernel, or set it false") from None
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)


def enable_checkpointing(decoder: PreTrainedModel) -> None:
    """Recompute each layer's activations in the backward pass (non-reentrant: frozen embeddings need no hook)."""
    decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
