"""The local engine: this process reads the rows once, in order, embeds them (on one device, or a worker process
per device with `device=[...]`, as `Bg2Vec.encode` does), and writes each shard as soon as its last row is in."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .job import EncodeJob, embed_rows, sentences_of
from .plan import Shard, shard_rows_of
from .progress import Progress
from .shards import ShardWriter
from .sources import Columns, InputFile, stored_ids


def run_local(files: list[InputFile], columns: Columns, id_type: str, shards: list[Shard], job: EncodeJob,
              writer: ShardWriter, progress: Progress, device: Any = None) -> None:
    """Embed and write every shard of `shards` (the unfinished ones, in plan order)."""
    encoder = job.load()
    if isinstance(device, str):  # one device: the model goes there once; a list: a worker process each
        encoder.to(device)
        device = None
    progress.start()
    try:
        for run in consecutive_runs(shards):
            ids: list[pa.Array] = []
            vectors: list[np.ndarray] = []
            filled = 0
            for shard, batch in shard_rows_of(files, columns, run):
                embeddings, tokens = embed_rows(encoder, job, sentences_of(batch, job.instruction), device)  # (n, D)
                ids.append(stored_ids(batch, shard.start + filled, id_type))
                vectors.append(embeddings)
                filled += len(batch)
                progress.add(len(batch), int(tokens.sum()))
                if filled == shard.rows:
                    writer.write(shard, pa.concat_arrays(ids), np.concatenate(vectors))  # (rows, D)
                    progress.shard_finished()
                    ids, vectors, filled = [], [], 0
    finally:
        encoder.stop_pool()


def consecutive_runs(shards: list[Shard]) -> list[list[Shard]]:
    """`shards` cut where one does not start where the previous stopped (a finished shard between them)."""
    runs: list[list[Shard]] = []
    for shard in shards:
        if runs and runs[-1][-1].stop == shard.start:
            runs[-1].append(shard)
        else:
            runs.append([shard])
    return runs
