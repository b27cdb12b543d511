"""What a folder bg2vec writes says about itself: the stages (one table), and the one writer and the one reader
of `bg2vec_config.json` (plus llm2vec's `llm2vec_config.json` where llm2vec reads the folder).

Every recipe and `Bg2Vec.save` write through `write_description`; the resolver (`layouts.py`) and the model card
read through `read_description`. The file is versioned peft's way: a newer major `format_version` is refused
with the bg2vec version to install; keys this version does not know are warned about and kept.
docs/saved-outputs.md lists the stages and keys.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ConfigError, DataError

BG2VEC_CONFIG_FILE = "bg2vec_config.json"
LLM2VEC_CONFIG_FILE = "llm2vec_config.json"
EXPORT_RECORD = "bg2vec_export.json"  # what `bg2vec export` wrote for another runtime, and how
FORMAT_VERSION = 1  # a new key that older readers may ignore keeps it; a changed meaning raises it
LLM2VEC_SETTING_KEYS = ("pooling_mode", "max_length", "doc_max_length", "skip_instruction")  # llm2vec's constructor takes these only
LOADERS = ("bg2vec", "llm2vec", "sentence-transformers")


@dataclass(frozen=True)
class Stage:
    """One kind of folder bg2vec writes, and how it loads."""

    what: str  # the model card's "what" line
    written_by: str  # the command or call that writes it
    adapter: bool | None  # a PEFT adapter (card: library_name peft); None: the folder says (`"adapter": "separate"`)
    training: bool  # a training run: its max_length is the block it trained on, not an encoding length
    records_mntp: bool  # records the MNTP adapter merged under it (`mntp_adapter`), so it loads alone
    loads_with: tuple[str, ...]  # which of LOADERS read the folder as it is


STAGES: dict[str, Stage] = {
    "mntp": Stage("a Bi-MNTP LoRA adapter (LLM2Vec step 2): bidirectional attention, masked next token prediction",
                  "bg2vec mntp", adapter=True, training=True, records_mntp=False, loads_with=("bg2vec", "llm2vec")),
    "simcse": Stage("a SimCSE LoRA adapter (LLM2Vec step 3), applied on top of the merged MNTP adapter",
                    "bg2vec simcse", adapter=True, training=True, records_mntp=True, loads_with=("bg2vec", "llm2vec")),
    "supervised": Stage("a supervised contrastive LoRA adapter (LLM2Vec step 3), on top of the merged MNTP adapter",
                        "bg2vec supervised", adapter=True, training=True, records_mntp=True, loads_with=("bg2vec", "llm2vec")),
    "encoder": Stage("a Bg2Vec text encoder", "Bg2Vec.save", adapter=None, training=False, records_mntp=True,
                     loads_with=("bg2vec", "llm2vec")),
    "export": Stage("a sentence-transformers model exported by bg2vec", "export_sentence_transformers", adapter=False,
                    training=False, records_mntp=False, loads_with=("sentence-transformers", "bg2vec")),
}
TRAINING_STAGES = tuple(name for name, stage in STAGES.items() if stage.training)
CONTRASTIVE_STAGES = tuple(name for name, stage in STAGES.items() if stage.training and stage.records_mntp)
# Every key a bg2vec_config.json of this format may hold (docs/saved-outputs.md says what each means).
KNOWN_KEYS = frozenset({
    "bg2vec_version", "format_version", "stage", "base_model_name_or_path", "mntp_adapter", "adapter", "language",
    "bidirectional", "vocab_size", "mask_token", "mask_token_id", "mask_token_type", "lm_head_trained",
    "pooling_mode", "max_length", "doc_max_length", "skip_instruction", "matryoshka_dims", "torch_dtype",
    "chat_format", "versions", "training_config", "training_files", "merged_from",
})  # fmt: skip


def is_adapter(description: dict[str, Any]) -> bool:
    """Whether the folder holds a PEFT adapter over a recorded model (not full weights)."""
    stage = STAGES.get(description.get("stage", "encoder"), STAGES["encoder"])
    return stage.adapter if stage.adapter is not None else description.get("adapter") == "separate"


def describe(stage: str, **fields: Any) -> dict[str, Any]:
    """A bg2vec_config.json for `stage`: versions first, then `fields` in their order."""
    import peft
    import torch
    import transformers

    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is none of {', '.join(STAGES)}")
    unknown = sorted(set(fields) - KNOWN_KEYS)
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not keys of {BG2VEC_CONFIG_FILE}; add them to KNOWN_KEYS and the docs")
    versions = {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__}
    training_config = fields.pop("training_config", None)
    description = {"bg2vec_version": __version__, "format_version": FORMAT_VERSION, "stage": stage, **fields,
                   "versions": versions}  # fmt: skip
    if training_config is not None:
        description["training_config"] = training_config
    return description


def file_records(sources: list[str | None]) -> list[dict[str, Any]]:
    """{"path", "size", "sha256"} of every file a run trained on: each local source, a folder walked whole (a
    Hub dataset name is no file and is left out). What `bg2vec evaluate --contamination` reads back."""
    records = []
    for source in sources:
        if not source or not Path(source).exists():
            continue
        root = Path(source)
        for file in sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()):
            digest = hashlib.sha256()
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            records.append({"path": str(file.resolve()), "size": file.stat().st_size, "sha256": digest.hexdigest()})
    return records


def write_description(folder: str | Path, description: dict[str, Any], llm2vec: bool = False) -> dict[str, Any]:
    """Write `description` (from `describe`) to `folder`/bg2vec_config.json and, with `llm2vec`, the settings
    llm2vec's constructor takes to llm2vec_config.json. Returns `description`."""
    folder = Path(folder)
    (folder / BG2VEC_CONFIG_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")
    if llm2vec:
        settings = {key: description[key] for key in LLM2VEC_SETTING_KEYS if key in description}
        (folder / LLM2VEC_CONFIG_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return description


def read_description(folder: str | Path) -> dict[str, Any]:
    """`folder`/bg2vec_config.json, or {} if it has none. A newer major `format_version` is a ConfigError naming
    the file and the bg2vec version needed; keys this version does not know are warned about and kept."""
    file = Path(folder) / BG2VEC_CONFIG_FILE
    if not file.is_file():
        return {}
    description = _load_json(file)
    version = description.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        written_by = description.get("bg2vec_version", "a newer version")
        raise ConfigError(
            "format_version", version, f"{FORMAT_VERSION} or lower (bg2vec {__version__})",
            fix=f"{file} was written by bg2vec {written_by}: install bg2vec {written_by} or newer to read it",
        )
    unknown = sorted(set(description) - KNOWN_KEYS)
    if unknown:
        warnings.warn(f"{file}: unknown keys {', '.join(unknown)} (written by bg2vec "
                      f"{description.get('bg2vec_version', '?')}, this is {__version__}); they are ignored", stacklevel=2)
    return description


def read_json(file: Path) -> dict[str, Any]:
    """A small JSON file of a model folder (adapter_config.json, llm2vec_config.json...), or {} if absent."""
    return _load_json(file) if file.is_file() else {}


def _load_json(file: Path) -> dict[str, Any]:
    """A JSON object from `file`; a damaged one (cut short by a copy or a full disk) is one line naming it."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file} is not valid JSON ({exc}); the folder is damaged: copy or save it again") from None
    if not isinstance(value, dict):
        raise DataError(f"{file} is not a JSON object; the folder is damaged: copy or save it again")
    return value
