"""Where the vectors came from: a digest of the model's files, and what the manifest and every shard record.

The digest covers every file of every folder the model plan loads (base weights, tokenizer, adapters): an
xxh3-128 of each file's bytes, combined in path order. Hashing a 7B model's weights takes seconds, so each
file's digest is kept with its size and modification time (in the manifest) and reused while those match:
a re-run that finds everything done reads no weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import xxhash

from ..models.layouts import ModelPlan

READ_BYTES = 8 << 20


def model_folders(plan: ModelPlan) -> list[Path]:
    """The local folders `plan` loads from (a Hub id: its snapshot in the Hugging Face cache), each once."""
    folders: list[Path] = []
    for reference in (plan.weights, plan.tokenizer, *plan.adapters):
        folder = Path(reference).expanduser()
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(reference, local_files_only=True))
        folder = folder.resolve()
        if folder not in folders:
            folders.append(folder)
    return folders


def model_digest(plan: ModelPlan, known: dict[str, list] | None = None) -> tuple[str, dict[str, list]]:
    """(digest of the model's files, {file: [size, mtime_ns, digest]}); `known` entries are reused where a
    file's size and modification time still match."""
    known = known or {}
    files: dict[str, list] = {}
    combined = xxhash.xxh3_128()
    for folder in model_folders(plan):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")):
            stat = path.stat()
            key = str(path)
            cached = known.get(key)
            if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
                digest = cached[2]
            else:
                digest = file_digest(path, xxhash.xxh3_128())
            files[key] = [stat.st_size, stat.st_mtime_ns, digest]
            combined.update(f"{path.relative_to(folder)}\0{digest}\0".encode())
    return combined.hexdigest(), files


def file_digest(path: Path, hasher: Any = None) -> str:
    """The hex digest of a file's bytes (sha256 unless another hashlib-like `hasher` is given)."""
    hasher = hasher if hasher is not None else hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()
