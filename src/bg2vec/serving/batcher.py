"""Dynamic batching: requests queue up and are cut into forward passes by a token budget and a short wait.

Each request's inputs join one first-in-first-out queue. The scheduler waits until the queue holds
`max_batch_tokens` tokens or the oldest input has waited `max_wait` seconds, takes inputs in arrival order up to
the budget (a request may be split over several steps, and one step may mix requests), and hands them to a free
model thread, which sorts them by length into padded batches (`embed`). There is one model thread per device
(`embeds`), so with several devices several steps run at once behind the one queue. The queue is bounded: a request that
would push it past `max_queued_requests` or `max_queued_tokens` is refused with `QueueFull` (an HTTP 429 with
Retry-After), except when the queue is empty, so a single allowed request always runs. A request whose client
left is cancelled; its inputs still waiting are dropped before they reach the model.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..encoding.inputs import ModelInput
from .metrics import Metrics


class QueueFull(Exception):
    """The queue has no room; `retry_after` is a guess in whole seconds of when it will."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full, retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One request's inputs, its rows as they are embedded, and the future its route awaits."""

    inputs: list[ModelInput]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    rows: list[torch.Tensor | None] = field(default_factory=list)
    left: int = 0  # inputs not yet embedded
    waiting: int = 0  # tokens of inputs not yet taken by the scheduler
    cancelled: bool = False

    @property
    def tokens(self) -> int:
        return sum(len(item.input_ids) for item in self.inputs)


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int = 16384  # tokens per scheduler step (TEI's default)
    batch_size: int = 128  # rows per forward pass
    max_wait: float = 0.005  # seconds the oldest input may wait for others
    max_queued_requests: int = 512
    max_queued_tokens: int = 1_000_000


class Batcher:
    """The queue, its scheduler task, and the model threads it feeds (one per entry of `embeds`: a device each)."""

    def __init__(self, embeds: list[Callable[[list[ModelInput]], torch.Tensor]], limits: BatchLimits, metrics: Metrics) -> None:
        self.embeds = embeds
        self.limits = limits
        self.metrics = metrics
        self._pending: deque[tuple[Job, int]] = deque()  # (job, input index), arrival order
        self._jobs: set[int] = set()  # ids of jobs not yet answered
        self._queued_tokens = 0  # tokens of every job not yet answered
        self._waiting_tokens = 0  # tokens of the inputs in `_pending`
        self._wakeup = asyncio.Event()
        self._model_threads = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bg2vec-model-{i}") for i in range(len(embeds))]
        self._free = list(range(len(embeds)))[::-1]  # model threads without a step, next one last
        self._worker_free = asyncio.Event()
        self._steps: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._tokens_per_second = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule())

    async def stop(self) -> None:
        """Finish every queued job, then stop the scheduler and the model thread."""
        while self._jobs:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, *self._steps, return_exceptions=True)
        for thread in self._model_threads:
            thread.shutdown(wait=True)

    def submit(self, inputs: list[ModelInput]) -> Job:
        """Queue a request's inputs; its `future` gets the (N, H) embeddings in input order."""
        job = Job(inputs, asyncio.get_running_loop().create_future())
        tokens = job.tokens
        full = len(self._jobs) + 1 > self.limits.max_queued_requests or self._queued_tokens + tokens > self.limits.max_queued_tokens
        if self._jobs and full:
            self.metrics.count("rejected")
            raise QueueFull(self._retry_after())
        job.rows, job.left, job.waiting = [None] * len(inputs), len(inputs), tokens
        self._jobs.add(id(job))
        self._queued_tokens += tokens
        self._waiting_tokens += tokens
        self._pending.extend((job, i) for i in range(len(inputs)))
        self._report()
        self._wakeup.set()
        return job

    def cancel(self, job: Job) -> None:
        """Drop a job whose client left: its waiting inputs never reach the model."""
        if job.cancelled or job.future.done():
            return
        job.cancelled = True
        self._waiting_tokens -= job.waiting
        job.waiting = 0
        self.metrics.count("dropped")
        self._finish(job)
        job.future.cancel()

    async def _schedule(self) -> None:
        while True:
            self._drop_cancelled()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._free:  # every device busy: inputs keep arriving and join the next step
                self._worker_free.clear()
                await self._worker_free.wait()
                continue
            deadline = self._pending[0][0].arrived + self.limits.max_wait
            while self._waiting_tokens < self.limits.max_batch_tokens and time.monotonic() < deadline:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), max(deadline - time.monotonic(), 0))
                except asyncio.TimeoutError:
                    break
            step = self._take()
            if step:
                worker = self._free.pop()
                task = asyncio.get_running_loop().create_task(self._run_step(worker, step))
                self._steps.add(task)
                task.add_done_callback(self._steps.discard)

    async def _run_step(self, worker: int, step: list[tuple[Job, int]]) -> None:
        """One step on model thread `worker`; each job gets its rows, and its future once all are in."""
        started = time.monotonic()
        try:
            embeddings = await asyncio.get_running_loop().run_in_executor(
                self._model_threads[worker], self.embeds[worker], [job.inputs[i] for job, i in step])  # (N, H)
        except Exception as exc:  # the model failed: every job in this step fails, the server goes on
            for job in {id(job): job for job, _ in step}.values():
                if not job.future.done():
                    job.cancelled = True  # its inputs still waiting are skipped
                    self._waiting_tokens -= job.waiting
                    job.waiting = 0
                    self._finish(job)
                    job.future.set_exception(exc)
            return
        finally:
            self._free.append(worker)
            self._worker_free.set()
        seconds = time.monotonic() - started
        tokens = sum(len(job.inputs[i].input_ids) for job, i in step)
        self.metrics.batch_done(len(step), tokens, seconds, worker)
        self._tokens_per_second = tokens / seconds if seconds > 0 else self._tokens_per_second
        for row, (job, i) in enumerate(step):
            if job.future.done():
                continue
            job.rows[i] = embeddings[row]
            job.left -= 1
            if job.left == 0:
                self._finish(job)
                job.future.set_result(torch.stack(job.rows))  # (N, H)

    def _take(self) -> list[tuple[Job, int]]:
        """Inputs in arrival order up to the token budget (at least one), skipping cancelled jobs."""
        step: list[tuple[Job, int]] = []
        tokens = 0
        while self._pending:
            job, i = self._pending[0]
            if job.cancelled:
                self._pending.popleft()
                continue
            length = len(job.inputs[i].input_ids)
            if step and tokens + length > self.limits.max_batch_tokens:
                break
            step.append(self._pending.popleft())
            tokens += length
            job.waiting -= length
            self._waiting_tokens -= length
        return step

    def _drop_cancelled(self) -> None:
        while self._pending and self._pending[0][0].cancelled:
            self._pending.popleft()

    def _finish(self, job: Job) -> None:
        if id(job) in self._jobs:
            self._jobs.discard(id(job))
            self._queued_tokens -= job.tokens
            self._report()

    def _report(self) -> None:
        self.metrics.queue(len(self._jobs), self._queued_tokens)

    def _retry_after(self) -> int:
        rate = self._tokens_per_second or 1000.0
        return max(1, math.ceil(self._queued_tokens / rate))
