"""The server's Prometheus metrics, written in the text exposition format (version 0.0.4) without a client library.

Requests by route and status, request latency, rows and tokens per forward batch, queue depth, embedded tokens
(and tokens/s over the last batch), requests dropped because their client left, and requests refused with 429.
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class Histogram:
    """Cumulative buckets, a sum and a count, under labels."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.series: dict[tuple[tuple[str, str], ...], list[float]] = {}

    def observe(self, value: float, labels: tuple[tuple[str, str], ...] = ()) -> None:
        counts = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))  # buckets..., sum, count
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-2] += value
        counts[-1] += 1

    def lines(self, name: str) -> list[str]:
        out = []
        for labels, counts in sorted(self.series.items()):
            for bound, count in zip(self.buckets, counts):
                out.append(f"{name}_bucket{_labels(labels + (('le', _number(bound)),))} {_number(count)}")
            out.append(f"{name}_bucket{_labels(labels + (('le', '+Inf'),))} {_number(counts[-1])}")
            out.append(f"{name}_sum{_labels(labels)} {counts[-2]:.6f}")
            out.append(f"{name}_count{_labels(labels)} {_number(counts[-1])}")
        return out


class Metrics:
    """Counters, gauges and histograms of one server; thread-safe (the model thread records batches)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (route, status) → count
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(ROW_BUCKETS)
        self.batch_tokens = Histogram(TOKEN_BUCKETS)
        self.worker_steps: dict[int, int] = defaultdict(int)  # model thread (device) → steps run
        self.tokens_total = 0
        self.tokens_per_second = 0.0
        self.queue_requests = 0
        self.queue_tokens = 0
        self.dropped = 0
        self.rejected = 0

    def request_done(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, str(status))] += 1
            self.latency.observe(seconds, (("route", route),))

    def batch_done(self, rows: int, tokens: int, seconds: float, worker: int = 0) -> None:
        with self._lock:
            self.worker_steps[worker] += 1
            self.batch_rows.observe(rows)
            self.batch_tokens.observe(tokens)
            self.tokens_total += tokens
            self.tokens_per_second = tokens / seconds if seconds > 0 else 0.0

    def queue(self, requests: int, tokens: int) -> None:
        with self._lock:
            self.queue_requests, self.queue_tokens = requests, tokens

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def render(self) -> str:
        """The exposition text."""
        with self._lock:
            lines = [
                "# HELP bg2vec_requests_total HTTP requests by route and status.",
                "# TYPE bg2vec_requests_total counter",
                *(f"bg2vec_requests_total{_labels((('route', r), ('status', s)))} {n}" for (r, s), n in sorted(self.requests.items())),
                "# HELP bg2vec_request_duration_seconds Request latency, received to answered.",
                "# TYPE bg2vec_request_duration_seconds histogram",
                *self.latency.lines("bg2vec_request_duration_seconds"),
                "# HELP bg2vec_batch_rows Inputs per forward batch.",
                "# TYPE bg2vec_batch_rows histogram",
                *self.batch_rows.lines("bg2vec_batch_rows"),
                "# HELP bg2vec_batch_tokens Tokens per forward batch (without padding).",
                "# TYPE bg2vec_batch_tokens histogram",
                *self.batch_tokens.lines("bg2vec_batch_tokens"),
                "# HELP bg2vec_steps_total Batching steps run, by model thread (one per device).",
                "# TYPE bg2vec_steps_total counter",
                *(f'bg2vec_steps_total{{worker="{w}"}} {n}' for w, n in sorted(self.worker_steps.items())),
                "# HELP bg2vec_embedded_tokens_total Tokens embedded.",
                "# TYPE bg2vec_embedded_tokens_total counter",
                f"bg2vec_embedded_tokens_total {self.tokens_total}",
                "# HELP bg2vec_tokens_per_second Tokens per second of the last batch.",
                "# TYPE bg2vec_tokens_per_second gauge",
                f"bg2vec_tokens_per_second {self.tokens_per_second:.3f}",
                "# HELP bg2vec_queue_requests Requests waiting or being embedded.",
                "# TYPE bg2vec_queue_requests gauge",
                f"bg2vec_queue_requests {self.queue_requests}",
                "# HELP bg2vec_queue_tokens Tokens waiting or being embedded.",
                "# TYPE bg2vec_queue_tokens gauge",
                f"bg2vec_queue_tokens {self.queue_tokens}",
                "# HELP bg2vec_dropped_requests_total Requests dropped because the client disconnected.",
                "# TYPE bg2vec_dropped_requests_total counter",
                f"bg2vec_dropped_requests_total {self.dropped}",
                "# HELP bg2vec_rejected_requests_total Requests refused with 429 (queue full).",
                "# TYPE bg2vec_rejected_requests_total counter",
                f"bg2vec_rejected_requests_total {self.rejected}",
            ]
        return "\n".join(lines) + "\n"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in pairs)
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
