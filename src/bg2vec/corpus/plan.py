"""The shard plan: the corpus's rows cut into fixed, numbered ranges, the same every time for the same inputs.

Shard k holds rows [k * shard_rows, (k + 1) * shard_rows) of the inputs read in order (the last one fewer), and
says where its first row is (which file, which row of it), so an engine can start reading there. The plan is a
function of the inputs' row counts and `shard_rows` alone: a re-run computes the same shards, and each shard's
output is written once, under its own name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .sources import Columns, InputFile, RowBatch, iter_rows

SHARD_NAME = "shard-{:05d}.parquet"


@dataclass(frozen=True)
class Shard:
    """Rows [start, stop) of the corpus; the first is row `first_row` of input `first_input`."""

    index: int
    start: int
    stop: int
    first_input: int
    first_row: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return SHARD_NAME.format(self.index)

    def record(self) -> dict[str, Any]:
        return asdict(self)


def plan_shards(rows_per_file: list[int], shard_rows: int) -> list[Shard]:
    """Shards of `shard_rows` rows over files holding `rows_per_file` rows, in input order.

    >>> [(s.start, s.stop, s.first_input, s.first_row) for s in plan_shards([3, 4], 5)]
    [(0, 5, 0, 0), (5, 7, 1, 2)]
    """
    total = sum(rows_per_file)
    shards = []
    file, file_start = 0, 0  # the file holding row `start`, and that file's first row in the corpus
    for index, start in enumerate(range(0, total, shard_rows)):
        while start >= file_start + rows_per_file[file]:
            file_start += rows_per_file[file]
            file += 1
        shards.append(Shard(index, start, min(start + shard_rows, total), file, start - file_start))
    return shards


def shard_rows_of(files: list[InputFile], columns: Columns, shards: list[Shard]) -> Iterator[tuple[Shard, RowBatch]]:
    """(shard, rows) batches of consecutive `shards` (in order, none skipped), read from the first one's start."""
    if not shards:
        return
    pending = iter(shards)
    shard = next(pending)
    filled = 0
    skip = shard.first_row
    for file in files[shard.first_input :]:
        for batch in iter_rows(file, columns, skip):
            while len(batch):
                take = batch.slice(0, shard.rows - filled)
                yield shard, take
                filled += len(take)
                batch = batch.slice(len(take))
                if filled == shard.rows:
                    following = next(pending, None)
                    if following is None:
                        return
                    if following.start != shard.stop:
                        raise ValueError("shard_rows_of reads consecutive shards only")
                    shard, filled = following, 0
        skip = 0
