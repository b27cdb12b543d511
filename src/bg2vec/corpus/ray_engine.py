"""The Ray engine: Ray Data reads the unfinished shards (a task each, through the same row reader as the local
engine), a pool of model actors embeds them (`map_batches` with a callable class: each actor loads the model
once from the resolved plan and cuts its rows into token-budget batches), and the driver gathers each shard's
rows and writes them through the same `ShardWriter`, so "exactly once" is the local engine's code.

It joins a running cluster (`--ray-address`, else `$RAY_ADDRESS`), uses the one this process has already
started, or starts a local one for the run. Open-source Ray cannot resume a dataset after its driver dies;
here the manifest does: a re-run sends only the unfinished shards.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from .job import EncodeJob, embed_rows, sentences_of
from .plan import Shard, shard_rows_of
from .progress import Progress
from .shards import ShardWriter
from .sources import Columns, InputFile, RowBatch, stored_ids

INSTALL_COMMAND = "pip install 'bg2vec-toolkit[ray]'"
ROWS_PER_CALL = 256  # rows an actor embeds per call (sorted by length and cut by the token budget inside)
CONNECT_SECONDS = 5.0


def check_ray(address: str | None) -> str | None:
    """Ray is importable and the cluster to join (`address`, else $RAY_ADDRESS; None: a local one) answers."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("engine", "ray", "an installed Ray (the bg2vec-toolkit[ray] extra)", fix=f"run: {INSTALL_COMMAND}") from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_SECONDS).close()
        except (OSError, ValueError) as exc:
            raise ConfigError("ray_address", address, "the host:port of a running Ray cluster",
                              fix=f"it does not answer ({exc}); start one (ray start --head) or leave --ray-address "
                                  "and RAY_ADDRESS unset to start a local cluster") from None
    return address


@dataclass(frozen=True)
class RayPool:
    """The model actors: how many, what each holds, and the cluster (None: $RAY_ADDRESS, else a local one)."""

    workers: int = 1
    cpus_per_worker: float = 1.0  # also its torch threads (at least 1)
    gpus_per_worker: float = 0.0
    address: str | None = None


class EmbedActor:
    """A model actor: loads the encoder once, then embeds batches of rows (Ray Data's numpy batch format)."""

    def __init__(self, job: EncodeJob, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.job = job
        self.encoder = job.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = RowBatch(None, batch["text"].tolist(), [i or None for i in batch["instruction"].tolist()])
        embeddings, tokens = embed_rows(self.encoder, self.job, sentences_of(rows, self.job.instruction))  # (n, D), (n,)
        return {"shard": batch["shard"], "position": batch["position"], "id": batch["id"], "embedding": embeddings,
                "tokens": tokens}


def read_shard(record: dict[str, np.ndarray], files: list[InputFile], columns: Columns, id_type: str) -> dict[str, np.ndarray]:
    """One shard's rows (a Ray Data read task): shard index, position in the shard, id, text, instruction."""
    shard = Shard(**{key: int(value[0]) for key, value in record.items()})
    ids, texts, instructions = [], [], []
    for _, batch in shard_rows_of(files, columns, [shard]):
        ids.append(stored_ids(batch, shard.start + len(texts), id_type))
        texts.extend(batch.texts)
        instructions.extend(batch.instructions or [None] * len(batch))
    return {"shard": np.full(len(texts), shard.index, dtype=np.int64), "position": np.arange(len(texts), dtype=np.int64),
            "id": pa.concat_arrays(ids).to_numpy(zero_copy_only=False), "text": np.array(texts, dtype=object),
            "instruction": np.array([i or "" for i in instructions], dtype=object)}


def run_ray(files: list[InputFile], columns: Columns, id_type: str, shards: list[Shard], job: EncodeJob,
            writer: ShardWriter, progress: Progress, pool: RayPool) -> None:
    """Embed and write every shard of `shards` on a Ray cluster."""
    import ray

    address = check_ray(pool.address)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # shards complete in order: the driver holds few at once
        context.enable_progress_bars = False
        dataset = ray.data.from_items([s.record() for s in shards], override_num_blocks=len(shards))
        dataset = dataset.map_batches(read_shard, batch_size=1, batch_format="numpy", num_cpus=0,
                                      fn_kwargs={"files": files, "columns": columns, "id_type": id_type})
        dataset = dataset.map_batches(
            EmbedActor, fn_constructor_args=(job, max(1, int(pool.cpus_per_worker))), batch_size=ROWS_PER_CALL,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=pool.workers), num_cpus=pool.cpus_per_worker,
            num_gpus=pool.gpus_per_worker,
        )
        progress.start()
        _write_as_they_come(dataset, {s.index: s for s in shards}, writer, progress)
    finally:
        if started_here:
            ray.shutdown()


def _write_as_they_come(dataset: Any, shards: dict[int, Shard], writer: ShardWriter, progress: Progress) -> None:
    """Gather each shard's rows from the actors' results; write a shard as soon as all its rows are in."""
    parts: dict[int, list[dict[str, np.ndarray]]] = {}
    counts: dict[int, int] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        progress.add(len(batch["shard"]), int(batch["tokens"].sum()))
        for index in np.unique(batch["shard"]).tolist():
            chosen = batch["shard"] == index
            parts.setdefault(index, []).append({key: value[chosen] for key, value in batch.items()})
            counts[index] = counts.get(index, 0) + int(chosen.sum())
            if counts[index] == shards[index].rows:
                got = parts.pop(index)
                order = np.argsort(np.concatenate([p["position"] for p in got]), kind="stable")
                ids = np.concatenate([p["id"] for p in got])[order]
                embeddings = np.concatenate([p["embedding"] for p in got])[order]  # (rows, D)
                writer.write(shards[index], pa.array(ids.tolist() if ids.dtype == object else ids), embeddings)
                progress.shard_finished()
