"""Corpus rows from files, folders and globs: (id, text, instruction), streamed in input order.

An input is a file, a folder (every file under it, sorted, hidden ones skipped) or a glob (`data/*.jsonl.gz`,
`**` recursive). Each file's format comes from its suffix under any compression suffix, as `bg2vec prepare`
reads it (`data.corpus.file_format`), and text is read through the data layer's one reader (`TextStream`:
decompressed as it streams, UTF-8 checked, a bad byte named by file and offset):

| format | a row | columns |
| --- | --- | --- |
| `.txt` | every line (empty ones too) | the line is the text; no id or instruction column |
| `.jsonl` | every non-blank line, a JSON object | fields |
| `.csv` / `.tsv` | every line after the header | header names |
| `.parquet` | every row | column names |

A row's id is its `id_column` value, else its row number across all inputs (from 0, so it is also the row's
place in `read_embeddings`). `scan` counts the rows of each file and refuses a duplicate id, naming it and both
places, before anything is written; it keeps 8 bytes per row (a hash of each id), not the ids themselves.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from ..data.corpus import file_format
from ..data.text_files import TextStream, json_lines, lines_with_ends, split_documents
from ..errors import ConfigError, DataError, first_line

ROW_BATCH = 4096  # rows read at a time
GLOB_CHARACTERS = "*?["
ID_TYPES = ("int64", "string")  # how ids are stored: row numbers and integer ids, or text


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text, the id (None: row numbers) and the instruction (None: `--instruction`)."""

    text: str = "text"
    id: str | None = None
    instruction: str | None = None


@dataclass(frozen=True)
class InputFile:
    """One file to read, with the size and modification time that the manifest records."""

    path: str  # absolute
    format: str  # text, jsonl, csv, tsv or parquet
    size: int
    mtime_ns: int

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass
class RowBatch:
    """Consecutive rows of one file: their ids (None: numbered by position), texts and instructions."""

    ids: list[Any] | None
    texts: list[str]
    instructions: list[str | None] | None

    def __len__(self) -> int:
        return len(self.texts)

    def slice(self, start: int, stop: int | None = None) -> RowBatch:
        ids = self.ids[start:stop] if self.ids is not None else None
        instructions = self.instructions[start:stop] if self.instructions is not None else None
        return RowBatch(ids, self.texts[start:stop], instructions)


@dataclass(frozen=True)
class Scan:
    """What a pass over the inputs found: rows per file, and how ids are stored."""

    rows: list[int]
    id_type: str  # one of ID_TYPES


def find_inputs(inputs: list[str], setting: str = "inputs") -> list[InputFile]:
    """Every file the inputs name, in order: files as given, folders and globs expanded and sorted."""
    if not inputs:
        raise ConfigError(setting, inputs, "at least one file, folder or glob")
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if any(c in name for c in GLOB_CHARACTERS) and not path.exists():
            matched = sorted(Path(p) for p in glob.glob(name, recursive=True) if Path(p).is_file())
            if not matched:
                raise ConfigError(setting, name, "a glob that matches at least one file", fix="check the pattern")
            files.extend(matched)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
            if not found:
                raise ConfigError(setting, name, "a folder holding at least one file")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(setting, name, "an existing file, folder or glob", fix=f"check the path (relative to {os.getcwd()})")
    result = []
    for path in files:
        stat = path.stat()
        result.append(InputFile(str(path.absolute().resolve()), file_format(path), stat.st_size, stat.st_mtime_ns))
    return result


def check_columns(files: list[InputFile], columns: Columns) -> None:
    """Refuse column settings a file cannot give (an id or instruction column in plain text), before reading."""
    for file in files:
        if file.format == "text":
            for setting, value in (("id_column", columns.id), ("instruction_column", columns.instruction)):
                if value is not None:
                    raise ConfigError(setting, value, f"no column for plain text ({file.path} holds one text per line)",
                                      fix="leave it out (ids are then row numbers), or use .jsonl/.csv/.parquet inputs")


def iter_rows(file: InputFile, columns: Columns, skip: int = 0) -> Iterator[RowBatch]:
    """Batches of `file`'s rows in order, after its first `skip` rows."""
    if file.format == "parquet":
        yield from _parquet_rows(file, columns, skip)
        return
    for batch in _text_rows(file, columns):
        if skip >= len(batch):
            skip -= len(batch)
            continue
        yield batch.slice(skip) if skip else batch
        skip = 0


def scan(files: list[InputFile], columns: Columns) -> Scan:
    """Read every input once: count rows, check each row, and refuse a duplicate id (naming it and where)."""
    rows: list[int] = []
    hashes: list[np.ndarray] = []
    all_int = True
    for file in files:
        count = 0
        for batch in iter_rows(file, columns):
            count += len(batch)
            if batch.ids is not None:
                all_int = all_int and all(isinstance(i, int) and not isinstance(i, bool) for i in batch.ids)
                hashes.append(np.fromiter((xxhash.xxh3_64_intdigest(str(i).encode()) for i in batch.ids), np.uint64, len(batch)))
        rows.append(count)
    if columns.id is not None and hashes:
        _check_unique(files, columns, np.concatenate(hashes))
    return Scan(rows, "int64" if columns.id is None or all_int else "string")


def stored_ids(batch: RowBatch, first_row: int, id_type: str) -> pa.Array:
    """The ids of `batch` as stored: row numbers from `first_row` (its place across all inputs), or its ids."""
    if batch.ids is None:
        return pa.array(np.arange(first_row, first_row + len(batch), dtype=np.int64))
    if id_type == "int64":
        return pa.array(batch.ids, pa.int64())
    return pa.array([str(i) for i in batch.ids], pa.string())


def _check_unique(files: list[InputFile], columns: Columns, hashes: np.ndarray) -> None:
    """Name the first id (in input order) that appears twice; equal hashes of different ids pass."""
    ordered = np.sort(hashes)
    repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not repeated:
        return
    seen: dict[str, str] = {}
    for file in files:
        row = 0
        for batch in iter_rows(file, columns):
            for value in batch.ids or []:
                row += 1
                key = str(value)
                if xxhash.xxh3_64_intdigest(key.encode()) not in repeated:
                    continue
                where = f"row {row} of {file.path}"
                if key in seen:
                    raise DataError(f"duplicate id {key!r} in id_column {columns.id!r}: at {seen[key]} and again at {where}; "
                                    "ids must be unique")
                seen[key] = where


def _text_rows(file: InputFile, columns: Columns) -> Iterator[RowBatch]:
    with TextStream(file.path) as stream:
        if file.format == "text":
            for lines in split_documents(stream, "line"):
                for start in range(0, len(lines), ROW_BATCH):
                    yield RowBatch(None, lines[start : start + ROW_BATCH], None)
        elif file.format in ("csv", "tsv"):
            yield from _csv_rows(stream, file, columns)
        else:
            yield from _jsonl_rows(stream, file, columns)


def _jsonl_rows(stream: TextStream, file: InputFile, columns: Columns) -> Iterator[RowBatch]:
    builder = _Builder(file, columns)
    lines = (line for batch in split_documents(stream, "line") for line in batch)
    for line_number, record in json_lines(lines, file.path):  # the data layer's one JSON-lines reader
        if not isinstance(record, dict):
            raise DataError(f"{file.path}:{line_number} holds a JSON {type(record).__name__}, not an object")
        if builder.rows == 0 and not builder.batch.texts:
            builder.check_names(list(record), "fields")
        builder.add(record, f"line {line_number}")
        if len(builder.batch) == ROW_BATCH:
            yield builder.take()
    if builder.batch.texts:
        yield builder.take()


def _csv_rows(stream: TextStream, file: InputFile, columns: Columns) -> Iterator[RowBatch]:
    csv.field_size_limit(2**31 - 1)  # whole articles in one cell exceed csv's 128 kB default
    reader = csv.reader(lines_with_ends(stream), delimiter="\t" if file.format == "tsv" else ",")
    builder = _Builder(file, columns)
    try:
        header = next(reader, None)
        if header is None:
            return
        builder.check_names(header, "columns")
        for row in reader:
            builder.add(dict(zip(header, row)), f"line {reader.line_num}")
            if len(builder.batch) == ROW_BATCH:
                yield builder.take()
    except csv.Error as exc:
        raise DataError(f"{file.path}: line {reader.line_num}: {exc}") from None
    if builder.batch.texts:
        yield builder.take()


def _parquet_rows(file: InputFile, columns: Columns, skip: int) -> Iterator[RowBatch]:
    try:
        parquet = pq.ParquetFile(file.path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{file.path}: not a readable Parquet file ({first_line(exc)})") from None
    builder = _Builder(file, columns)
    builder.check_names(parquet.schema_arrow.names, "columns")
    wanted = [c for c in (columns.text, columns.id, columns.instruction) if c is not None]
    groups, first = [], 0  # the row groups from the one holding row `skip`, and that group's first row
    for group in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if first + rows <= skip and not groups:
            first += rows
            continue
        groups.append(group)
    skip -= first
    for record_batch in parquet.iter_batches(batch_size=ROW_BATCH, row_groups=groups, columns=list(dict.fromkeys(wanted))):
        values = {name: record_batch.column(name).to_pylist() for name in record_batch.schema.names}
        for index in range(record_batch.num_rows):
            builder.add({name: column[index] for name, column in values.items()}, f"row {builder.rows + index + 1}")
        batch = builder.take()
        if skip >= len(batch):
            skip -= len(batch)
            continue
        yield batch.slice(skip) if skip else batch
        skip = 0


class _Builder:
    """Collects checked rows of one file into a RowBatch."""

    def __init__(self, file: InputFile, columns: Columns) -> None:
        self.file, self.columns = file, columns
        self.rows = 0  # rows taken so far
        self.batch = self._empty()

    def _empty(self) -> RowBatch:
        return RowBatch([] if self.columns.id else None, [], [] if self.columns.instruction else None)

    def check_names(self, names: list[str], kind: str) -> None:
        for setting, value in (("text_column", self.columns.text), ("id_column", self.columns.id),
                               ("instruction_column", self.columns.instruction)):
            if value is not None and value not in names:
                flag = "--" + setting.replace("_", "-")
                raise ConfigError(setting, value, f"one of the {kind} of {self.file.path}: " + ", ".join(map(str, names)),
                                  fix=f"pass {flag} NAME")

    def add(self, record: dict[str, Any], where: str) -> None:
        text = record.get(self.columns.text)
        if not isinstance(text, str):
            raise DataError(f"{self.file.path}: {where}: {self.columns.text!r} holds {_kind(text)}, not text")
        self.batch.texts.append(text)
        if self.batch.ids is not None:
            value = record.get(self.columns.id)
            if value is None or value == "" or isinstance(value, (bool, float, list, dict)):
                raise DataError(f"{self.file.path}: {where}: id column {self.columns.id!r} holds {_kind(value)}; "
                                "every row needs a text or whole-number id")
            self.batch.ids.append(value)
        if self.batch.instructions is not None:
            instruction = record.get(self.columns.instruction)
            if instruction is not None and not isinstance(instruction, str):
                raise DataError(f"{self.file.path}: {where}: {self.columns.instruction!r} holds {_kind(instruction)}, not text")
            self.batch.instructions.append(instruction or None)

    def take(self) -> RowBatch:
        batch, self.batch = self.batch, self._empty()
        self.rows += len(batch)
        return batch


def _kind(value: Any) -> str:
    return "nothing" if value is None or value == "" else f"a {type(value).__name__} ({str(value)[:40]!r})"


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
