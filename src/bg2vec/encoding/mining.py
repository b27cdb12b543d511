"""Hard-negative mining (`bg2vec mine-negatives`): for each (query, positive), the pool's texts the encoder finds
closest to the query, minus the positive and its near-duplicates, become the row's hard negatives.

The pool is every distinct positive of the input (plus `--pool` texts). Its embeddings are computed once, in
chunks, and are the only thing that grows with the data: (P, H) float32. Queries are embedded and scored a chunk
at a time against the pool, and rows are written as they are mined, to a partial file renamed at the end.

A candidate is skipped when it is the row's own positive (same text), or scores within `margin` of the
positive's score, or above `max_score_ratio` x the positive's score (FlagEmbedding's and sentence-transformers'
guard against unlabelled positives); the first `negatives` of the rest (in score order, after skipping the top
`skip_top` ranks) are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.triples import Triple, read_triples
from ..errors import ConfigError, DataError
from ..paths import check_apart, check_creatable
from .encoder import Bg2Vec


@dataclass(frozen=True)
class MiningSettings:
    negatives: int = 1  # hard negatives per row
    top_k: int = 50  # candidates looked at per query
    skip_top: int = 0  # ranks skipped first (0: the closest non-positive may be taken)
    margin: float = 0.0  # skip candidates scoring above (positive score - margin); < 0 lets some above it through
    max_score_ratio: float = 0.95  # skip candidates scoring above this x the positive's score (>= 1 with margin < 0: off)
    batch_size: int = 32
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("negatives", "top_k", "batch_size", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", value, "a whole number >= 1")
        if self.skip_top < 0 or self.skip_top >= self.top_k:
            raise ConfigError("--skip-top", self.skip_top, f"0 to top_k - 1 ({self.top_k - 1})")
        if not self.max_score_ratio > 0:
            raise ConfigError("--max-score-ratio", self.max_score_ratio, "a number > 0 (1 or more: the guard is off)")


def mine_negatives(
    encoder: Bg2Vec, rows: list[Triple], settings: MiningSettings, pool: list[str] | None = None, show_progress_bar: bool = True
) -> Iterator[Triple]:
    """`rows` with their hard negatives mined from the pool (their distinct positives, plus `pool`)."""
    texts = list(dict.fromkeys([t.positive for t in rows] + list(pool or [])))  # distinct, first-seen order
    if len(texts) < 2:
        raise DataError("the pool has fewer than 2 distinct texts: nothing to mine from")
    index = {text: i for i, text in enumerate(texts)}
    pool_embeddings = _embed(encoder, texts, settings, "Embedding the pool", show_progress_bar)  # (P, H)
    k = min(settings.top_k, len(texts))
    progress = tqdm(total=len(rows), desc="Mining", unit="row", disable=not show_progress_bar)
    for start in range(0, len(rows), settings.chunk_size):
        chunk = rows[start : start + settings.chunk_size]
        queries = _embed(encoder, [[t.instruction, t.query] for t in chunk], settings, None, False)  # (C, H)
        scores = queries @ pool_embeddings.T  # (C, P) cosines
        own = torch.tensor([index[t.positive] for t in chunk])  # (C,)
        positive_scores = scores[torch.arange(len(chunk)), own]  # (C,)
        top_scores, top_ids = scores.topk(k, dim=1)  # (C, k)
        for row, triple in enumerate(chunk):
            ceiling = min(float(positive_scores[row]) - settings.margin, float(positive_scores[row]) * settings.max_score_ratio)
            picked = []
            for rank in range(settings.skip_top, k):
                candidate = int(top_ids[row, rank])
                if candidate == int(own[row]) or float(top_scores[row, rank]) > ceiling:
                    continue
                picked.append(texts[candidate])
                if len(picked) == settings.negatives:
                    break
            yield Triple(triple.query, triple.positive, tuple(picked), triple.instruction, triple.dataset)
        progress.update(len(chunk))
    progress.close()


def _embed(encoder: Bg2Vec, sentences: list[Any], settings: MiningSettings, desc: str | None, show: bool) -> torch.Tensor:
    """(N, H) L2-normalized float32 embeddings, `chunk_size` sentences at a time."""
    parts = []
    for start in tqdm(range(0, len(sentences), settings.chunk_size), desc=desc, disable=not show or desc is None):
        embedded = encoder.encode_tensor(sentences[start : start + settings.chunk_size], batch_size=settings.batch_size,
                                         show_progress_bar=False)
        parts.append(F.normalize(embedded, dim=-1))
    return torch.cat(parts)


def check_mining_paths(input_path: str, output_path: str, pool_path: str | None = None, overwrite: bool = False,
                       models: dict[str, str] | None = None) -> Path:
    """The output checked before any work: apart from the input, the pool and every file of the model's chain
    (`models`), new unless `overwrite`, in a folder that exists and can be written."""
    target = Path(output_path)
    check_apart(target, "--output", {"--input": input_path, "--pool": pool_path, **(models or {})})
    if target.is_dir():
        raise ConfigError("--output", output_path, "a .jsonl file path, not a folder")
    if target.exists() and not overwrite:
        raise ConfigError("--output", output_path, "a new file", fix="pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise ConfigError("--output", output_path, "a path in an existing folder", fix=f"create {target.parent} first")
    check_creatable(target.parent, "--output")
    return target


def mine_file(encoder: Bg2Vec, input_path: str, output_path: str, settings: MiningSettings,
              pool_path: str | None = None, overwrite: bool = False, models: dict[str, str] | None = None) -> dict[str, int]:
    """Read pairs (JSON lines, or an E5 folder), mine, write triples as JSON lines; returns counts. `models`: the
    paths the encoder was loaded from (the output may be none of them)."""
    target = check_mining_paths(input_path, output_path, pool_path, overwrite, models)
    data = read_triples(input_path, "--input")
    rows = [t for dataset in data.datasets.values() for t in dataset]
    pool = [t.positive for dataset in read_triples(pool_path, "--pool").datasets.values() for t in dataset] if pool_path else None
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    counts = {"rows": 0, "negatives": 0, "rows_without_negative": 0}
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for triple in mine_negatives(encoder, rows, settings, pool):
                row = {"query": triple.query, "positive": triple.positive, "negative": list(triple.negatives)}
                if triple.instruction:
                    row["instruction"] = triple.instruction
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                counts["rows"] += 1
                counts["negatives"] += len(triple.negatives)
                counts["rows_without_negative"] += not triple.negatives
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return counts
