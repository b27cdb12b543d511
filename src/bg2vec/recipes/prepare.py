"""The corpus-preparation recipe (`bg2vec prepare INPUT... --model M --output DIR`). Reads top to bottom.

1. check the output folder and load the tokenizer (bad settings fail here, before any reading);
2. read, normalise and hash every document (`corpus.read_corpus`, cached);
3. drop empty, too short and (optionally) duplicate documents; split train/validation by document;
4. tokenize (cached), concatenate and cut into `max_seq_length` blocks (`data`), cap the block counts;
5. write the `save_to_disk` dataset and `prepare_summary.json` into a temporary folder beside the output,
   and rename it into place only when everything worked: the output is complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from .._version import __version__
from ..config import PrepareConfig, config_to_dict
from ..data.corpus import Corpus, read_corpus
from ..data.blocks import (
    check_blocks,
    group_blocks,
    select_documents,
    split_by_document,
    tokenize_documents,
)
from ..errors import ConfigError, DataError
from ..models.backbone import load_tokenizer
from ..models.layouts import resolve_model
from ..locks import output_lock
from ..paths import (
    CORPUS_CACHE, check_apart, check_output_dir, clear_output_dir, default_cache_dir, foreign_files, plan_inputs,
    record_written,
)

SUMMARY_FILE = "prepare_summary.json"
SUMMARY_FORMAT_VERSION = 1
_REASONS = {
    "empty_article": "empty articles (wikiextractor redirects)",
    "empty": "empty",
    "too_short": "shorter than min_chars",
    "duplicate": "exact duplicates",
    "in_train": "also in train",
}
_REASON_ORDER = list(_REASONS)


@dataclass
class PrepareResult:
    """Where the dataset was written, the summary saved beside it, and the summary as a printable table."""

    output: str
    summary: dict[str, Any]
    table: str


@dataclass
class _Split:
    """One split on its way to blocks: its documents' tokens and per-document lengths."""

    tokens: Dataset
    chars: np.ndarray
    token_counts: np.ndarray


def prepare_corpus(config: PrepareConfig, log: Callable[[str], None] = print) -> PrepareResult:
    """Raw text → train/validation token blocks saved in `config.output` (see the module docstring)."""
    _check_output(config)
    with output_lock(config.output, "output", log):
        return _prepare(config, log)


def _prepare(config: PrepareConfig, log: Callable[[str], None]) -> PrepareResult:
    output = _check_output(config)  # again, under the lock
    existed = output.is_dir() and any(output.iterdir())
    tokenizer = load_tokenizer(config.model_name_or_path)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir() / CORPUS_CACHE

    train_corpus = _read(config, config.inputs, cache_dir, "inputs")
    keep, dropped = _select(train_corpus, config)
    if not keep.any():
        reasons = ", ".join(f"{count:,} {reason}" for reason, count in dropped.items() if count)
        raise DataError(
            f"the inputs yield no block: none of their {len(keep):,} documents is left ({reasons or 'none read'}); "
            "check the files, --document-per, --text-column and --min-chars"
        )
    if config.validation_input:
        validation_corpus = _read(config, config.validation_input, cache_dir, "validation_input")
        validation_keep, validation_dropped = _select(validation_corpus, config)
        if config.dedup:  # a validation text that is also a training text would leak
            train_hashes = _column(train_corpus, "hash")[keep]
            in_train = validation_keep & np.isin(_column(validation_corpus, "hash"), train_hashes)
            validation_keep &= ~in_train
            validation_dropped["in_train"] = int(in_train.sum())
        documents = {
            "train": _document_counts(train_corpus, keep, dropped),
            "validation": _document_counts(validation_corpus, validation_keep, validation_dropped),
        }
        splits = {
            "train": _tokenize(train_corpus, keep, tokenizer, config, "train"),
            "validation": _tokenize(validation_corpus, validation_keep, tokenizer, config, "validation"),
        }
    else:
        documents = {"all": _document_counts(train_corpus, keep, dropped)}
        everything = _tokenize(train_corpus, keep, tokenizer, config, "all")
        hashes = _column(train_corpus, "hash")[keep]
        held_out = split_by_document(hashes, config.validation_split_percentage, config.seed)
        if config.validation_split_percentage and not held_out.any():
            raise DataError(
                f"{len(held_out)} document(s) kept: too few to hold out {config.validation_split_percentage}% for "
                "validation; add text, pass --validation-input, or --validation-split-percentage 0"
            )
        splits = {"train": _subset(everything, ~held_out)}
        if held_out.any():
            splits["validation"] = _subset(everything, held_out)

    blocks, statistics = {}, {}
    for name, split in splits.items():
        grouped = group_blocks(
            split.tokens, config.max_seq_length, config.group_size, config.remainder, config.overwrite_cache,
            desc=f"[{name}] Cutting into {config.max_seq_length}-token blocks",
        )
        _check_split(grouped, name, config)
        limit = config.max_train_samples if name == "train" else config.max_eval_samples
        blocks[name] = grouped.select(range(min(limit, len(grouped)))) if limit else grouped
        statistics[name] = _split_statistics(split, grouped, len(blocks[name]))

    summary = _summary(config, tokenizer, documents, statistics)
    _write_atomically(output, DatasetDict(blocks), summary, config.num_proc, existed, config.overwrite_output)
    table = format_summary(summary)
    log(table)
    return PrepareResult(str(output), summary, table)


def _read(config: PrepareConfig, inputs: list[str], cache_dir: Path, setting: str) -> Corpus:
    return read_corpus(
        inputs,
        cache_dir,
        text_column=config.text_column,
        document_per=config.document_per,
        format=config.format,
        errors=config.errors,
        dataset_config_name=config.dataset_config_name,
        dataset_split=config.dataset_split,
        overwrite_cache=config.overwrite_cache,
        setting=setting,
    )


def _column(corpus: Corpus, name: str) -> np.ndarray:
    return corpus.documents.data.column(name).to_numpy()


def _select(corpus: Corpus, config: PrepareConfig) -> tuple[np.ndarray, dict[str, int]]:
    return select_documents(_column(corpus, "chars"), _column(corpus, "hash"), config.min_chars, config.dedup)


def _tokenize(
    corpus: Corpus, keep: np.ndarray, tokenizer: PreTrainedTokenizerBase, config: PrepareConfig, name: str
) -> _Split:
    kept = np.flatnonzero(keep)
    documents = corpus.documents.select(_rows(keep))
    tokens = tokenize_documents(
        documents, tokenizer, "text", config.num_proc, not config.overwrite_cache, desc=f"[{name}] Tokenizing"
    )
    token_counts = pc.list_value_length(tokens.data.column("input_ids")).to_numpy()
    return _Split(tokens, _column(corpus, "chars")[kept], token_counts)


def _subset(split: _Split, mask: np.ndarray) -> _Split:
    return _Split(split.tokens.select(_rows(mask)), split.chars[mask], split.token_counts[mask])


def _rows(mask: np.ndarray) -> range | np.ndarray:
    """The selected row numbers; a range when all are, so datasets slices instead of mapping indices."""
    return range(len(mask)) if mask.all() else np.flatnonzero(mask)


def _check_split(blocks: Dataset, name: str, config: PrepareConfig) -> None:
    if len(blocks) == 0 and name == "validation":
        raise DataError(
            f"the validation split has no block of {config.max_seq_length} tokens: give more validation text, "
            "raise --validation-split-percentage, lower --max-seq-length, or pass --remainder keep"
        )
    check_blocks(blocks, name)


def _document_counts(corpus: Corpus, keep: np.ndarray, dropped: dict[str, int]) -> dict[str, Any]:
    empty_articles = sum(source["empty_articles"] for source in corpus.sources)
    return {
        "read": len(keep) + empty_articles,
        "dropped": {**({"empty_article": empty_articles} if empty_articles else {}), **dropped},
        "kept": int(keep.sum()),
        "invalid_utf8_replaced": sum(source["invalid_utf8_replaced"] for source in corpus.sources),
        "sources": corpus.sources,
    }


def _split_statistics(split: _Split, blocks: Dataset, saved: int) -> dict[str, Any]:
    characters = int(split.chars.sum())
    tokens = int(split.token_counts.sum())
    block_tokens = int(pc.sum(pc.list_value_length(blocks.data.column("input_ids"))).as_py() or 0)
    return {
        "documents": len(split.chars),
        "characters": characters,
        "tokens": tokens,
        "tokens_per_character": tokens / characters if characters else 0.0,
        "blocks": len(blocks),
        "tokens_in_blocks": block_tokens,
        "tokens_not_in_blocks": tokens - block_tokens,
        "blocks_saved": saved,
    }


def _summary(
    config: PrepareConfig, tokenizer: PreTrainedTokenizerBase, documents: dict[str, Any], splits: dict[str, Any]
) -> dict[str, Any]:
    import datasets
    import transformers

    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return {
        "bg2vec_version": __version__,
        "format_version": SUMMARY_FORMAT_VERSION,
        "tokenizer": {
            "model_name_or_path": config.model_name_or_path,
            "vocab_size": len(tokenizer),
            "bos_token": tokenizer.bos_token,
            "adds_bos": tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id],
            "eos_token": tokenizer.eos_token,
        },
        "documents": documents,
        "splits": splits,
        "settings": config_to_dict(config),
        "versions": {"datasets": datasets.__version__, "transformers": transformers.__version__},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as two small tables: documents (read, dropped by reason, kept) and splits (tokens, blocks)."""
    documents = summary["documents"]
    doc_values = list(documents.values())
    reasons = sorted({reason for counts in doc_values for reason in counts["dropped"]}, key=_REASON_ORDER.index)
    doc_rows = [("documents read", [d["read"] for d in doc_values])]
    doc_rows += [(f"  dropped: {_REASONS[r]}", [d["dropped"].get(r, 0) for d in doc_values]) for r in reasons]
    doc_rows.append(("documents kept", [d["kept"] for d in doc_values]))
    if any(d["invalid_utf8_replaced"] for d in doc_values):
        doc_rows.append(("invalid UTF-8 replaced", [d["invalid_utf8_replaced"] for d in doc_values]))

    splits = summary["splits"]
    block = summary["settings"]["max_seq_length"]
    split_rows = [
        (label, [_number(s[key]) for s in splits.values()])
        for label, key in (
            ("documents", "documents"),
            ("characters", "characters"),
            ("tokens", "tokens"),
            ("tokens per character", "tokens_per_character"),
            (f"blocks of {block} tokens", "blocks"),
            ("tokens in blocks", "tokens_in_blocks"),
            ("tokens not in blocks", "tokens_not_in_blocks"),
            ("blocks saved", "blocks_saved"),
        )
    ]
    document_table = _table(list(documents), [(label, [_number(v) for v in values]) for label, values in doc_rows])
    return document_table + "\n\n" + _table(list(splits), split_rows)


def _number(value: int | float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else f"{value:,}"


def _table(columns: list[str], rows: list[tuple[str, list[str]]]) -> str:
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(title), *(len(cells[i]) for _, cells in rows)) for i, title in enumerate(columns)]
    lines = [" " * label_width + " | " + " | ".join(t.rjust(w) for t, w in zip(columns, widths, strict=True))]
    lines.append("-" * label_width + "-+-" + "-+-".join("-" * w for w in widths))
    for label, cells in rows:
        row = " | ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
        lines.append(label.ljust(label_width) + " | " + row)
    return "\n".join(lines)


def _check_output(config: PrepareConfig) -> Path:
    """A new folder, or a bg2vec output with --overwrite; never an input, inside one, or holding one."""
    inputs = {f"inputs[{i}]": name for i, name in enumerate(config.inputs)}
    inputs.update({f"validation_input[{i}]": name for i, name in enumerate(config.validation_input or [])})
    inputs["model_name_or_path"] = config.model_name_or_path
    inputs["cache_dir"] = config.cache_dir
    check_apart(config.output, "output", inputs)
    check_apart(config.output, "output", plan_inputs(resolve_model(config.model_name_or_path), "model_name_or_path"))
    check_output_dir(config.output, config.overwrite_output, setting="output",
                     how_to_overwrite="pass --overwrite to replace it, or pick another folder")
    return Path(config.output)


def _write_atomically(output: Path, blocks: DatasetDict, summary: dict[str, Any], num_proc: int | None,
                      existed: bool, overwrite: bool) -> None:
    """save_to_disk into a hidden folder beside `output`, then rename it into place: no half-written output.
    `existed`: whether `output` held files when the run was checked (only then may `overwrite` replace them)."""
    created = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    try:
        blocks.save_to_disk(str(staging), num_proc=num_proc)
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        record_written(staging)
        # checked again now: a folder may have appeared at `output` while this ran (a user's, another run's)
        if output.exists() and not (existed and overwrite):
            raise ConfigError("output", str(output), "a folder that stays absent while prepare runs",
                              fix="something was written there meanwhile and is left as it is; pick another folder or pass --overwrite")
        if output.exists():
            check_output_dir(str(output), True, setting="output")  # still one that bg2vec wrote
            clear_output_dir(output)  # what bg2vec wrote there goes; anything else stays
        if output.exists() and not any(output.iterdir()):
            output.rmdir()
        if output.exists():  # the user's files are kept beside the new blocks
            kept = foreign_files(output)
            for child in staging.iterdir():
                child.rename(output / child.name)
            staging.rmdir()
            record_written(output, kept)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # deepest first
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
