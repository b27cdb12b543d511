"""`bg2vec encode`: texts from a file to an embedding file, chunk by chunk, so the texts never sit in memory
all at once (a million lines take memory for one chunk, plus the output file).

Input: `.txt`, one text per line (every line is a row, empty ones too), or `.jsonl`, one row per non-blank
line: a JSON string, an `[instruction, text]` pair, or an object with "text" and optionally "instruction".
Output: `.npy` (float32 (N, H), written through a memory map) or `.parquet` (one `embedding` column of
fixed-size float32 lists, one row group per chunk). Row i of the output is row i of the input. The file
appears under its name only once complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .encoder import Bg2Vec
from ..data.text_files import TextStream, lines_with_ends, read_json_lines
from ..errors import ConfigError, DataError
from ..paths import check_apart, check_creatable, disk_writes

INPUT_SUFFIXES = (".txt", ".jsonl")
OUTPUT_SUFFIXES = (".npy", ".parquet")


def check_paths(
    input_path: str | Path, output_path: str | Path, models: dict[str, str | None] | None = None, overwrite: bool = False
) -> tuple[Path, Path]:
    """Both paths checked before any model is loaded; the output is apart from the input and `models`, and new
    unless `overwrite`."""
    source, target = Path(input_path), Path(output_path)
    if source.suffix not in INPUT_SUFFIXES:
        raise ConfigError("--input", str(source), "a file ending in " + " or ".join(INPUT_SUFFIXES))
    if not source.is_file():
        raise ConfigError("--input", str(source), "an existing file", fix=f"check the path (relative to {os.getcwd()})")
    if target.suffix not in OUTPUT_SUFFIXES:
        raise ConfigError("--output", str(target), "a file ending in " + " or ".join(OUTPUT_SUFFIXES))
    if not target.parent.is_dir():
        raise ConfigError("--output", str(target), "a path in an existing folder", fix=f"create {target.parent} first")
    check_apart(target, "--output", {"--input": source, **(models or {})})
    if target.is_dir():
        raise ConfigError("--output", str(target), "a file path, not a folder")
    if target.exists() and not overwrite:
        raise ConfigError("--output", str(target), "a new file", fix="pass --overwrite to replace it")
    check_creatable(target.parent, "--output")
    return source, target


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, UTF-8 checked as they stream (`bg2vec prepare`'s reader: a bad byte names its offset)."""
    with TextStream(str(path)) as stream:
        yield from lines_with_ends(stream)


def count_rows(path: Path) -> int:
    """How many rows `read_chunks` will give, counted by streaming through the file; every .jsonl row is checked
    on the way, so a bad one is named by file:line before anything is encoded."""
    if path.suffix == ".txt":
        return sum(1 for _ in _lines(path))
    return sum(1 for number, value in read_json_lines(path) if _json_sentence(value, path, number) is not None)


def read_chunks(path: Path, chunk_size: int, instruction: str | None = None) -> Iterator[list[Any]]:
    """Lists of up to `chunk_size` sentences (texts, or [instruction, text] pairs) in file order."""
    if path.suffix == ".txt":
        sentences: Iterator[Any] = (line.rstrip("\r\n") for line in _lines(path))
    else:
        sentences = (_json_sentence(value, path, number) for number, value in read_json_lines(path))
    chunk: list[Any] = []
    for sentence in sentences:
        if instruction and isinstance(sentence, str):
            sentence = [instruction, sentence]
        chunk.append(sentence)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_sentence(value: Any, path: Path, number: int) -> Any:
    """A row as a sentence: a string, an [instruction, text] pair of strings, or {"text", "instruction"}."""
    if isinstance(value, dict):
        if not isinstance(value.get("text"), str):
            raise DataError(f'{path}:{number} has no "text" string; objects need "text" (and may have "instruction")')
        if not isinstance(value.get("instruction") or "", str):
            raise DataError(f'{path}:{number}: "instruction" must be a string')
        return [value["instruction"], value["text"]] if value.get("instruction") else value["text"]
    if isinstance(value, str) or (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        return value
    raise DataError(f"{path}:{number} is {json.dumps(value)[:60]}; a row is a string, an [instruction, text] pair of "
                    'strings, or {"text": ..., "instruction": ...}')


class EmbeddingWriter:
    """Writes (rows, H) float32 chunks to a .npy or .parquet file; renames it into place on `close`."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows = path, rows
        self.partial = path.with_name(path.name + ".partial")
        self.written = 0
        self._array: np.memmap | None = None
        self._parquet: Any = None

    def write(self, embeddings: np.ndarray) -> None:
        if self.path.suffix == ".npy":
            if self._array is None:
                shape = (self.rows, embeddings.shape[1])
                self._array = np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.float32, shape=shape)
                if hasattr(os, "posix_fallocate"):  # claim the space now: a full disk is one line, not a SIGBUS later
                    with open(self.partial, "r+b") as handle, disk_writes(self.path.parent, self.path.name):
                        os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
            self._array[self.written : self.written + len(embeddings)] = embeddings
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()), embeddings.shape[1])
            table = pa.table({"embedding": column})
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.partial, table.schema)
            self._parquet.write_table(table)
        self.written += len(embeddings)

    def close(self) -> None:
        if self._array is not None:
            self._array.flush()
            self._array = None
        if self._parquet is not None:
            self._parquet.close()
        os.replace(self.partial, self.path)


def encode_file(
    encoder: Bg2Vec,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 32,
    chunk_size: int = 1024,
    instruction: str | None = None,
    normalize_embeddings: bool = False,
    device: str | list[str] | None = None,
    show_progress_bar: bool = True,
    dim: int | None = None,
    max_batch_tokens: int | None = None,
    overwrite: bool = False,
) -> int:
    """Embed every row of `input_path` into `output_path`; returns the number of rows.

    >>> encode_file(Bg2Vec.from_pretrained("outputs/simcse"), "texts.txt", "embeddings.npy")
    """
    source, target = check_paths(input_path, output_path, overwrite=overwrite)
    if chunk_size < 1:
        raise ConfigError("--chunk-size", chunk_size, "a positive number of rows")
    rows = count_rows(source)
    if rows == 0:
        raise DataError(f"{source} holds no texts")
    writer = EmbeddingWriter(target, rows)
    try:
        with tqdm(total=rows, desc="Encoding", unit="text", disable=not show_progress_bar) as progress:
            for chunk in read_chunks(source, chunk_size, instruction):
                embeddings = encoder.encode(
                    chunk, batch_size=batch_size, show_progress_bar=False,
                    normalize_embeddings=normalize_embeddings, device=device, dim=dim, max_batch_tokens=max_batch_tokens,
                )
                writer.write(embeddings)
                progress.update(len(chunk))
        writer.close()
    finally:
        writer.partial.unlink(missing_ok=True)
    return writer.written
