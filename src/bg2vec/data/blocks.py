"""Documents → tokenized blocks of `max_seq_length` tokens, as llm2vec's run_mntp (and run_mlm) cut them.

Texts are tokenized with the model's special tokens (BOS per document where the tokenizer adds one),
concatenated group by group (1,000 documents: run_mntp's map batch), and cut into blocks; each group's
remainder is dropped (or kept as a shorter block). `bg2vec prepare` and `bg2vec mntp` on raw text share
these functions. Everything stays Arrow-backed (memory-mapped files, batched `datasets.map`, numpy over
one group at a time), so memory does not grow with the corpus's text; only per-document arrays (8-byte
hashes, 4-byte lengths) do, for de-duplication and the train/validation split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from datasets import Dataset, DatasetDict, Features, List, Value, load_dataset
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import Hasher
from datasets.utils import tqdm
from transformers import PreTrainedTokenizerBase

from ..errors import ConfigError, DataError
from ..paths import CORPUS_CACHE, default_cache_dir
from .choices import REMAINDER_POLICIES
from .corpus import read_corpus
from .saved_datasets import load_saved_splits

GROUP_BATCH_SIZE = 1000
STREAM_BATCH_DOCUMENTS = 10_000
MIN_BLOCK_TOKENS = 2  # MNTP predicts token i from position i-1
TOKEN_FEATURES = Features({"input_ids": List(Value("int32"))})
BLOCK_FEATURES = Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8"))})


def load_raw_text(
    train_file: str | None = None,
    validation_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    cache_dir: str | None = None,
    text_column: str | None = None,
    train_setting: str = "train_file",
) -> DatasetDict:
    """Raw documents as a DatasetDict with a `train` and possibly a `validation` split.

    Files are read by `bg2vec prepare`'s reader (`corpus.read_corpus`: any of its formats, compressed or not,
    UTF-8 checked, one document per line of text, cached) into one column, `text_column` (default `text`); a Hub
    dataset keeps its columns.
    """
    if dataset_name is not None:
        raw = load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        return DatasetDict({name: raw[name] for name in ("train", "validation") if name in raw})
    files = {"train": (train_setting, train_file)}
    if validation_file is not None:
        files["validation"] = ("validation_file", validation_file)
    splits = {}
    for split, (setting, path) in files.items():
        if not Path(path).exists():
            raise ConfigError(setting, path, "an existing file or folder", fix="check the path")
        corpus = read_corpus([path], default_cache_dir() / CORPUS_CACHE, text_column=text_column or "text", setting=setting)
        documents = corpus.documents
        if len(documents) == 0 or pc.max(documents.data.column("chars")).as_py() == 0:
            raise DataError(f"{setting}={path!r} holds no text ({len(documents):,} documents, all empty); add text")
        column = documents.select_columns(["text"])
        splits[split] = column.rename_column("text", text_column) if text_column not in (None, "text") else column
    return DatasetDict(splits)


def text_column_of(dataset: Dataset, text_column: str | None) -> str:
    """The column holding the text: `text_column`, else 'text', else the first column."""
    columns = dataset.column_names
    if text_column is None:
        return "text" if "text" in columns else columns[0]
    if text_column not in columns:
        raise ConfigError("text_column", text_column, "one of the columns " + ", ".join(columns))
    return text_column


def split_off_validation(dataset: Dataset, percentage: int) -> DatasetDict:
    """The first `percentage`% of rows become validation (run_mlm's `train[:N%]`), the rest train."""
    n_validation = round(len(dataset) * percentage / 100)
    return DatasetDict(
        {
            "train": dataset.select(range(n_validation, len(dataset))),
            "validation": dataset.select(range(n_validation)),
        }
    )


def tokenize_documents(
    documents: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str = "text",
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
    desc: str = "Tokenizing",
) -> Dataset:
    """One row of token ids (`input_ids`, int32) per document, with the special tokens the tokenizer adds.

    >>> tokenize_documents(Dataset.from_dict({"text": ["a b"]}), tokenizer)["input_ids"]  # doctest: +SKIP
    [[1, 264, 287]]
    """
    if len(documents) == 0:  # datasets' map returns an empty dataset unchanged, with its old columns
        return Dataset.from_dict({"input_ids": []}, features=TOKEN_FEATURES)
    return documents.map(
        _tokenize_batch,
        fn_kwargs={"tokenizer": tokenizer, "column": text_column},
        batched=True,
        batch_size=GROUP_BATCH_SIZE,
        num_proc=num_proc,
        remove_columns=documents.column_names,
        features=TOKEN_FEATURES,
        load_from_cache_file=load_from_cache_file,
        new_fingerprint=Hasher.hash(
            [documents._fingerprint, "tokenize_documents", text_column, tokenizer_fingerprint(tokenizer)]
        ),
        desc=desc,
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what decides the token ids: the backend's serialized vocabulary and rules, the wrapper's class,
    and the ids it gives a probe text with special tokens.

    datasets would otherwise dill-pickle the whole tokenizer to fingerprint a map (30 s for Gemma's 262k
    vocabulary, on every run); the Rust serialization takes about 1 s.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    rules = backend.to_str() if backend is not None else Hasher.hash(tokenizer)
    probe = tokenizer(["Probe <s> text, Текст.", ""], add_special_tokens=True)["input_ids"]
    return xxhash.xxh3_128_hexdigest(json.dumps([type(tokenizer).__name__, rules, probe]).encode("utf-8"))


def _tokenize_batch(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, column: str) -> dict[str, list]:
    # verbose=False: documents longer than the model's context are expected here; they are cut into blocks
    return {"input_ids": tokenizer(batch[column], add_special_tokens=True, verbose=False)["input_ids"]}


def group_blocks(
    tokens: Dataset,
    block_size: int,
    group_size: int = GROUP_BATCH_SIZE,
    remainder: str = "drop",
    overwrite_cache: bool = False,
    desc: str | None = None,
) -> Dataset:
    """Concatenate the documents' `input_ids` group by group and cut them into `block_size`-token blocks.

    A group is `group_size` consecutive documents (1000 = run_mntp's map batch; 0 = the whole dataset as
    one stream). The tail of each group, shorter than a block, is dropped (`remainder="drop"`, run_mntp)
    or kept as one shorter block (`"keep"`; the MNTP collator pads it per batch). A tail under 2 tokens is
    always dropped. Blocks carry `input_ids` and an all-ones `attention_mask`. When `tokens` lives in
    files, the result is cached beside them, keyed by `tokens`' fingerprint and these settings.

    >>> list(group_blocks(Dataset.from_dict({"input_ids": [[1, 5, 6], [1, 7]]}), 2)["input_ids"])
    [[1, 5], [6, 1]]
    """
    if remainder not in REMAINDER_POLICIES:
        raise ConfigError("remainder", remainder, "one of " + ", ".join(REMAINDER_POLICIES))
    if group_size < 0:
        raise ConfigError("group_size", group_size, "0 (the whole split as one stream) or a number of documents")
    tables = _block_tables(tokens, block_size, group_size, remainder, desc or f"Cutting into {block_size}-token blocks")
    if not tokens.cache_files:
        return Dataset(pa.concat_tables([BLOCK_FEATURES.arrow_schema.empty_table(), *tables]))
    # datasets' fingerprint of `tokens` already covers its source files, its row selection and its tokenizer
    key = Hasher.hash([tokens._fingerprint, block_size, group_size, remainder])
    path = Path(tokens.cache_files[0]["filename"]).parent / f"blocks-{key}.arrow"
    if overwrite_cache or not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        writer = ArrowWriter(features=BLOCK_FEATURES, path=str(partial))
        try:
            for table in tables:
                writer.write_table(table)
            writer.finalize()
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
    return Dataset.from_file(str(path))


def _block_tables(tokens: Dataset, block_size: int, group_size: int, remainder: str, desc: str) -> Iterator[pa.Table]:
    carry = np.empty(0, dtype=np.int32)  # with group_size 0: tokens read but not yet in a block
    rows = tokens.select_columns(["input_ids"]).with_format("arrow")
    with tqdm(total=len(tokens), unit=" docs", desc=desc) as bar:
        for table in rows.iter(batch_size=group_size or STREAM_BATCH_DOCUMENTS):
            bar.update(table.num_rows)
            flat = pc.list_flatten(table.column("input_ids")).to_numpy().astype(np.int32, copy=False)  # (T,)
            if group_size == 0:
                flat = np.concatenate([carry, flat])
            usable = len(flat) // block_size * block_size
            full, tail = flat[:usable], flat[usable:]
            if group_size == 0:
                carry, tail = tail, tail[:0]
            yield _blocks_table(full, block_size, tail if remainder == "keep" else tail[:0])
    if group_size == 0 and remainder == "keep":
        yield _blocks_table(carry[:0], block_size, carry)


def _blocks_table(full: np.ndarray, block_size: int, tail: np.ndarray) -> pa.Table:
    """Rows of `block_size` tokens from `full` (a multiple of block_size long), then `tail` as a shorter row."""
    ends = np.arange(0, len(full) + 1, block_size)
    if len(tail) >= MIN_BLOCK_TOKENS:
        full, ends = np.concatenate([full, tail]), np.append(ends, len(full) + len(tail))
    offsets = pa.array(ends, pa.int32())
    columns = {
        "input_ids": pa.ListArray.from_arrays(offsets, pa.array(full, pa.int32())),
        "attention_mask": pa.ListArray.from_arrays(offsets, pa.array(np.ones(len(full), np.int8))),
    }
    return pa.table(columns, schema=BLOCK_FEATURES.arrow_schema)


def select_documents(
    chars: np.ndarray, hashes: np.ndarray, min_chars: int = 1, dedup: bool = False
) -> tuple[np.ndarray, dict[str, int]]:
    """Which documents to keep (a bool mask) and how many were dropped, by reason (the reasons that apply).

    Empty documents always go, those under `min_chars` characters too; with `dedup`, every later copy of a
    text (same 64-bit hash) goes. Memory: about 24 bytes per document (hash, sort), not per character.

    >>> select_documents(np.array([3, 0, 3]), np.array([7, 1, 7], np.uint64), dedup=True)[0]
    array([ True, False, False])
    """
    empty = chars == 0
    keep = ~empty
    dropped = {"empty": int(empty.sum())}
    if min_chars > 1:
        too_short = keep & (chars < min_chars)
        keep &= ~too_short
        dropped["too_short"] = int(too_short.sum())
    if dedup:
        candidates = np.flatnonzero(keep)
        _, first = np.unique(hashes[candidates], return_index=True)  # each hash's first occurrence
        duplicate = np.zeros_like(keep)
        duplicate[candidates] = True
        duplicate[candidates[first]] = False
        keep &= ~duplicate
        dropped["duplicate"] = int(duplicate.sum())
    return keep, dropped


def split_by_document(hashes: np.ndarray, percentage: float, seed: int) -> np.ndarray:
    """A bool mask of the documents that go to validation: `percentage` % of them (at least one, never all).

    Documents are ranked by a seeded mix of their text hash and the lowest go to validation, so the split
    is deterministic under `seed`, independent of document order and worker count, and identical texts
    always land on the same side.
    """
    count = min(max(round(len(hashes) * percentage / 100), 1), len(hashes) - 1) if percentage > 0 else 0
    if count <= 0:
        return np.zeros(len(hashes), dtype=bool)
    keys = _seeded(hashes, seed)
    return keys <= np.partition(keys, count - 1)[count - 1]


def _seeded(hashes: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64's finaliser over (hash XOR a hash of the seed): an unrelated order for every seed."""
    x = hashes.astype(np.uint64) ^ np.uint64(xxhash.xxh3_64_intdigest(str(seed).encode()))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def tokenize_and_group(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    text_column: str | None = None,
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
    desc_prefix: str = "",
) -> Dataset:
    """Raw documents → blocks as run_mntp makes them: drop empty texts, tokenize, cut per 1000 documents."""
    column = text_column_of(dataset, text_column)
    dataset = dataset.filter(
        lambda batch: [isinstance(t, str) and bool(t.strip()) for t in batch[column]],
        batched=True,
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        desc=f"{desc_prefix}Dropping empty documents",
    )
    tokens = tokenize_documents(dataset, tokenizer, column, num_proc, load_from_cache_file, f"{desc_prefix}Tokenizing")
    return group_blocks(
        tokens,
        max_seq_length,
        overwrite_cache=not load_from_cache_file,
        desc=f"{desc_prefix}Grouping into {max_seq_length}-token blocks",
    )


def load_blocks(dataset_path: str, validation_split_percentage: int) -> DatasetDict:
    """A `save_to_disk` dataset of token blocks (e.g. Bg2Vec's `grouped_512`) as train/validation splits."""
    loaded = load_saved_splits(dataset_path, "dataset_path")
    for name, split in loaded.items():
        if "input_ids" not in split.column_names:
            raise DataError(
                f"dataset_path={dataset_path!r} split {name!r} has columns {split.column_names}; expected "
                "'input_ids' (tokenize it first, e.g. with `bg2vec prepare`)"
            )
    if "validation" not in loaded:
        loaded = split_off_validation(loaded["train"], validation_split_percentage)
    keep = ["input_ids"]
    return DatasetDict({name: loaded[name].select_columns(keep) for name in ("train", "validation")})


def check_block_length(dataset_path: str, train: Dataset, max_seq_length: int) -> None:
    """A prepared dataset must have been cut at `max_seq_length`: its prepare_summary.json says so, else its
    longest block does. Training silently at another length would not be the run the config describes."""
    summary = Path(dataset_path) / "prepare_summary.json"
    if summary.is_file():
        length = json.loads(summary.read_text(encoding="utf-8")).get("settings", {}).get("max_seq_length")
        source = "its prepare_summary.json"
    else:
        lengths = pc.list_value_length(train.data.column("input_ids"))
        length = pc.max(lengths).as_py() if len(train) else None
        source = "its longest block"
    if length is not None and length != max_seq_length:
        raise ConfigError(
            "max_seq_length", max_seq_length, f"the block length of dataset_path={dataset_path!r}: {length} ({source})",
            fix=f"set max_seq_length {length}, or prepare the data again with --max-seq-length {max_seq_length}",
        )


def check_blocks(dataset: Dataset, split: str, min_length: int = 2) -> None:
    """Raise `DataError` if a split is empty or has blocks shorter than `min_length` tokens."""
    if len(dataset) == 0:
        raise DataError(
            f"the {split} split has no block: the corpus is empty or shorter than one block; "
            "add text or lower max_seq_length"
        )
    lengths = pc.list_value_length(dataset.data.column("input_ids"))
    shortest = pc.min(lengths).as_py()
    if shortest < min_length:
        raise DataError(
            f"the {split} split has blocks of {shortest} token(s); MNTP needs at least {min_length} "
            "(token i is predicted from position i-1): re-prepare with max_seq_length >= 2"
        )


@dataclass(frozen=True)
class TextSource:
    """Where a recipe's text comes from (one source), how its validation part is found, and how much is used:
    a config's data settings, as `mntp_datasets` and `simcse_datasets` take them."""

    dataset_path: str | None = None  # a save_to_disk dataset (bg2vec prepare's blocks, or texts)
    train_file: str | None = None
    validation_file: str | None = None
    dataset_name: str | None = None  # a Hub dataset
    dataset_config_name: str | None = None
    dataset_file_path: str | None = None  # SimCSE: llm2vec's one-text-per-line file (Wiki1M)
    text_column: str | None = None
    validation_split_percentage: int = 5  # without validation data, this share of train is held out
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_proc: int | None = None  # tokenization processes
    cache_dir: str | None = None
    overwrite_cache: bool = False


def mntp_datasets(tokenizer: PreTrainedTokenizerBase, max_seq_length: int, source: TextSource) -> DatasetDict:
    """Train/validation token blocks from whichever source is given, checked and capped."""
    if source.dataset_path is not None:
        blocks = load_blocks(source.dataset_path, source.validation_split_percentage)
    else:
        raw = load_raw_text(
            source.train_file, source.validation_file, source.dataset_name, source.dataset_config_name, source.cache_dir,
            source.text_column,
        )
        if "validation" not in raw:
            raw = split_off_validation(raw["train"], source.validation_split_percentage)
        blocks = DatasetDict(
            {
                name: tokenize_and_group(
                    split, tokenizer, max_seq_length, source.text_column, source.num_proc, not source.overwrite_cache,
                    f"[{name}] ",
                )
                for name, split in raw.items()
            }
        )
    limits: dict[str, Any] = {"train": source.max_train_samples, "validation": source.max_eval_samples}
    for name, limit in limits.items():
        if limit is not None and name in blocks:
            blocks[name] = blocks[name].select(range(min(limit, len(blocks[name]))))
    check_blocks(blocks["train"], "train")
    if source.dataset_path is not None:
        check_block_length(source.dataset_path, blocks["train"], max_seq_length)
    return blocks
