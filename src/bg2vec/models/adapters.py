"""PEFT adapter files that every peft since 0.12 reads (llm2vec 0.2.3 pins peft 0.12.0).

peft 0.12's `LoraConfig(**adapter_config)` refuses keys it does not know, and peft 0.21 writes about twenty
new ones (`alora_invocation_tokens`, `lora_bias`, `peft_version`, ...). Left at their defaults they mean
nothing to older peft, so `portable_adapter_config` drops them; a new key with a non-default value carries
meaning that peft 0.12 would ignore, so it stays and a warning names it. The weights file and its key layout
(`base_model.model.layers.N.self_attn.q_proj.lora_A.weight`, llm2vec's) are unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILES = ("adapter_model.safetensors", "adapter_model.bin")

# Every field of peft 0.12.0's LoraConfig (with PeftConfig's): what llm2vec's environment accepts.
PEFT_0_12_LORA_KEYS = frozenset(
    {
        "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode",
        "init_lora_weights", "layer_replication", "layers_pattern", "layers_to_transform", "loftq_config",
        "lora_alpha", "lora_dropout", "megatron_config", "megatron_core", "modules_to_save", "peft_type", "r",
        "rank_pattern", "revision", "runtime_config", "target_modules", "task_type", "use_dora", "use_rslora",
    }
)  # fmt: skip
INFORMATIONAL_KEYS = frozenset({"peft_version"})  # what peft records about itself; no older peft needs it


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    """The adapter_config.json of a local folder, or {} if it has none."""
    file = Path(folder) / ADAPTER_CONFIG_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


def portable_adapter_config(folder: str | Path, base_model_name_or_path: str | None = None) -> list[str]:
    """Rewrite `folder`/adapter_config.json so peft 0.12 reads it; record `base_model_name_or_path` if given.

    Returns the keys kept although peft 0.12 does not know them (non-default values; a warning names them).

    >>> portable_adapter_config("outputs/mntp", "INSAIT-Institute/BgGPT-7B-Instruct-v0.2")
    []
    """
    file = Path(folder) / ADAPTER_CONFIG_FILE
    config = json.loads(file.read_text(encoding="utf-8"))
    defaults = _lora_defaults()
    kept = sorted(
        k for k in config if k not in PEFT_0_12_LORA_KEYS | INFORMATIONAL_KEYS and config[k] != defaults.get(k)
    )
    portable = {k: v for k, v in config.items() if k in PEFT_0_12_LORA_KEYS or k in kept}
    if base_model_name_or_path is not None:
        portable["base_model_name_or_path"] = base_model_name_or_path
    file.write_text(json.dumps(portable, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if kept:
        warnings.warn(f"{file}: peft 0.12 (llm2vec) does not know {', '.join(kept)} and will refuse this adapter")
    return kept


def _lora_defaults() -> dict[str, Any]:
    """The value each LoraConfig field takes when not set (as JSON would hold it)."""
    from peft import LoraConfig

    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(LoraConfig):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
            defaults[field.name] = value if not dataclasses.is_dataclass(value) else dataclasses.asdict(value)
    return defaults


# transformers 5 renamed gradient checkpointing to activation checkpointing; peft still reads the old property.
_RENAMED_CHECKPOINTING = r"`is_gradient_checkpointing` is deprecated"


@contextmanager
def quiet_renames() -> Iterator[None]:
    """Silence exactly the FutureWarning peft triggers by reading transformers' old checkpointing name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_RENAMED_CHECKPOINTING, category=FutureWarning)
        yield
