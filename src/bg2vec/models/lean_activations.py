"""Training a LoRA decoder with less kept for the backward pass: peft's outputs and gradients for the same masks.

- **LoRA projections.** peft's `lora.Linear` computes `base(x) + B(A(dropout(x))) * scaling`, and autograd keeps,
  for every adapted projection, the dropped copy of its input and the dropout mask; q/k/v (and gate/up) read the
  same input, so a layer keeps 7 such pairs. `_LoRABranch` keeps the input itself (one tensor for q/k/v) and the
  rank-r activation; the dropout mask is drawn from a seed and drawn again in the backward pass
  (`models/dropout_masks.py`: 16 random bits per element, 8x faster than torch's `bernoulli_` on a CPU). The
  sum runs as one `addmm`, with LoRA's scaling and dropout's 1 / (1 - p) applied at rank r. Given the same masks,
  outputs and gradients are peft's (tested against peft's own forward).
- **Gated MLPs** (`down(act(gate(x)) * up(x))`, every supported family). Autograd keeps gate(x) for the
  activation, act(gate(x)) and up(x) for the product, and the product again for down's LoRA. `_GatedProduct`
  keeps gate(x) and up(x) only; the activation and the product are recomputed when the backward pass needs them.
- **Attention with dropout** on a CPU: `models/lean_attention.py`.

On the benchmark's SimCSE step (`benchmarks/vs_llm2vec.py`) autograd keeps 131 MiB instead of 370, and the step
is faster than peft's and sdpa's (masks drawn 8x faster, attention in cache-sized blocks); `lean_activations:
false` turns all three off.
"""

from __future__ import annotations

import types
from typing import Any

from torch.autograd.graph import saved_tensors_hooks

import torch
import torch.nn.functional as F
from torch import nn

from .dropout_masks import keep_mask, keep_scale, new_seed


class _LoRABranch(torch.autograd.Function):
    """`result + B(A(dropout(x))) * scaling` (one addmm), saving x, the mask's seed and the rank-r activation."""

    @staticmethod
    def forward(ctx, x, result, weight_a, weight_b, scaling, p, dtype):  # x (..., in), result (..., out), A (r, in), B (out, r)
        cast = x.to(dtype)
        seed = new_seed() if p > 0 else None
        dropped = cast * keep_mask(cast.shape, p, seed, cast.device, dtype) if p > 0 else cast  # (..., in)
        factor = scaling * keep_scale(p) if p > 0 else scaling  # LoRA's scaling and dropout's 1 / (1 - p), at rank r
        low = F.linear(dropped, weight_a.to(dtype)).mul_(factor)  # (..., r)
        if result.dtype == dtype and result.is_contiguous():  # added into the base's output, which no one keeps
            result.view(-1, result.shape[-1]).addmm_(low.flatten(0, -2), weight_b.to(dtype).T)
            ctx.mark_dirty(result)
            out = result
        else:  # a base in another dtype: peft's sum, in the promoted dtype
            out = result + F.linear(low, weight_b.to(dtype))
        ctx.save_for_backward(x, low, weight_a, weight_b)
        ctx.factor, ctx.p, ctx.seed, ctx.dtype, ctx.result_dtype = factor, p, seed, dtype, result.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # (..., out)
        x, low, weight_a, weight_b = ctx.saved_tensors
        dtype, p = ctx.dtype, ctx.p
        keep = keep_mask(x.shape, p, ctx.seed, x.device, dtype).flatten(0, -2) if p > 0 else None  # (N, in), drawn again
        grad = grad_out.to(dtype).flatten(0, -2)  # (N, out)
        grad_b = grad.T @ low.flatten(0, -2) if weight_b.requires_grad else None  # (out, r)
        grad_low = (grad @ weight_b.to(dtype)).mul_(ctx.factor)  # (N, r)
        grad_a = grad_x = None
        if weight_a.requires_grad:
            inputs = x.to(dtype).flatten(0, -2)  # (N, in)
            grad_a = grad_low.T @ (inputs * keep if keep is not None else inputs)  # (r, in); the dropped input, recomputed
        if ctx.needs_input_grad[0]:
            grad_x = grad_low @ weight_a.to(dtype)  # (N, in)
            if keep is not None:
                grad_x = grad_x.mul_(keep)
            grad_x = grad_x.reshape(x.shape).to(x.dtype)
        return (
            grad_x,
            grad_out.to(ctx.result_dtype) if ctx.needs_input_grad[1] else None,
            grad_a.to(weight_a.dtype) if grad_a is not None else None,
            grad_b.to(weight_b.dtype) if grad_b is not None else None,
            None, None, None,
        )


def _lean_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """peft's `lora.Linear.forward` for plain LoRA adapters, through `_LoRABranch`; anything else is peft's."""
    if self.disable_adapters or self.merged or self.lora_variant or args or kwargs:  # adapter_names, variants...
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    result_dtype = result.dtype
    for name in self.active_adapters:
        if name not in self.lora_A:
            continue
        weight_a, weight_b = self.lora_A[name].weight, self.lora_B[name].weight
        dropout = self.lora_dropout[name]
        p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else weight_a.dtype
        result = _LoRABranch.apply(x, result, weight_a, weight_b, self.scaling[name], p, dtype)
    return result.to(result_dtype)


class _GatedProduct(torch.autograd.Function):
    """`act(gate) * up`, saving gate and up only; act and its derivative are recomputed in the backward pass."""

    @staticmethod
    def forward(ctx, gate, up, act):  # gate, up (..., I)
        ctx.save_for_backward(gate, up)
        ctx.act = act
        return act(gate) * up

    @staticmethod
    def backward(ctx, grad):  # (..., I)
        gate, up = ctx.saved_tensors
        if _is_silu(ctx.act):  # SwiGLU (Llama, Mistral, Qwen2): torch's own SiLU derivative
            return torch.ops.aten.silu_backward(grad * up, gate), grad * F.silu(gate), None
        with torch.enable_grad():  # any other activation (Gemma's tanh GELU): its derivative by autograd
            leaf = gate.detach().requires_grad_(True)
            activated = ctx.act(leaf)
            (grad_gate,) = torch.autograd.grad(activated, leaf, grad * up)
        return grad_gate, grad * activated.detach(), None


def _is_silu(act: Any) -> bool:
    return isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"


class _Product:
    """What backward hooks keep instead of the product `act(gate) * up`: its factors, to recompute it."""

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, act: Any) -> None:
        self.gate, self.up, self.act = gate, up, act


def _lean_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' gated MLP, `down(act(gate(x)) * up(x))`, keeping gate(x) and up(x) only for the backward."""
    if not torch.is_grad_enabled():
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
    gate, up = self.gate_proj(x), self.up_proj(x)  # (..., I) each
    product = _GatedProduct.apply(gate, up, self.act_fn)  # (..., I)

    def pack(tensor: torch.Tensor) -> Any:
        same = tensor.data_ptr() == product.data_ptr() and tensor.shape == product.shape
        return _Product(gate, up, self.act_fn) if same else tensor

    def unpack(saved: Any) -> torch.Tensor:
        if isinstance(saved, _Product):
            with torch.no_grad():
                return saved.act(saved.gate) * saved.up
        return saved

    with saved_tensors_hooks(pack, unpack):  # down's LoRA keeps the factors, not the product
        return self.down_proj(product)


def use_lean_mlp(model: nn.Module) -> int:
    """Give every gated MLP of `model` (gate_proj, up_proj, down_proj, act_fn) the lean forward; returns how many.
    Left alone: MLPs whose forward was replaced already (Liger) and models with gradient checkpointing, which
    recompute every activation anyway."""
    if getattr(model, "is_activation_checkpointing", False):
        return 0
    count = 0
    for module in model.modules():
        if all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")) and "forward" not in vars(module):
            module.forward = types.MethodType(_lean_mlp_forward, module)
            count += 1
    return count


def use_lean_activations(model: nn.Module) -> tuple[int, int, bool]:
    """All three: the lean LoRA projections, gated MLPs and attention (`models/lean_attention.py`); returns
    (projections, MLPs, whether the attention is lean)."""
    from .lean_attention import use_lean_attention

    return use_lean_lora(model), use_lean_mlp(model), use_lean_attention(model)


def use_lean_lora(model: nn.Module) -> int:
    """Give every peft LoRA Linear of `model` the lean forward; returns how many. Saving, merging and loading
    are peft's, untouched."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if isinstance(module, Linear) and type(module).forward is Linear.forward:
            module.forward = types.MethodType(_lean_forward, module)
            count += 1
    return count
