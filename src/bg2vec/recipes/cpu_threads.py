"""Torch threads for a CPU run that stay fast when another process keeps a core busy.

With one thread per core, a core shared with another busy process slows every parallel region to the pace of
the thread stuck on it: on 2 cores a step took 2.7x as long (measured with a busy loop on one core; the
issue saw 6-8x with two busy processes). Many more threads than cores let the kernel's fair scheduler hand
this process most of every core instead, so `cpu_threads: "auto"` keeps one thread per core while the
machine is free and takes 4 per core while other processes use at least half a core (checked every
`CHECK_SECONDS` from /proc, on Linux). Figures: `benchmarks/busy_machine.py`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

CHECK_SECONDS = 5.0  # how often the load of other processes is looked at
BUSY_CORES = 0.5  # other processes using at least this many cores: oversubscribe
FREE_CORES = 0.1  # ... and below this, back to one thread per core (a busy loop starved to a fifth of a core stays above)
THREADS_PER_CORE_WHEN_BUSY = 4


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot, or None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _own_ticks() -> int | None:
    """User + system clock ticks of this process (all its threads)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


class OtherLoad:
    """How many cores other processes kept busy since the last call."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[int, int, int] | None:
        cpu, own = _cpu_ticks(), _own_ticks()
        return None if cpu is None or own is None else (cpu[0], cpu[1], own)

    def __call__(self) -> float | None:
        now = self._sample()
        if now is None or self._last is None:
            return None
        (busy0, total0, own0), (busy1, total1, own1) = self._last, now
        self._last = now
        total_cores = os.cpu_count() or 1
        wall = (total1 - total0) / total_cores  # ticks of one core's time
        if wall <= 0:
            return None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / wall


def threads_for(cores: int, others: float, current: int) -> int:
    """One thread per core on a free machine, `THREADS_PER_CORE_WHEN_BUSY` per core while others use a core."""
    if others >= BUSY_CORES:
        return cores * THREADS_PER_CORE_WHEN_BUSY
    if others < FREE_CORES:
        return cores
    return current  # in between: keep what we have (no flapping)


class CpuThreads(TrainerCallback):
    """Torch's thread count during a CPU run: `fixed`, or re-picked every `CHECK_SECONDS` (None: "auto").
    The count from before the run is put back at its end."""

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self.cores = torch.get_num_threads()  # torch's own choice: one per core
        self.load = OtherLoad()
        self.checked = time.monotonic()

    def check(self) -> None:
        if self.fixed is not None:
            torch.set_num_threads(self.fixed)
            return
        others = self.load()
        self.checked = time.monotonic()
        if others is None:
            return
        threads = threads_for(self.cores, others, torch.get_num_threads())
        if threads != torch.get_num_threads():
            tqdm.write(f"cpu_threads auto: other processes use {others:.1f} cores; {threads} torch threads", file=sys.stderr)
            torch.set_num_threads(threads)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.fixed is None and time.monotonic() - self.checked >= CHECK_SECONDS:
            self.check()
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        torch.set_num_threads(self.cores)
        return control


def cpu_thread_callbacks(setting: int | str) -> list[TrainerCallback]:
    """The `cpu_threads` callback of a CPU run, applied at once (after a first look at the load for "auto").
    A GPU run, or OMP_NUM_THREADS set by hand (torchrun sets it too), is left as it is."""
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return []
    callback = CpuThreads(None if setting == "auto" else int(setting))
    if callback.fixed is None:
        time.sleep(0.2)  # long enough to see what else runs
    callback.check()
    return [callback]
