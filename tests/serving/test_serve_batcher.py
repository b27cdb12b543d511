"""The batching queue of `bg2vec serve` on its own, with a stand-in model that records each step it is given."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from bg2vec.encoding.inputs import ModelInput
from bg2vec.serving.batcher import Batcher, BatchLimits, QueueFull
from bg2vec.serving.metrics import Metrics


def item(tokens: int, tag: int) -> ModelInput:
    return ModelInput(input_ids=[tag] * tokens, text_tokens=tokens)


class StandIn:
    """A 'model' whose embedding of an input is (its first id, its length); it records every step."""

    def __init__(self) -> None:
        self.steps: list[list[int]] = []

    def __call__(self, inputs: list[ModelInput]) -> torch.Tensor:
        self.steps.append([len(i.input_ids) for i in inputs])
        return torch.tensor([[float(i.input_ids[0]), float(len(i.input_ids))] for i in inputs])  # (N, 2)


def run(coroutine):
    return asyncio.run(coroutine)


def test_requests_share_steps_cut_by_the_token_budget_and_rows_come_back_in_order():
    async def main():
        model = StandIn()
        batcher = Batcher([model], BatchLimits(max_batch_tokens=100, max_wait=0.05), Metrics())
        batcher.start()
        requests = [[item(30, 10 * r + i) for i in range(r + 1)] for r in range(5)]  # 15 inputs of 30 tokens
        jobs = [batcher.submit(inputs) for inputs in requests]
        results = [await job.future for job in jobs]
        await batcher.stop()
        return model, requests, results

    model, requests, results = run(main())
    for inputs, rows in zip(requests, results):
        assert rows[:, 0].tolist() == [float(i.input_ids[0]) for i in inputs]  # each request's own rows, in order
    assert sum(len(step) for step in model.steps) == 15
    assert all(sum(step) <= 100 for step in model.steps) and max(len(step) for step in model.steps) == 3  # shared


def test_an_input_larger_than_the_budget_still_runs_alone():
    async def main():
        model = StandIn()
        batcher = Batcher([model], BatchLimits(max_batch_tokens=10, max_wait=0.0), Metrics())
        batcher.start()
        rows = await batcher.submit([item(50, 1), item(5, 2)]).future
        await batcher.stop()
        return model, rows

    model, rows = run(main())
    assert model.steps == [[50], [5]] and rows[:, 1].tolist() == [50.0, 5.0]


def test_a_cancelled_request_never_reaches_the_model():
    async def main():
        model = StandIn()
        metrics = Metrics()
        batcher = Batcher([model], BatchLimits(max_batch_tokens=1000, max_wait=0.2), metrics)
        batcher.start()
        gone = batcher.submit([item(7, 1)])
        kept = batcher.submit([item(9, 2)])
        batcher.cancel(gone)
        rows = await kept.future
        await batcher.stop()
        return model, rows, metrics, gone

    model, rows, metrics, gone = run(main())
    assert model.steps == [[9]] and rows[:, 0].tolist() == [2.0]
    assert gone.future.cancelled() and metrics.dropped == 1 and metrics.queue_requests == 0


def test_a_full_queue_refuses_with_retry_after_but_an_empty_one_takes_any_request():
    async def main():
        batcher = Batcher([StandIn()], BatchLimits(max_wait=0.5, max_queued_requests=2, max_queued_tokens=100), Metrics())
        batcher.start()
        big = batcher.submit([item(500, 1)])  # past max_queued_tokens, but the queue was empty
        with pytest.raises(QueueFull) as refused:
            batcher.submit([item(1, 2)])  # tokens: 500 queued already
        await big.future
        first, second = batcher.submit([item(1, 3)]), batcher.submit([item(1, 4)])
        with pytest.raises(QueueFull):
            batcher.submit([item(1, 5)])  # requests: two queued
        await asyncio.gather(first.future, second.future)
        await batcher.stop()
        return refused.value, batcher.metrics

    refused, metrics = run(main())
    assert refused.retry_after >= 1 and metrics.rejected == 2


def test_a_failing_model_fails_its_requests_and_the_queue_goes_on():
    calls = []

    def flaky(inputs: list[ModelInput]) -> torch.Tensor:
        calls.append(len(inputs))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return torch.zeros(len(inputs), 2)

    async def main():
        batcher = Batcher([flaky], BatchLimits(max_wait=0.0), Metrics())
        batcher.start()
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit([item(3, 1)]).future
        rows = await batcher.submit([item(3, 2)]).future
        await batcher.stop()
        return rows

    assert run(main()).shape == (1, 2)


def test_two_devices_run_two_steps_at_once_behind_one_queue():
    both_running = threading.Barrier(2, timeout=10)  # a step waits here until the other device's step runs too
    models = [StandIn(), StandIn()]

    def on(worker: int):
        def embed(inputs: list[ModelInput]) -> torch.Tensor:
            both_running.wait()  # broken (an error) if the steps ran one after the other
            return models[worker](inputs)
        return embed

    async def main():
        metrics = Metrics()
        batcher = Batcher([on(0), on(1)], BatchLimits(max_batch_tokens=10, max_wait=0.0), metrics)
        batcher.start()
        first, second = batcher.submit([item(10, 1)]), batcher.submit([item(10, 2)])
        rows = await asyncio.gather(first.future, second.future)
        await batcher.stop()
        return rows, metrics

    (first, second), metrics = run(main())
    assert first[:, 0].tolist() == [1.0] and second[:, 0].tolist() == [2.0]
    assert [m.steps for m in models] == [[[10]], [[10]]] and dict(metrics.worker_steps) == {0: 1, 1: 1}
