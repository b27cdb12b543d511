"""Encoding on several devices at once: one worker process per device (`encode(device=[...])`).

`DevicePool` starts a process per device once; each takes the model from shared CPU memory (no copy on the
CPU), moves it to its device and then embeds batches from a common queue, so a fast device takes more of them.
The pool lives until `close()` and serves any number of `encode` calls; a model too large for one device is
instead loaded sharded (`device_map="auto"`) and runs in this process.
"""

from __future__ import annotations

import os
import queue
import signal
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .embedding import embed_features

POLL_SECONDS = 1.0  # how often a waiting pool checks that its workers are alive


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one ("cuda" is the current CUDA device)."""
    if a.type != b.type:
        return False
    if a.type == "cpu" or a.index == b.index:
        return True
    current = torch.get_device_module(a.type).current_device
    return (a.index if a.index is not None else current()) == (b.index if b.index is not None else current())


@contextmanager
def without_capturing_hooks(model: nn.Module) -> Iterator[None]:
    """The model without transformers' output-capturing forward hooks (local functions, which cannot be
    pickled), for sending it to a process; transformers installs them again there on the first forward."""
    saved: dict[nn.Module, dict[int, Any]] = {}
    flagged = [m for m in model.modules() if getattr(m, "_output_capturing_hooks_installed", False)]
    for module in model.modules():
        hooks = module._forward_hooks
        if any(getattr(h, "__qualname__", "").endswith("output_capturing_hook") for h in hooks.values()):
            saved[module] = dict(hooks)
            for key in [k for k, h in hooks.items() if getattr(h, "__qualname__", "").endswith("output_capturing_hook")]:
                del hooks[key]
    for module in flagged:
        module._output_capturing_hooks_installed = False
    try:
        yield
    finally:
        for module, hooks in saved.items():  # the same hooks in the same order
            module._forward_hooks.clear()
            module._forward_hooks.update(hooks)
        for module in flagged:
            module._output_capturing_hooks_installed = True


class WorkerError(RuntimeError):
    """A worker process failed; the message is the worker's."""


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes start, so they start ignoring it (an ignored signal stays ignored
    across exec, and Python then installs no KeyboardInterrupt handler): Ctrl-C reaches the whole process group,
    and only the parent should answer it, with one line."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _work(model: nn.Module, pooling_mode: str, bos_token_id: int | None, device: str, threads: int,
          tasks: Any, results: Any) -> None:
    """A worker's loop: take (index, features), put (index, embeddings, None) or (index, None, error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to answer (see sigint_ignored)
    try:
        torch.set_num_threads(threads)
        model = model.to(device).eval()
        results.put((-1, None, None))  # ready
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((-1, None, (type(error).__name__, str(error))))
        return
    while (task := tasks.get()) is not None:
        index, features = task
        try:
            with torch.inference_mode():
                embeddings = embed_features(model, {k: v.to(device) for k, v in features.items()}, pooling_mode, bos_token_id)
            results.put((index, embeddings.cpu(), None))
        except BaseException as error:  # noqa: BLE001
            results.put((index, None, (type(error).__name__, str(error))))


class DevicePool:
    """One worker process per device, each with the model; `embed` runs batches on all of them at once.

    The model is moved to shared CPU memory for the workers to take; they hold it as it was when the pool
    started. `close()` stops them and puts the model back.

    >>> with DevicePool(encoder.model, "mean", tokenizer.bos_token_id, ["cuda:0", "cuda:1"]) as devices:
    ...     for index, embeddings in devices.embed(batches): ...
    """

    def __init__(self, model: nn.Module, pooling_mode: str, bos_token_id: int | None, devices: Sequence[str | torch.device]) -> None:
        self.devices = [str(torch.device(d)) for d in devices]
        self.model = model
        self.home = next(model.parameters()).device
        context = torch.multiprocessing.get_context("spawn")
        self.tasks = context.Queue()
        self.results = context.Queue()
        cpu_workers = sum(torch.device(d).type == "cpu" for d in self.devices)
        threads = max(1, (os.cpu_count() or 1) // max(cpu_workers, 1))  # CPU workers split the cores
        model.to("cpu").share_memory()
        self.workers = [
            context.Process(target=_work, args=(model, pooling_mode, bos_token_id, d, threads, self.tasks, self.results), daemon=True)
            for d in self.devices
        ]
        with without_capturing_hooks(model), sigint_ignored():  # spawn pickles the model as each process starts
            for worker in self.workers:
                worker.start()
        self._finalizer = weakref.finalize(self, DevicePool._stop, self.workers, self.tasks)  # at exit at the latest
        try:
            for _ in self.workers:
                self._result()
        except WorkerError as error:
            died = any(w.exitcode == 1 for w in self.workers)  # a worker that could not even start (spawn)
            self.close()
            if not died:
                raise
            raise WorkerError(f"{error}; a script that encodes on several devices must start its work under "
                              "`if __name__ == \"__main__\":`, since each worker imports the script") from None
        except BaseException:
            self.close()
            raise

    def embed(self, batches: Iterator[tuple[int, dict[str, torch.Tensor]]]) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, (B, H) embeddings) for each (index, features) of `batches`, in the order they finish."""
        self._check_alive()
        in_flight = 0
        for index, features in batches:
            self.tasks.put((index, features))
            in_flight += 1
            while in_flight >= 2 * len(self.workers):  # keep every worker busy without queueing everything
                yield self._result()
                in_flight -= 1
        for _ in range(in_flight):
            yield self._result()

    def _result(self) -> tuple[int, torch.Tensor]:
        while True:
            try:
                index, embeddings, error = self.results.get(timeout=POLL_SECONDS)
                break
            except queue.Empty:
                self._check_alive()
        if error is not None:
            kind, message = error
            if kind == "OutOfMemoryError":
                raise torch.OutOfMemoryError(message)
            raise WorkerError(f"{kind}: {message}")
        return index, embeddings

    def _check_alive(self) -> None:
        dead = [d for d, w in zip(self.devices, self.workers) if not w.is_alive()]
        if dead:
            raise WorkerError(f"the encode worker on {', '.join(dead)} stopped (exit status "
                              f"{', '.join(str(w.exitcode) for w in self.workers if not w.is_alive())})")

    def close(self) -> None:
        """Stop the workers and move the model back to the device it came from."""
        if self._finalizer.alive:
            self._finalizer()
            self.model.to(self.home)

    @staticmethod
    def _stop(workers: list, tasks: Any) -> None:
        for worker in workers:
            if worker.is_alive():
                tasks.put(None)
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def checked_device(name: str | torch.device) -> torch.device:
    """`name` as a device this machine has, or a `ConfigError` naming the `device` setting (never torch's
    "Invalid device string" or "Torch not compiled with CUDA enabled" tracebacks)."""
    from ..errors import ConfigError

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError("device", str(name), "cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", str(name), "a device this machine has",
                              fix="this torch has no CUDA or sees no GPU; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError("device", str(name), f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device", str(name), "a device this machine has", fix="mps is not available here; use cpu")
    return device
