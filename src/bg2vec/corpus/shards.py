"""The shard writer and the manifest: the one place that makes corpus encoding exactly once.

A shard is written to a temporary name, flushed to disk and renamed to `shard-NNNNN.parquet`; only then is it
recorded in `manifest.json` (rows, bytes, sha256), which is itself replaced whole (temporary name + rename).
A shard counts as done only once recorded, so whenever a run is killed, the folder holds recorded shards
(complete, never to be written again) and perhaps a temporary file or one renamed but unrecorded shard: `open`
removes both, and the shard is written again, the same rows in the same order. Both engines write through
`ShardWriter`, in the driver process only.

Every shard's Parquet key-value metadata (key `bg2vec`) holds the run's provenance and the shard's place.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..errors import ConfigError
from .plan import SHARD_NAME, Shard
from .provenance import file_digest
from .vectors import to_columns

MANIFEST_FILE = "manifest.json"
MANIFEST_KIND = "bg2vec-corpus-embeddings"
FORMAT_VERSION = 1
METADATA_KEY = b"bg2vec"
PARTIAL_SUFFIX = ".partial"


class Manifest:
    """`manifest.json` of an output folder: settings, provenance, inputs, the shard plan, finished shards."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        self.folder, self.data = folder, data

    @classmethod
    def new(cls, folder: Path, settings: dict[str, Any], provenance: dict[str, Any], inputs: list[dict[str, Any]],
            shards: list[Shard], id_type: str, model_files: dict[str, list]) -> Manifest:
        data = {
            "kind": MANIFEST_KIND,
            "format_version": FORMAT_VERSION,
            "bg2vec_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": settings,
            "provenance": provenance,
            "inputs": inputs,
            "rows": sum(s.rows for s in shards),
            "id_type": id_type,
            "shards": [s.record() for s in shards],
            "finished": {},
            "model_files": model_files,
        }
        return cls(folder, data)

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The folder's manifest, or None if it has none; a foreign or unreadable one is refused."""
        path = folder / MANIFEST_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("output", str(folder), f"a folder whose {MANIFEST_FILE} can be read", fix=f"{exc}; pick another folder") from None
        if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
            raise ConfigError("output", str(folder), "a new folder or a bg2vec corpus output",
                              fix=f"its {MANIFEST_FILE} was not written by bg2vec encode-corpus; pick another folder")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ConfigError("output", str(folder), f"a manifest of format {FORMAT_VERSION} or older",
                              fix=f"bg2vec {data.get('bg2vec_version')} wrote it: install that version or newer to resume or read it")
        return cls(folder, data)

    @property
    def shards(self) -> list[Shard]:
        return [Shard(**record) for record in self.data["shards"]]

    @property
    def finished(self) -> dict[int, dict[str, Any]]:
        return {int(index): record for index, record in self.data["finished"].items()}

    def record(self, shard: Shard, entry: dict[str, Any]) -> None:
        self.data["finished"][str(shard.index)] = entry
        self.save()

    def save(self) -> None:
        partial = self.folder / (MANIFEST_FILE + PARTIAL_SUFFIX)
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.folder / MANIFEST_FILE)


def tidy(manifest: Manifest) -> list[int]:
    """Remove temporary files and unrecorded shards; forget recorded shards whose file is gone or has another
    size (they are written again). Returns the indices forgotten."""
    folder = manifest.folder
    for path in folder.glob("*" + PARTIAL_SUFFIX):
        path.unlink()
    for path in folder.glob(".*" + PARTIAL_SUFFIX):
        path.unlink()
    finished = manifest.finished
    recorded = {SHARD_NAME.format(index) for index in finished}
    for path in folder.glob("shard-*.parquet"):
        if path.name not in recorded:
            path.unlink()
    forgotten = [i for i, entry in finished.items()
                 if not (folder / SHARD_NAME.format(i)).is_file() or (folder / SHARD_NAME.format(i)).stat().st_size != entry["bytes"]]
    if forgotten:
        for index in forgotten:
            del manifest.data["finished"][str(index)]
        manifest.save()
    return forgotten


class ShardWriter:
    """Writes a shard's ids and (N, D) float32 embeddings, stored as the run's dtype, then records it."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.dtype = manifest.data["settings"]["dtype"]
        self.id_type = pa.int64() if manifest.data["id_type"] == "int64" else pa.string()

    def write(self, shard: Shard, ids: pa.Array, embeddings: np.ndarray) -> dict[str, Any]:
        """Write and record `shard`; returns its manifest entry (rows, bytes, sha256)."""
        if len(ids) != shard.rows or len(embeddings) != shard.rows:
            raise RuntimeError(f"shard {shard.index} got {len(ids)} ids and {len(embeddings)} embeddings for {shard.rows} rows")
        columns = {"id": ids.cast(self.id_type), **to_columns(embeddings, self.dtype)}
        metadata = {"provenance": self.manifest.data["provenance"], "shard": shard.record()}
        table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
        final = self.manifest.folder / shard.name
        partial = self.manifest.folder / f".{shard.name}.{os.getpid()}{PARTIAL_SUFFIX}"
        with open(partial, "wb") as handle:
            pq.write_table(table, handle, compression="none")  # embeddings hardly compress; reading stays cheap
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
        entry = {"rows": shard.rows, "bytes": final.stat().st_size, "sha256": file_digest(final)}
        self.manifest.record(shard, entry)
        return entry
