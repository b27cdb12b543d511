"""Checkpoints that are complete or absent, and resuming from the last complete one.

A checkpoint is written into a hidden staging folder beside the run's folders and renamed to `checkpoint-N`
only once every file is in it, so a kill during the write never leaves a `checkpoint-N` that looks complete.
Resuming checks the files of the checkpoint it picks (JSON parses, safetensors and torch archives are whole);
a damaged last checkpoint is named and the previous complete one is used instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..errors import ConfigError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STAGING_PREFIX = ".partial-"  # a checkpoint being written: output_dir/.partial-checkpoint-N/


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of a run, newest (highest N) first."""
    folder = Path(output_dir)
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)), reverse=True)


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (a missing or damaged file), or None if it is complete."""
    if not (folder / "trainer_state.json").is_file():
        return "trainer_state.json is missing"
    for path in sorted(folder.iterdir()):
        problem = _file_problem(path)
        if problem:
            return f"{path.name}: {problem}"
    return None


def _file_problem(path: Path) -> str | None:
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"not readable JSON ({exc})"
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key)
        except Exception as exc:  # SafetensorError: "incomplete metadata, file not fully covered" when truncated
            return f"truncated or damaged ({str(exc).strip() or type(exc).__name__})"
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile) as exc:
            return f"truncated or damaged ({exc})"
        if bad is not None:
            return f"damaged ({bad} fails its checksum)"
    return None


def resolve_checkpoint(output_dir: str, resume: str | bool | None, log: Callable[[str], None] = print) -> str | None:
    """`--resume` alone: the last complete checkpoint in output_dir (a damaged newer one is named and passed
    over); a path: that checkpoint, which must be complete. Says which checkpoint it resumes from."""
    if not resume:
        return None
    if isinstance(resume, str) and resume not in ("true", "True"):
        folder = Path(resume)
        if not folder.is_dir():
            raise ConfigError("resume", resume, "a checkpoint folder (output_dir/checkpoint-N)")
        problem = checkpoint_problem(folder)
        if problem:
            raise ConfigError("resume", resume, "a complete checkpoint", fix=f"{problem}; pass --resume alone to take the last complete one")
        log(f"resuming from {folder}")
        return str(folder)
    found = checkpoints(output_dir)
    if not found:
        raise ConfigError("resume", True, f"a checkpoint-N folder inside {output_dir}", fix="run without --resume")
    for folder in found:
        problem = checkpoint_problem(folder)
        if problem is None:
            log(f"resuming from {folder}")
            return str(folder)
        log(f"warning: {folder} is incomplete ({problem}); trying the previous checkpoint")
    raise ConfigError(
        "resume", True, f"a complete checkpoint in {output_dir}",
        fix=f"all {len(found)} are damaged (see above); run again without --resume",
    )


def staging_folder(final: Path) -> Path:
    """Where `final` (output_dir/checkpoint-N) is written before it is renamed into place."""
    return final.parent / f"{STAGING_PREFIX}{final.name}"


def publish(staging: Path, final: Path) -> None:
    """Rename a fully written checkpoint into place (replacing an older one of the same step)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


# --- what a checkpoint belongs to ---------------------------------------------------------------------------

RUN_RECORD = "bg2vec_run.json"  # in each checkpoint: the settings that make its weights mean something
RECORDED_SETTINGS = (
    "model_name_or_path", "peft_model_name_or_path", "lora_r", "lora_alpha", "lora_target_modules", "train_lm_head",
    "mask_token_type", "pooling_mode", "train_file", "dataset_path", "dataset_name", "dataset_config_name",
    "dataset_file_path",
)  # fmt: skip


def run_record(config: Any) -> dict[str, Any]:
    """The stage, model chain, adapter settings and data of a run: what its checkpoints belong to. Local paths
    are recorded resolved (the same folder named two ways is the same input)."""
    record: dict[str, Any] = {"stage": type(config).__name__.removesuffix("Config").lower()}
    for name in RECORDED_SETTINGS:
        if hasattr(config, name):
            value = getattr(config, name)
            if isinstance(value, str) and value and Path(value).expanduser().exists():
                value = str(Path(value).expanduser().resolve())
            record[name] = value
    return record


def check_resume_matches(checkpoint: str, record: dict[str, Any], log: Callable[[str], None] = print) -> None:
    """Refuse to resume `checkpoint` under settings other than those it was trained with: one line naming the
    setting and both values. A checkpoint without a record (written before bg2vec kept one) is resumed as it is."""
    path = Path(checkpoint) / RUN_RECORD
    if not path.is_file():
        log(f"warning: {checkpoint} does not record the settings it was trained with; resuming without checking them")
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    for name, value in record.items():
        if name in saved and saved[name] != value:
            setting = "the command" if name == "stage" else name
            raise ConfigError(
                setting, value, f"{saved[name]!r}, the value {checkpoint} was trained with",
                fix="resume with the same settings, or start a new run (overwrite_output_dir true, or another output_dir)",
            )


class RunRecord(TrainerCallback):
    """Writes `run_record(config)` into every checkpoint as it is saved."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and folder.is_dir():
            partial = folder / f"{RUN_RECORD}.tmp"
            partial.write_text(json.dumps(self.record, indent=1), encoding="utf-8")
            os.replace(partial, folder / RUN_RECORD)
        return control
