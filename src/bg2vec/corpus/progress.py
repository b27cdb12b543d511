"""Progress of a corpus run as plain lines (they read the same in a terminal, a log file and a Ray job's
output): rows/s, tokens/s, shards done and left, ETA; and the final summary."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

REPORT_SECONDS = 10.0  # at most one line this often (and one per finished shard while the run is young)


@dataclass
class Progress:
    """Counts rows, tokens and shards of this run (shards finished earlier are not counted as work)."""

    rows_total: int  # rows this run encodes
    shards_total: int  # shards of the plan
    shards_done: int  # finished before this run
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    rows: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_result: tuple[float, int] | None = None  # (when, rows by then): rates after it leave start-up out
    _last: float = 0.0

    def start(self) -> None:
        """Count time from now (once the model is loaded), so rates are the encoding's own."""
        self.started = time.perf_counter()

    def add(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        if self.first_result is None:
            self.first_result = (time.perf_counter(), self.rows)

    def shard_finished(self) -> None:
        self.shards_done += 1
        now = time.perf_counter()
        if now - self._last >= REPORT_SECONDS or self.shards_done == self.shards_total or now - self.started < REPORT_SECONDS:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def steady_rate(self) -> float | None:
        """Rows/s after the first embedded batch (model loading, actor start-up and warm-up left out); None
        before a second batch."""
        if self.first_result is None or self.rows == self.first_result[1]:
            return None
        return (self.rows - self.first_result[1]) / max(time.perf_counter() - self.first_result[0], 1e-9)

    def line(self) -> str:
        seconds = max(self.seconds, 1e-9)
        rate = self.rows / seconds
        left = self.rows_total - self.rows
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        return (f"shards {self.shards_done}/{self.shards_total} ({self.shards_total - self.shards_done} left) | "
                f"rows {self.rows:,}/{self.rows_total:,} | {rate:,.0f} rows/s | {self.tokens / seconds:,.0f} tokens/s | ETA {eta}")
