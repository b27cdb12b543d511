"""Contamination check: how much of an evaluation task's text also occurs in the text a model was trained on.

A training output records the files it trained on (`training_files` in bg2vec_config.json: path, size, sha256); an
output trained on top of another (SimCSE or supervised over MNTP) adds the files its `mntp_adapter` recorded. Each
file is read back (refused if its size or hash changed: it is no longer what was trained on) as texts: lines of
.txt, string values of .jsonl/.json/.csv/.parquet rows, string columns of .arrow files (a tokenized dataset holds
no text and is listed as unreadable). Two shares per task:

- `exact`: task texts whose normalized form (NFKC, case-folded, whitespace collapsed) equals a training text's;
- `ngram`: task texts of at least N words sharing an N-word sequence with the training text (N = 13, as GPT-3's
  decontamination did); shorter texts are counted by `exact` only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.saved_outputs import read_description

NGRAM = 13
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


def training_files(folder: str) -> list[dict[str, Any]] | None:
    """The files recorded by an output and by the MNTP adapter under it; None if it recorded none."""
    description = read_description(folder) if Path(folder).is_dir() else {}
    if "training_files" not in description:
        return None
    records = list(description["training_files"])
    mntp = description.get("mntp_adapter")
    if mntp:
        under = Path(folder) / mntp if not Path(mntp).is_absolute() else Path(mntp)
        records += training_files(str(under)) or []
    return records


def read_training_texts(records: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(texts, unreadable paths) of the recorded files; a changed or missing file is a ConfigError."""
    texts, unreadable = [], []
    for record in records:
        path = Path(record["path"])
        if not path.is_file() or path.stat().st_size != record["size"] or _sha256(path) != record["sha256"]:
            raise ConfigError("--contamination", str(path), "the training file as recorded (same size and sha256)",
                              fix="it changed or moved since training: restore it, or leave out --contamination")
        found = list(_texts(path))
        texts += found
        if not found:
            unreadable.append(str(path))
    return texts, unreadable


def task_texts(task: Any) -> list[str]:
    """Every string of a local task's rows (test and train splits, retrieval corpus)."""
    out: list[str] = []
    for rows in task.rows.values():
        for row in rows:
            out += list(_strings(row))
    return out + list(task.corpus)


def overlap(task: list[str], training: list[str], n: int = NGRAM) -> dict[str, Any]:
    """{"texts", "exact", "long_texts", "ngram"}: shares of `task` found in `training` (see the module docstring)."""
    seen = {normalize(t) for t in training}
    grams = {tuple(w[i:i + n]) for t in training for w in [words(t)] for i in range(len(w) - n + 1)}
    unique = list(dict.fromkeys(task))
    exact = sum(normalize(t) in seen for t in unique)
    long = [w for t in unique for w in [words(t)] if len(w) >= n]
    hit = sum(any(tuple(w[i:i + n]) in grams for i in range(len(w) - n + 1)) for w in long)
    return {"texts": len(unique), "exact": exact / len(unique) if unique else 0.0, "long_texts": len(long),
            "ngram": hit / len(long) if long else 0.0, "ngram_n": n}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _texts(path: Path) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        yield from (line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())
    elif suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            yield from _strings(json.loads(text))
        except json.JSONDecodeError:
            for line in text.splitlines():
                try:
                    yield from _strings(json.loads(line))
                except json.JSONDecodeError:
                    continue
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.reader(handle):
                yield from row
    elif suffix in (".parquet", ".arrow"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if suffix == ".parquet":
            table = pq.read_table(path)
        else:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
        for column in table.columns:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                yield from (v for v in column.to_pylist() if v)
