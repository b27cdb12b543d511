"""Raw documents from files, folders, saved datasets and the Hub, normalised into one Arrow file per corpus.

An input is a file, a folder (every file under it, in sorted path order, hidden ones skipped), a folder
written by `save_to_disk`, or `hub:NAME` (a Hub dataset, online only). A file's format comes from its
extension (`.txt`, `.jsonl`/`.json`/`.ndjson`, `.csv`, `.tsv`, `.parquet`); a file without a known one is
JSON lines if its first line is a JSON object (so wikiextractor's `--json` output, `AA/wiki_00`, is found
as such), else plain text. Plain text is one document per line, per blank-line separated paragraph, or per
file. Compressed files are read directly and UTF-8 is checked as it streams (see `text_files`).

Every document is normalised (see `normalise`) and stored with its length in characters and a 64-bit
xxh3 hash of its text, in `documents.arrow` under the cache root. The cache key holds each file's path,
size and modification time and the reading settings, so a re-run reads nothing twice.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from datasets import Dataset, DatasetDict, Features, Value, load_dataset
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import Hasher
from datasets.utils import tqdm

from ..errors import ConfigError, DataError
from .choices import DOCUMENT_UNITS, INPUT_FORMATS, UTF8_ERRORS
from .saved_datasets import load_saved
from .text_files import COMPRESSION_SUFFIXES, TextStream, json_lines, lines_with_ends, split_documents, starts_with_json_object

HUB_PREFIX = "hub:"
READER_VERSION = 1  # part of every cache key: bump when reading or normalisation changes
WRITE_BATCH_BYTES = 8 << 20
DATASET_BATCH_ROWS = 10_000
DOCUMENTS_FILE = "documents.arrow"
SOURCES_FILE = "sources.json"
DOCUMENT_FEATURES = Features({"text": Value("string"), "chars": Value("int32"), "hash": Value("uint64")})
WIKIEXTRACTOR_FIELDS = {"id", "url", "title", "text"}
SUFFIX_FORMATS = {
    ".txt": "text", ".text": "text",
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
}  # fmt: skip

# Normalisation, in order (RE2 syntax, run by pyarrow): line breaks → "\n"; control characters and BOMs
# removed; runs of horizontal whitespace (tab, NBSP and every other Unicode space) → one space; spaces at
# line ends removed; at most one blank line in a row.
_NORMALISE_RULES = (
    (r"\r\n|[\r\x{85}\x{2028}\x{2029}]", "\n"),
    (r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\x{feff}]", ""),
    (r"[\t\x0b\x0c\p{Zs}]+", " "),
    (r" ?\n ?", "\n"),
    (r"\n{3,}", "\n\n"),
)


@dataclass
class Source:
    """One thing to read: a file in a `format`, or a loaded dataset (`format` 'saved' or 'hub')."""

    name: str
    format: str
    dataset: Dataset | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Corpus:
    """Normalised documents (columns text, chars, hash) and what reading each source found."""

    documents: Dataset
    sources: list[dict[str, Any]]


def normalise(texts: pa.Array) -> pa.Array:
    """Unicode NFC and whitespace normalisation of a string array (nulls become empty strings).

    >>> normalise(pa.array(["  e\\u0301te\\u00a0\\tx \\r\\n\\r\\n\\r\\ny "])).to_pylist()
    ['éte x\\n\\ny']
    """
    texts = pc.utf8_normalize(pc.fill_null(texts, ""), "NFC")
    for pattern, replacement in _NORMALISE_RULES:
        texts = pc.replace_substring_regex(texts, pattern, replacement)
    return pc.utf8_trim_whitespace(texts)


def read_corpus(
    inputs: list[str],
    cache_dir: str | Path,
    text_column: str = "text",
    document_per: str = "line",
    format: str = "auto",
    errors: str = "strict",
    dataset_config_name: str | None = None,
    dataset_split: str = "train",
    overwrite_cache: bool = False,
    setting: str = "inputs",
) -> Corpus:
    """Read, normalise and hash every document of `inputs` (cached under `cache_dir`).

    `setting` names the option the inputs came from in error messages.

    >>> corpus = read_corpus(["data/bg/train.txt"], "/tmp/cache")  # doctest: +SKIP
    >>> corpus.documents.column_names
    ['text', 'chars', 'hash']
    """
    _check_choice("format", format, INPUT_FORMATS)
    _check_choice("document_per", document_per, DOCUMENT_UNITS)
    _check_choice("errors", errors, UTF8_ERRORS)
    sources = find_sources(inputs, format, dataset_config_name, dataset_split, setting)
    key = Hasher.hash([READER_VERSION, [_identity(s) for s in sources], text_column, document_per, errors])
    folder = Path(cache_dir) / f"corpus-{key}"
    if overwrite_cache and folder.exists():
        shutil.rmtree(folder)
    if not (folder / SOURCES_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        _write_documents(sources, folder, text_column, document_per, errors)
    sources_read = json.loads((folder / SOURCES_FILE).read_text(encoding="utf-8"))
    return Corpus(Dataset.from_file(str(folder / DOCUMENTS_FILE)), sources_read)


def find_sources(
    inputs: list[str], format: str, dataset_config_name: str | None, dataset_split: str, setting: str
) -> list[Source]:
    """Expand folders into their files and give each file its format; load saved and Hub datasets."""
    sources: list[Source] = []
    for name in inputs:
        if name.startswith(HUB_PREFIX):
            sources.append(Source(name, "hub", _load_hub(name, dataset_config_name, dataset_split, setting)))
            continue
        path = Path(name)
        if not path.exists():
            raise ConfigError(
                setting, name, "existing files or folders, or hub:NAME for a Hub dataset", fix="check the path"
            )
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            sources.append(Source(name, "saved", _pick_split(load_saved(path, setting), dataset_split, str(path))))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
            if not files:
                raise ConfigError(setting, name, "a folder holding at least one file")
            sources.extend(Source(str(p), file_format(p, format)) for p in files)
        else:
            sources.append(Source(name, file_format(path, format)))
    return sources


def _write_documents(sources: list[Source], folder: Path, text_column: str, document_per: str, errors: str) -> None:
    """Stream every source through `normalise` into documents.arrow; on any error, leave nothing behind."""
    partial = folder / f"{DOCUMENTS_FILE}.{os.getpid()}.partial"
    writer = ArrowWriter(features=DOCUMENT_FEATURES, path=str(partial))
    file_bytes = sum(os.path.getsize(source.name) for source in sources if source.dataset is None)
    progress = tqdm(total=file_bytes, unit="B", unit_scale=True, desc="Reading", disable=file_bytes == 0)
    try:
        for source in sources:
            source.stats = {"input": source.name, "format": source.format, "documents": 0}
            source.stats.update(invalid_utf8_replaced=0, empty_articles=0)
            buffered: list[pa.Array] = []
            buffered_bytes = 0
            for texts in _read_source(source, text_column, document_per, errors, progress):
                source.stats["documents"] += len(texts)
                buffered.append(texts)
                buffered_bytes += texts.nbytes
                if buffered_bytes >= WRITE_BATCH_BYTES:  # few large record batches read back fastest
                    writer.write_table(_documents_table(pa.concat_arrays(buffered)))
                    buffered, buffered_bytes = [], 0
            if buffered:
                writer.write_table(_documents_table(pa.concat_arrays(buffered)))
        writer.finalize()
    except BaseException:
        writer.close()
        shutil.rmtree(folder)
        raise
    finally:
        progress.close()
    os.replace(partial, folder / DOCUMENTS_FILE)
    # sources.json marks the folder complete, and processes of one torchrun read it at once: write it whole or not
    # at all (a reader that saw it half-written failed with "Expecting value", the torchrun tests' old flake)
    partial_sources = folder / f"{SOURCES_FILE}.{os.getpid()}.partial"
    partial_sources.write_text(json.dumps([s.stats for s in sources], indent=2), encoding="utf-8")
    os.replace(partial_sources, folder / SOURCES_FILE)


def _documents_table(texts: pa.Array) -> pa.Table:
    texts = normalise(texts.cast(pa.string()))
    hashes = [xxhash.xxh3_64_intdigest(b) for b in texts.cast(pa.binary()).to_pylist()]
    return pa.table(
        {"text": texts, "chars": pc.utf8_length(texts), "hash": pa.array(hashes, pa.uint64())},
        schema=DOCUMENT_FEATURES.arrow_schema,
    )


def _read_source(
    source: Source, text_column: str, document_per: str, errors: str, progress: tqdm
) -> Iterator[pa.Array]:
    """Batches of raw (not yet normalised) document texts; `progress` counts the bytes of files read."""
    if source.dataset is not None:
        yield from _dataset_texts(source, text_column)
    elif source.format == "parquet":
        yield from _parquet_texts(source, text_column)
        progress.update(os.path.getsize(source.name))
    else:
        with TextStream(source.name, errors, progress) as stream:
            if source.format == "text":
                yield from (pa.array(d, pa.string()) for d in split_documents(stream, document_per))
            elif source.format in ("csv", "tsv"):
                yield from _csv_texts(stream, source, text_column)
            else:
                yield from _jsonl_texts(stream, source, text_column)
        source.stats["invalid_utf8_replaced"] = stream.replaced


def _jsonl_texts(chunks: Iterable[str], source: Source, text_column: str) -> Iterator[pa.Array]:
    """The `text_column` field of each JSON object, one per line; wikiextractor's empty articles skipped."""
    first = True
    texts: list[str | None] = []
    for line_number, record in json_lines(lines_with_ends(chunks), source.name):
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise DataError(f"{source.name}:{line_number} holds a JSON {kind}, not an object")
        if first:
            first = False
            _check_column(text_column, list(record), source.name, "fields")
            if WIKIEXTRACTOR_FIELDS <= record.keys():
                source.format = source.stats["format"] = "wikiextractor"
        value = record.get(text_column)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{source.name}:{line_number}: field {text_column!r} holds a {type(value).__name__}, not text")
        if source.format == "wikiextractor" and not (value or "").strip():
            source.stats["empty_articles"] += 1  # wikiextractor writes redirects as empty articles
            continue
        texts.append(value)
        if len(texts) == DATASET_BATCH_ROWS:
            yield pa.array(texts, pa.string())
            texts = []
    if texts:
        yield pa.array(texts, pa.string())


def _csv_texts(chunks: Iterable[str], source: Source, text_column: str) -> Iterator[pa.Array]:
    """The `text_column` cell of each row, the first row being the header."""
    csv.field_size_limit(2**31 - 1)  # whole articles in one cell exceed csv's 128 kB default
    reader = csv.reader(lines_with_ends(chunks), delimiter="\t" if source.format == "tsv" else ",")
    try:
        header = next(reader, None)
        if header is None:
            return
        _check_column(text_column, header, source.name, "columns")
        index = header.index(text_column)
        texts: list[str | None] = []
        for row in reader:
            texts.append(row[index] if index < len(row) else None)
            if len(texts) == DATASET_BATCH_ROWS:
                yield pa.array(texts, pa.string())
                texts = []
    except csv.Error as exc:
        raise DataError(f"{source.name}: line {reader.line_num}: {exc}") from None
    if texts:
        yield pa.array(texts, pa.string())


def _parquet_texts(source: Source, text_column: str) -> Iterator[pa.Array]:
    try:
        parquet = pq.ParquetFile(source.name)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{source.name}: not a readable Parquet file ({_first_line(exc)})") from None
    schema = parquet.schema_arrow
    _check_column(text_column, schema.names, source.name, "columns")
    _check_string_type(text_column, schema.field(text_column).type, source.name)
    for batch in parquet.iter_batches(batch_size=DATASET_BATCH_ROWS, columns=[text_column]):
        yield batch.column(0)


def _dataset_texts(source: Source, text_column: str) -> Iterator[pa.Array]:
    dataset = source.dataset
    _check_column(text_column, dataset.column_names, source.name, "columns")
    _check_string_type(text_column, dataset.data.schema.field(text_column).type, source.name)
    rows = dataset.select_columns([text_column]).with_format("arrow")
    with tqdm(total=len(dataset), unit=" rows", desc=f"Reading {source.name}") as bar:
        for table in rows.iter(batch_size=DATASET_BATCH_ROWS):
            bar.update(table.num_rows)
            yield table.column(0).combine_chunks()


def _load_hub(name: str, config_name: str | None, split: str, setting: str) -> Dataset:
    hub_name = name.removeprefix(HUB_PREFIX)
    try:
        return load_dataset(hub_name, config_name, split=split)
    # The Hub fails in many ways (offline, unknown name or config, gated, network); all are one user error here.
    except Exception as exc:
        allowed = "a Hub dataset that can be loaded (needs network, not HF_HUB_OFFLINE=1)"
        raise ConfigError(setting, name, allowed, fix=_first_line(exc)) from None


def _pick_split(loaded: Dataset | DatasetDict, split: str, name: str) -> Dataset:
    if isinstance(loaded, Dataset):
        return loaded
    if split not in loaded:
        raise ConfigError("dataset_split", split, f"one of the splits of {name}: " + ", ".join(loaded))
    return loaded[split]


def file_format(path: Path, format: str = "auto") -> str:
    """A file's format: `format` if given, else by its suffix (under a compression suffix), else by its content."""
    if format != "auto":
        return format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    if suffixes and suffixes[-1] in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffixes[-1]]
    return "jsonl" if starts_with_json_object(path) else "text"


def _identity(source: Source) -> list[Any]:
    """What the cache key knows of a source: a dataset's fingerprint, or a file's path, size and mtime."""
    if source.dataset is not None:
        return [source.name, source.dataset._fingerprint]  # datasets' own content fingerprint
    stat = os.stat(source.name)
    return [str(Path(source.name).resolve()), source.format, stat.st_size, stat.st_mtime_ns]


def _check_column(column: str, available: list[str], name: str, kind: str) -> None:
    if column not in available:
        raise ConfigError(
            "text_column", column, f"one of the {kind} of {name}: " + ", ".join(map(str, available)),
            fix="pass --text-column NAME",
        )


def _check_string_type(column: str, pa_type: pa.DataType, name: str) -> None:
    if not (pa.types.is_string(pa_type) or pa.types.is_large_string(pa_type)):
        raise ConfigError("text_column", column, f"a column of strings, but in {name} it holds {pa_type}")


def _check_choice(setting: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(setting, value, "one of " + ", ".join(choices))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

