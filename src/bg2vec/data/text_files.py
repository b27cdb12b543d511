"""Text files, possibly compressed, read as checked UTF-8 chunks and cut into documents or JSON lines.

`.gz`, `.bz2`, `.xz` and `.zst` files are decompressed while reading, 1 MiB at a time. UTF-8 is checked as
it streams: an invalid byte raises `DataError` with the file and its offset in the decompressed text, or,
with errors='replace', becomes U+FFFD and is counted. Line ends come out as "\\n" (from "\\r\\n" and "\\r" too,
as Python's universal newlines read them).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from datasets.utils import tqdm

from ..errors import DataError

CHUNK_BYTES = 1 << 20
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")


class TextStream:
    """Iterate a (possibly compressed) text file as decoded chunks; `progress` (a tqdm bar) counts its bytes.

    >>> with TextStream("corpus.txt.zst") as stream:  # doctest: +SKIP
    ...     documents = [d for batch in split_documents(stream, "line") for d in batch]
    """

    def __init__(self, path: str, errors: str = "strict", progress: tqdm | None = None) -> None:
        self.path, self.errors, self.progress = path, errors, progress
        self.replaced = 0  # invalid UTF-8 sequences replaced by U+FFFD
        self.raw = open_file(path)
        self.stream = decompressed(self.raw, path)

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stream.close()
        self.raw.close()

    def __iter__(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0  # decompressed bytes read so far
        position = 0  # compressed bytes read so far
        held_cr = ""  # a trailing "\r" waits for the next chunk, which may start with "\n"
        while True:
            try:
                data = self.stream.read(CHUNK_BYTES)
            except (OSError, EOFError, ValueError) as exc:  # corrupt or truncated compressed data
                raise DataError(f"{self.path}: cannot be read ({_first_line(exc)}); is it a valid file?") from None
            text = held_cr + self._decode(decoder, data, offset, final=not data)
            offset += len(data)
            if self.progress is not None:
                self.progress.update(self.raw.tell() - position)
                position = self.raw.tell()
            held_cr = "\r" if data and text.endswith("\r") else ""
            text = text[: len(text) - len(held_cr)].replace("\r\n", "\n").replace("\r", "\n")
            if text:
                yield text
            if not data:
                return

    def _decode(self, decoder: codecs.IncrementalDecoder, data: bytes, offset: int, final: bool) -> str:
        """`data` decoded; `offset` is where it starts in the decompressed file."""
        pieces = []
        while True:
            pending = decoder.getstate()[0]  # exception positions count from the start of pending + data
            try:
                pieces.append(decoder.decode(data, final))
                return "".join(pieces)
            except UnicodeDecodeError as exc:
                position = offset - len(pending) + exc.start
                if self.errors == "strict":
                    raise DataError(
                        f"{self.path}: invalid UTF-8 at byte {position} ({exc.reason}); "
                        "fix or re-encode the file, or replace bad bytes with U+FFFD (bg2vec prepare --errors replace)"
                    ) from None
                self.replaced += 1
                pieces.append((pending + data)[: exc.start].decode("utf-8") + "\ufffd")
                used = max(exc.end - len(pending), 0)
                data, offset = data[used:], offset + used
                decoder.reset()


def split_documents(chunks: Iterable[str], document_per: str) -> Iterator[list[str]]:
    """Lists of documents from text chunks: lines, blank-line separated paragraphs, or the whole text."""
    if document_per == "file":
        yield ["".join(chunks)]
        return
    rest = ""
    for chunk in chunks:
        parts = (rest + chunk).split("\n") if document_per == "line" else _BLANK_LINES.split(rest + chunk)
        rest = parts.pop()
        if parts:
            yield parts
    if rest:
        yield [rest]


def lines_with_ends(chunks: Iterable[str]) -> Iterator[str]:
    """Lines ending in "\\n" (the last one may not), as the csv module wants them."""
    rest = ""
    for chunk in chunks:
        lines = (rest + chunk).split("\n")
        rest = lines.pop()
        yield from (line + "\n" for line in lines)
    if rest:
        yield rest


def json_lines(lines: Iterable[str], name: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line, parsed as JSON; `name` (the file) goes into errors.

    A line that is not JSON raises `DataError` "FILE:LINE is not JSON (why)". What a value must hold is the
    caller's to check, naming FILE:LINE too.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}:{number} is not JSON ({exc.msg}); each line must be one JSON value") from None
        yield number, value


def read_json_lines(path: str | Path, errors: str = "strict") -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON-lines file (compressed or not), streamed.

    The one JSON-lines reader: bad UTF-8 names its byte offset (see `TextStream`), bad JSON its line.

    >>> rows = [row for _, row in read_json_lines("pairs.jsonl")]  # doctest: +SKIP
    """
    with TextStream(str(path), errors) as stream:
        yield from json_lines(lines_with_ends(stream), path)


def starts_with_json_object(path: Path) -> bool:
    """Whether the first line of a (possibly compressed) file is a JSON object."""
    with open_file(str(path)) as raw, decompressed(raw, str(path)) as stream:
        try:
            head = stream.read(CHUNK_BYTES)
        except (OSError, EOFError, ValueError):
            return False  # reading it as text will report the problem
    first_line = head.lstrip().split(b"\n", 1)[0]
    try:
        return first_line.startswith(b"{") and isinstance(json.loads(first_line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def open_file(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened ({exc.strerror})") from None


def decompressed(raw: BinaryIO, path: str) -> BinaryIO:
    """`raw` itself, or a decompressing reader over it, chosen by the file name's last suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)
    if suffix == ".bz2":
        return bz2.BZ2File(raw)
    if suffix == ".xz":
        return lzma.LZMAFile(raw)
    if suffix in (".zst", ".zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    return raw


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
