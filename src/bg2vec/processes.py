"""Process topology: which process this is among those training (or encoding) together, and the few collective
steps bg2vec needs. The one place that reads torchrun's / accelerate's environment (RANK, LOCAL_RANK,
WORLD_SIZE) or asks torch.distributed who is who; everything else calls these functions.

One process (no launcher): rank 0 of 1, the main process, barriers do nothing, gathers return their input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine: the index of its GPU (0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """How many processes run together (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the process that reports (rank 0 under torchrun/accelerate, or the only one)."""
    return rank() == 0


def quiet_unless_main(log: Callable) -> Callable:
    """`log` on the main process; nothing on the others (one table and one summary per run, not one per GPU)."""
    return log if is_main_process() else (lambda *args, **kwargs: None)


def barrier() -> None:
    """Wait until every process gets here. Before the Trainer exists no process group may be set up yet:
    accelerate's `PartialState` sets one up as the Trainer will (imported only when there are several processes)."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    PartialState().wait_for_everyone()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on the main process first (it tokenizes and fills datasets' cache), then on the others
    (they read the cache), instead of every process tokenizing the corpus at once."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def training_device() -> torch.device:
    """Where this process trains or encodes: its GPU under torchrun/accelerate (LOCAL_RANK), else GPU 0, else
    the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


class _GatherWithGradient(torch.autograd.Function):
    """all_gather of (n_r, H) rows of every process r, sizes may differ; backward keeps this process's rows.

    Every process computes the loss over the whole gathered batch, so every process's loss depends on these
    rows: backward sums the incoming gradients over processes (all_reduce) and returns this process's slice.
    DDP then averages parameter gradients over the W processes, which cancels the factor W the sum brings in:
    the result is the gradient of the single-process loss on the global batch.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # local (n_r, H)
        world = dist.get_world_size()
        size = torch.tensor([local.shape[0]], device=local.device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        padded = local.new_zeros((max(counts), *local.shape[1:]))  # (n_max, H): all_gather needs one shape
        padded[: local.shape[0]] = local
        gathered = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded.contiguous())
        me = dist.get_rank()
        ctx.start, ctx.stop = sum(counts[:me]), sum(counts[: me + 1])
        return torch.cat([rows[:n] for rows, n in zip(gathered, counts)])  # (N, H), N = sum of n_r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # grad (N, H)
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad)  # sum over processes
        return grad[ctx.start : ctx.stop]  # (n_r, H)


def all_gather_with_gradient(local: torch.Tensor) -> torch.Tensor:
    """Rows of every process in rank order, (n_r, ...) → (N, ...); this process's rows keep their gradient.
    Without an initialised process group of several processes: `local` as is."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    return _GatherWithGradient.apply(local)
