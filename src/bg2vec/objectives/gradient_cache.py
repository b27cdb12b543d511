"""Gradient caching (GradCache, Gao et al. 2021, arXiv 2101.06983): a contrastive batch embedded in mini-batches,
so batch 128 fits where back-propagating through 256 sequences at once does not; the loss and the parameter
gradients are those of the whole batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


class RandomState:
    """The CPU and accelerator RNG states at one moment, to replay the same dropout masks later."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.accelerator = None
        if device.type != "cpu":
            self.accelerator = torch.get_device_module(device.type).get_rng_state(device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.accelerator is not None:
            torch.get_device_module(self.device.type).set_rng_state(self.accelerator, self.device)


def grad_cache_step(
    encode: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    chunks: list[dict[str, torch.Tensor]],
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One step of gradient caching, as sentence-transformers' CachedMultipleNegativesRankingLoss does it:

    1. embed each mini-batch (`chunks`) without a graph, noting the RNG state before each;
    2. compute the loss on all embeddings at once and its gradient with respect to the embeddings;
    3. embed each mini-batch again, with a graph and the *same* RNG state (so the same dropout masks), and
       back-propagate the cached gradient through it (`backward` of the surrogate sum(embedding * gradient)).

    Only one mini-batch's activations are alive at a time; the loss and parameter gradients are those of the
    whole batch. `no_sync` silences DDP's gradient all-reduce for all but the last mini-batch. Returns the loss.
    """
    states, pieces = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(chunk["input_ids"].device))
            pieces.append(encode(chunk))  # (b, H)
    embeddings = torch.cat(pieces).detach().requires_grad_()  # (2B, H)
    loss = loss_of(embeddings)
    loss.backward()
    cached = embeddings.grad.split([piece.shape[0] for piece in pieces])  # (b, H) each
    for i, (chunk, state, gradient) in enumerate(zip(chunks, states, cached)):
        state.restore()
        with no_sync() if i < len(chunks) - 1 else contextlib.nullcontext():
            backward((encode(chunk) * gradient).sum())
    return loss.detach()


def split_rows(inputs: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Mini-batches of at most `size` rows."""
    rows = inputs["input_ids"].shape[0]
    return [{name: value[start : start + size] for name, value in inputs.items()} for start in range(0, rows, size)]
