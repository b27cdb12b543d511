"""`read_embeddings(folder)`: the ids and one (N, W) matrix of an `encode-corpus` output, memory-mapped.

Parquet pages must be decoded, so the first call gathers the shards once into one Arrow IPC file with a single
record batch (`.cache/embeddings-<key>.arrow` in the folder; the key is a digest of the shards' checksums, so a
resumed or redone run gets a new one), filling it through a memory map shard by shard, so memory holds one
shard at a time. Every call then maps that file: the matrix is a view of the file's pages (no copy, none per
shard), which FAISS and numpy read as any array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from ..errors import DataError
from .plan import SHARD_NAME
from .provenance import file_digest
from .shards import MANIFEST_FILE, PARTIAL_SUFFIX, Manifest

CACHE_FOLDER = ".cache"


@dataclass(frozen=True)
class Embeddings:
    """An output folder read back: row i of `matrix` is the embedding of `ids[i]`, in input order."""

    ids: np.ndarray  # (N,) int64, or object (str)
    matrix: np.ndarray  # (N, W) read-only, memory-mapped: float32, float16, int8, or uint8 packed bits (binary)
    scale: np.ndarray | None  # (N,) float32 for int8 (floats = matrix * scale[:, None]); else None
    provenance: dict[str, Any]  # model, digest, pooling, instruction, dims, dtype, normalization, bg2vec version


def read_embeddings(folder: str | Path, verify: bool = False) -> Embeddings:
    """Ids and embeddings of a finished `bg2vec encode-corpus` folder; `verify` checks each shard's sha256.

    >>> emb = read_embeddings("vectors")
    >>> index = faiss.IndexFlatIP(emb.matrix.shape[1]); index.add(emb.matrix)  # doctest: +SKIP
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    if manifest is None:
        raise DataError(f"{folder}: no {MANIFEST_FILE}; is it a bg2vec encode-corpus output?")
    finished = manifest.finished
    shards = manifest.shards
    if len(finished) != len(shards):
        raise DataError(f"{folder}: {len(finished)} of {len(shards)} shards are finished; run the same "
                        "bg2vec encode-corpus command again to finish it")
    if verify:
        for index, entry in sorted(finished.items()):
            if file_digest(folder / SHARD_NAME.format(index)) != entry["sha256"]:
                raise DataError(f"{folder / SHARD_NAME.format(index)}: its sha256 is not the one in {MANIFEST_FILE}; "
                                "the file changed after it was written (delete it and run the command again)")
    key = xxhash.xxh3_64_hexdigest("".join(finished[s.index]["sha256"] for s in shards).encode())
    path = folder / CACHE_FOLDER / f"embeddings-{key}.arrow"
    if not path.is_file():
        _gather(folder, manifest, path)
    table = pa.ipc.open_file(pa.memory_map(str(path))).get_batch(0)  # one batch: every column is contiguous
    embedding = table.column("embedding")
    width = embedding.type.list_size
    matrix = embedding.values.to_numpy(zero_copy_only=True).reshape(len(embedding), width)  # (N, W)
    ids = table.column("id").to_numpy(zero_copy_only=False)
    scale = table.column("scale").to_numpy(zero_copy_only=True) if "scale" in table.schema.names else None
    return Embeddings(ids, matrix, scale, manifest.data["provenance"])


def _gather(folder: Path, manifest: Manifest, path: Path) -> None:
    """Write every shard, in order, into one single-batch Arrow IPC file at `path` (temporary name + rename)."""
    path.parent.mkdir(exist_ok=True)
    for old in path.parent.glob("embeddings-*.arrow"):
        old.unlink()  # an earlier run's
    shards = manifest.shards
    first = pq.read_schema(folder / shards[0].name)
    width = first.field("embedding").type.list_size
    value_type = first.field("embedding").type.value_type
    rows = manifest.data["rows"]
    scratch = path.with_name(f".values.{os.getpid()}{PARTIAL_SUFFIX}")
    values = np.memmap(scratch, dtype=value_type.to_pandas_dtype(), mode="w+", shape=(rows, width))  # (N, W)
    ids, scales = [], []
    try:
        for shard in shards:
            table = pq.read_table(folder / shard.name, memory_map=True)
            values[shard.start : shard.stop] = table.column("embedding").combine_chunks().values.to_numpy().reshape(-1, width)
            ids.append(table.column("id").combine_chunks())
            if "scale" in table.schema.names:
                scales.append(table.column("scale").combine_chunks())
        values.flush()
        columns = {"id": pa.concat_arrays(ids),
                   "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)}  # a view of the map
        if scales:
            columns["scale"] = pa.concat_arrays(scales)
        batch = pa.record_batch(columns)
        partial = path.with_name(path.name + f".{os.getpid()}{PARTIAL_SUFFIX}")
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        os.replace(partial, path)
    finally:
        del values
        scratch.unlink(missing_ok=True)
