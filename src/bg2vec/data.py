"""Corpus → tokenized blocks of `max_seq_length` tokens, as llm2vec's run_mntp (and run_mlm) cut them.

Texts are tokenized with the model's special tokens (BOS per document where the tokenizer adds one),
concatenated within each map batch of 1,000 documents, and cut into blocks; each batch's remainder is
dropped. Everything stays Arrow-backed (`datasets.map`), so memory does not grow with the corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from transformers import PreTrainedTokenizerBase

from .errors import ConfigError, DataError

GROUP_BATCH_SIZE = 1000
RAW_FORMATS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_raw_text(
    train_file: str | None = None,
    validation_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Raw documents as a DatasetDict with a `train` and possibly a `validation` split."""
    if dataset_name is not None:
        raw = load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        return DatasetDict({name: raw[name] for name in ("train", "validation") if name in raw})
    files = {"train": train_file}
    if validation_file is not None:
        files["validation"] = validation_file
    splits = {}
    for split, path in files.items():
        setting = f"{split}_file"
        if not Path(path).is_file():
            raise ConfigError(setting, path, "an existing, readable file", fix="check the path")
        builder = RAW_FORMATS.get(Path(path).suffix.lower())
        if builder is None:
            raise ConfigError(setting, path, "a file ending in " + ", ".join(sorted(RAW_FORMATS)))
        splits[split] = load_dataset(builder, data_files={split: path}, cache_dir=cache_dir)[split]
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


def group_into_blocks(batch: dict[str, list[list[int]]], block_size: int) -> dict[str, list[list[int]]]:
    """Concatenate a batch of token lists and cut it into `block_size` blocks, dropping the remainder."""
    concatenated = [token for ids in batch["input_ids"] for token in ids]
    usable = len(concatenated) // block_size * block_size
    blocks = [concatenated[start : start + block_size] for start in range(0, usable, block_size)]
    return {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks]}


def tokenize_and_group(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    text_column: str | None = None,
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
    desc_prefix: str = "",
) -> Dataset:
    """Tokenize documents (with special tokens) and regroup them into blocks of `max_seq_length` tokens."""
    column = text_column_of(dataset, text_column)
    dataset = dataset.filter(
        lambda batch: [isinstance(t, str) and bool(t.strip()) for t in batch[column]],
        batched=True,
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        desc=f"{desc_prefix}Dropping empty documents",
    )
    tokenized = dataset.map(
        lambda batch: {"input_ids": tokenizer(batch[column], add_special_tokens=True)["input_ids"]},
        batched=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        load_from_cache_file=load_from_cache_file,
        desc=f"{desc_prefix}Tokenizing",
    )
    return tokenized.map(
        group_into_blocks,
        fn_kwargs={"block_size": max_seq_length},
        batched=True,
        batch_size=GROUP_BATCH_SIZE,
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        desc=f"{desc_prefix}Grouping into {max_seq_length}-token blocks",
    )


def load_blocks(dataset_path: str, validation_split_percentage: int) -> DatasetDict:
    """A `save_to_disk` dataset of token blocks (e.g. Bg2Vec's `grouped_512`) as train/validation splits."""
    if not Path(dataset_path).exists():
        raise ConfigError("dataset_path", dataset_path, "a folder written by datasets' save_to_disk")
    try:
        loaded = load_from_disk(dataset_path)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError("dataset_path", dataset_path, "a folder written by datasets' save_to_disk", fix=str(exc)) from None
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    if "train" not in loaded:
        raise DataError(f"dataset_path={dataset_path!r} has splits {list(loaded)}; expected a 'train' split")
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


def mntp_datasets(
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    dataset_path: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    text_column: str | None = None,
    validation_split_percentage: int = 5,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    overwrite_cache: bool = False,
) -> DatasetDict:
    """Train/validation token blocks from whichever source is given, checked and capped."""
    if dataset_path is not None:
        blocks = load_blocks(dataset_path, validation_split_percentage)
    else:
        raw = load_raw_text(train_file, validation_file, dataset_name, dataset_config_name, cache_dir)
        if "validation" not in raw:
            raw = split_off_validation(raw["train"], validation_split_percentage)
        blocks = DatasetDict(
            {
                name: tokenize_and_group(
                    split, tokenizer, max_seq_length, text_column, num_proc, not overwrite_cache, f"[{name}] "
                )
                for name, split in raw.items()
            }
        )
    limits: dict[str, Any] = {"train": max_train_samples, "validation": max_eval_samples}
    for name, limit in limits.items():
        if limit is not None and name in blocks:
            blocks[name] = blocks[name].select(range(min(limit, len(blocks[name]))))
    check_blocks(blocks["train"], "train")
    return blocks
