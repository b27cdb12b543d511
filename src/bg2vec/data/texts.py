"""Texts for SimCSE: one example per text, cut to `max_seq_length` tokens, every distinct text once.

Sources: a file with one text per line (llm2vec's `dataset_file_path`, e.g. wiki1m_for_simcse.txt), raw text
files (`train_file`/`validation_file`: .txt, .jsonl, .csv, .parquet), a Hub dataset (`dataset_name`), or a
dataset saved with `save_to_disk` (`dataset_path`) holding either texts or `input_ids`. Long documents are cut
to their first `max_seq_length` tokens (Bg2Vec trained on whole Wikipedia articles cut this way).

Each example keeps `input_ids` (with the tokenizer's special tokens) and a `pooling_mask` marking the text's
own tokens: BOS and other special tokens are out, and with `eos_token` pooling an EOS is appended and is the
pooled position. **De-duplication**: two identical texts in one batch would be each other's positive *and*
negative, so after cutting, every distinct token sequence is kept once (and held-out texts that also occur in
training are dropped). Within an epoch every batch is then free of duplicates; the last, incomplete batch of an
epoch is dropped (`dataloader_drop_last`), so no batch is ever topped up with repeats.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Features, List, Value
from datasets.fingerprint import Hasher
from transformers import PreTrainedTokenizerBase

from .blocks import TextSource, load_raw_text, split_off_validation, text_column_of, tokenizer_fingerprint
from ..errors import ConfigError, DataError
from .saved_datasets import load_saved_splits

WIKI1M = "wiki1m"  # llm2vec's name for a one-text-per-line file given as dataset_file_path
PAIR_SCORE_COLUMNS = ("score", "label", "similarity", "gold")
EXAMPLE_FEATURES = Features({"input_ids": List(Value("int32")), "pooling_mask": List(Value("int8"))})


def mark_text_tokens(
    ids: list[int], special: list[int], max_length: int, eos_token_id: int | None
) -> tuple[list[int], list[int]]:
    """(input_ids, pooling_mask) of one tokenized text: cut to `max_length` tokens; the mask is 1 on the text's
    own tokens. With `eos_token_id` (eos_token pooling) the sequence ends in EOS and only that EOS is pooled."""
    if eos_token_id is None:
        ids = ids[:max_length]
        return ids, [1 - s for s in special[: len(ids)]]
    if not ids or ids[-1] != eos_token_id:
        ids = ids[: max_length - 1] + [eos_token_id]
    ids = ids[:max_length]
    return ids, [0] * (len(ids) - 1) + [1]


def tokenize_texts(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int, pooling_mode: str
) -> dict[str, list[list[int]]]:
    """Tokenize with the model's special tokens (BOS where it adds one) and mark the tokens to pool."""
    eos = tokenizer.eos_token_id if pooling_mode == "eos_token" else None
    encoded = tokenizer(
        texts, add_special_tokens=True, truncation=True, max_length=max_length, return_special_tokens_mask=True
    )
    rows = [
        mark_text_tokens(ids, special, max_length, eos)
        for ids, special in zip(encoded["input_ids"], encoded["special_tokens_mask"])
    ]
    return {"input_ids": [r[0] for r in rows], "pooling_mask": [r[1] for r in rows]}


def mark_token_ids(
    batch: list[list[int]], special_ids: set[int], max_length: int, eos_token_id: int | None
) -> dict[str, list[list[int]]]:
    """The same for sequences that are already token ids (a prepared dataset)."""
    rows = [mark_text_tokens(ids, [int(i in special_ids) for i in ids], max_length, eos_token_id) for ids in batch]
    return {"input_ids": [r[0] for r in rows], "pooling_mask": [r[1] for r in rows]}


def sequence_key(ids: list[int]) -> bytes:
    """A 16-byte digest of a token sequence (identical sequences ↔ identical keys)."""
    return hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=16).digest()


def keep_distinct(dataset: Dataset, exclude: set[bytes] | None = None) -> tuple[Dataset, set[bytes]]:
    """The first occurrence of every distinct `input_ids` sequence not in `exclude`, and the keys kept."""
    seen = set(exclude or ())
    kept_keys: set[bytes] = set()
    keep = []
    index = 0
    for batch in dataset.select_columns(["input_ids"]).iter(batch_size=10_000):
        for ids in batch["input_ids"]:
            key = sequence_key(ids)
            if key not in seen:
                seen.add(key)
                kept_keys.add(key)
                keep.append(index)
            index += 1
    if len(keep) == len(dataset):
        return dataset, kept_keys
    return dataset.select(keep), kept_keys


@dataclass
class SimCSECollator:
    """Pads examples to the longest in the batch (right side): input_ids, attention_mask, pooling_mask (B, T)."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(features), longest), dtype=torch.long)  # (B, T)
        pooling_mask = torch.zeros((len(features), longest), dtype=torch.long)  # (B, T)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            attention_mask[row, :n] = 1
            pooling_mask[row, :n] = torch.as_tensor(feature["pooling_mask"])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pooling_mask": pooling_mask}


def simcse_datasets(
    tokenizer: PreTrainedTokenizerBase, max_seq_length: int, pooling_mode: str, source: TextSource
) -> DatasetDict:
    """Train and validation examples (`input_ids`, `pooling_mask`), distinct, capped, checked."""
    raw = _load_source(source)
    if "validation" not in raw:
        raw = split_off_validation(raw["train"], source.validation_split_percentage)
    tokenizer_hash = tokenizer_fingerprint(tokenizer)
    examples = {
        name: _examples(
            split, name, tokenizer, max_seq_length, pooling_mode, source.text_column, source.num_proc,
            source.overwrite_cache, tokenizer_hash,
        )
        for name, split in raw.items()
    }
    train, train_keys = keep_distinct(examples["train"])
    validation, _ = keep_distinct(examples["validation"], exclude=train_keys)
    if source.max_train_samples is not None:
        train = train.select(range(min(source.max_train_samples, len(train))))
    if source.max_eval_samples is not None:
        validation = validation.select(range(min(source.max_eval_samples, len(validation))))
    if len(train) == 0:
        raise DataError("the training data has no text: the source is empty; add text")
    return DatasetDict({"train": train, "validation": validation})


def _examples(
    split: Dataset,
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    pooling_mode: str,
    text_column: str | None,
    num_proc: int | None,
    overwrite_cache: bool,
    tokenizer_hash: str,
) -> Dataset:
    """One split of texts (or token ids) → examples with `input_ids` and `pooling_mask`, empty texts dropped.

    The maps get their fingerprint from `tokenizer_hash`: left to itself, datasets would dill-pickle the whole
    tokenizer to fingerprint them (tens of seconds for a 262k vocabulary).
    """
    if len(split) == 0:  # datasets' map returns an empty dataset unchanged, with its old columns
        return Dataset.from_dict({"input_ids": [], "pooling_mask": []}, features=EXAMPLE_FEATURES)
    options: dict[str, Any] = {"batched": True, "num_proc": num_proc, "load_from_cache_file": not overwrite_cache}
    if "input_ids" in split.column_names:
        special = sorted(tokenizer.all_special_ids)
        eos = tokenizer.eos_token_id if pooling_mode == "eos_token" else None
        examples = split.map(
            _mark_rows,
            fn_kwargs={"special_ids": set(special), "max_length": max_seq_length, "eos_token_id": eos},
            remove_columns=split.column_names,
            new_fingerprint=Hasher.hash([split._fingerprint, "simcse-cut", special, max_seq_length, eos]),
            desc=f"[{name}] Cutting to {max_seq_length} tokens",
            **options,
        )
    else:
        column = text_column_of(split, text_column)
        texts = split.filter(
            lambda batch: [isinstance(t, str) and bool(t.strip()) for t in batch[column]],
            desc=f"[{name}] Dropping empty texts", **options,
        )
        examples = texts.map(
            _tokenize_rows,
            fn_kwargs={"tokenizer": tokenizer, "column": column, "max_length": max_seq_length, "pooling_mode": pooling_mode},
            remove_columns=texts.column_names,
            new_fingerprint=Hasher.hash(
                [texts._fingerprint, "simcse-tokenize", column, max_seq_length, pooling_mode, tokenizer_hash]
            ),
            desc=f"[{name}] Tokenizing (first {max_seq_length} tokens)",
            **options,
        )
    return examples.filter(
        lambda mask: sum(mask) > 0, input_columns="pooling_mask", desc=f"[{name}] Dropping texts without tokens"
    )


def _tokenize_rows(batch: dict[str, list], tokenizer, column: str, max_length: int, pooling_mode: str) -> dict:
    return tokenize_texts(batch[column], tokenizer, max_length, pooling_mode)


def _mark_rows(batch: dict[str, list], special_ids: set[int], max_length: int, eos_token_id: int | None) -> dict:
    return mark_token_ids(batch["input_ids"], special_ids, max_length, eos_token_id)


def _load_source(source: TextSource) -> DatasetDict:
    if source.dataset_path is not None:
        return _load_saved(source.dataset_path)
    if source.dataset_file_path is not None:
        return load_raw_text(
            train_file=source.dataset_file_path, validation_file=source.validation_file, text_column=source.text_column,
            train_setting="dataset_file_path",
        )
    if source.train_file is not None:
        return load_raw_text(
            train_file=source.train_file, validation_file=source.validation_file, text_column=source.text_column
        )
    if source.validation_file is not None:
        _check_file("validation_file", source.validation_file)
    try:
        raw = load_raw_text(
            dataset_name=source.dataset_name, dataset_config_name=source.dataset_config_name, cache_dir=source.cache_dir
        )
    except OSError as exc:  # not on the Hub, or the Hub unreachable (ConnectionError is an OSError)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError("dataset_name", source.dataset_name, "a Hub dataset reachable from here", fix=first_line) from None
    if source.validation_file is not None:
        raw["validation"] = load_raw_text(
            train_file=source.validation_file, text_column=source.text_column, train_setting="validation_file"
        )["train"]
    return raw


def _check_file(setting: str, path: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(setting, path, "an existing, readable file", fix="check the path")


def _load_saved(dataset_path: str) -> DatasetDict:
    """A `save_to_disk` dataset of texts or token ids, as train (+ validation) splits."""
    loaded = load_saved_splits(dataset_path, "dataset_path")
    return DatasetDict({name: loaded[name] for name in ("train", "validation") if name in loaded})


def load_pairs(path: str) -> tuple[list[str], list[str], list[float]]:
    """(sentences1, sentences2, scores) from a TSV/CSV with a header: sentence1, sentence2 and one of
    score, label, similarity or gold (e.g. STS-B, or data/bg/eval_pairs.tsv with 1 = similar, 0 = not)."""
    setting, expected = "eval_pairs_file", "a .tsv or .csv file with columns sentence1, sentence2 and score (or label)"
    if not Path(path).is_file():
        raise ConfigError(setting, path, expected, fix="check the path")
    delimiter = "," if Path(path).suffix.lower() == ".csv" else "\t"
    with open(path, encoding="utf-8", newline="") as handle:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV texts may contain quotes
        rows = list(csv.DictReader(handle, delimiter=delimiter, quoting=quoting))
    columns = rows[0].keys() if rows else []
    score_column = next((c for c in PAIR_SCORE_COLUMNS if c in columns), None)
    if not rows or "sentence1" not in columns or "sentence2" not in columns or score_column is None:
        raise ConfigError(setting, path, expected, fix=f"its header is {list(columns)}")
    try:
        scores = [float(row[score_column]) for row in rows]
    except (TypeError, ValueError):
        raise ConfigError(setting, path, f"numbers in column {score_column!r}") from None
    if len(set(scores)) < 2:
        raise ConfigError(setting, path, "pairs with at least two different scores (a rank correlation needs them)")
    return [row["sentence1"] for row in rows], [row["sentence2"] for row in rows], scores


@dataclass
class EvalPairs:
    """Labelled pairs from `eval_pairs_file`: the texts, their scores, and both sides as tokenized examples."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    first: list[dict[str, list[int]]]
    second: list[dict[str, list[int]]]


def eval_pairs(path: str, tokenizer: PreTrainedTokenizerBase, max_length: int, pooling_mode: str) -> EvalPairs:
    """Read and tokenize a pair file the same way as the training texts."""
    sentences1, sentences2, scores = load_pairs(path)

    def examples(texts: list[str]) -> list[dict[str, list[int]]]:
        tokenized = tokenize_texts(texts, tokenizer, max_length, pooling_mode)
        return [{"input_ids": i, "pooling_mask": m} for i, m in zip(tokenized["input_ids"], tokenized["pooling_mask"])]

    return EvalPairs(sentences1, sentences2, scores, examples(sentences1), examples(sentences2))
