"""Where a command may write: an output apart from every input, in a folder that can be created, and never over
a folder that is not a bg2vec output. Every check runs before anything is read or written."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, first_line

CORPUS_CACHE = "prepare"  # under default_cache_dir(): documents read by prepare, mntp and simcse, shared


def default_cache_dir() -> Path:
    """The cache root used when no `cache_dir` is given: `$BG2VEC_CACHE`, else `~/.cache/bg2vec`."""
    return Path(os.environ.get("BG2VEC_CACHE") or Path.home() / ".cache" / "bg2vec").expanduser()


# Files by which a folder is known as something bg2vec wrote (a finished run, or one with checkpoints).
BG2VEC_OUTPUT_MARKERS = ("bg2vec_config.json", "prepare_summary.json", "trainer_state.json", "evaluation.json")


def check_apart(output: str | Path, setting: str, inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse an output that is, contains or lies inside an input (a model, adapter, data or pairs file):
    writing there would change that input. `inputs` maps each setting to its path (Hub ids are skipped)."""
    target = Path(output).absolute().resolve()
    for name, value in inputs.items():
        if value is None or not Path(value).exists():
            continue
        source = Path(value).absolute().resolve()
        if target == source:
            relation = "is"
        elif target in source.parents:
            relation = "contains"
        elif source in target.parents:
            relation = "lies inside"
        else:
            continue
        raise ConfigError(
            setting, str(output), "a path apart from every input",
            fix=f"it {relation} {name}={str(value)!r}, which writing there would change; pick another folder",
        )


def check_creatable(folder: str | Path, setting: str) -> None:
    """Refuse a folder that cannot be created or written (a file in the way, no permission), before any work."""
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(setting, str(folder), "a folder path", fix=f"{existing} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".bg2vec-probe-"))
    except OSError as exc:
        raise ConfigError(setting, str(folder), "a folder this user can create and write in", fix=first_line(exc)) from None


def is_bg2vec_output(folder: Path) -> bool:
    """Whether `folder` holds a bg2vec result or a run's checkpoints (what overwriting may replace)."""
    if any((folder / marker).is_file() for marker in (*BG2VEC_OUTPUT_MARKERS, WRITTEN_RECORD)):
        return True
    if any(child.is_dir() for child in folder.glob(".partial-checkpoint-*")):
        return True  # a run that died (disk full, killed) while writing its first checkpoint
    return any((child / "trainer_state.json").is_file() for child in folder.glob("checkpoint-*"))


TRAINING_OVERWRITE_HINT = "set overwrite_output_dir true, pass --resume to continue its last checkpoint, or pick another folder"


def check_output_dir(
    output_dir: str, overwrite: bool, resume: bool = False, setting: str = "output_dir",
    how_to_overwrite: str = TRAINING_OVERWRITE_HINT,
) -> None:
    """Refuse a file, or a folder that already holds files unless asked to overwrite or resume; and never
    overwrite a folder that bg2vec did not write."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(setting, output_dir, "a folder path, not a file")
    check_creatable(path, setting)
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not (overwrite or resume):
        raise ConfigError(
            setting, output_dir, "a new or empty folder",
            fix=how_to_overwrite,
        )
    if not is_bg2vec_output(path):
        found = ", ".join(sorted(p.name for p in path.iterdir())[:5])
        raise ConfigError(
            setting, output_dir, "a new folder, or one that bg2vec wrote (it is never overwritten otherwise)",
            fix=f"it holds {found}; pick another folder",
        )


# The record of what bg2vec wrote into an output folder: overwriting deletes these files and nothing else.
WRITTEN_RECORD = ".bg2vec-written.json"
# What bg2vec writes, by name, for folders written before the record existed (and for checkpoints of a run
# that was killed before it could write the record).
CHECKPOINT_PATTERNS = ("checkpoint-*", ".partial-checkpoint-*")  # a run's, whether or not its record was written
OWN_PATTERNS = (
    *CHECKPOINT_PATTERNS, "adapter_model.safetensors", "adapter_config.json", "config.json",
    "generation_config.json", "tokenizer*.json", "special_tokens_map.json", "chat_template.jinja", "README.md",
    "metrics.json", "*_curves.png", "training_args.bin", WRITTEN_RECORD, *BG2VEC_OUTPUT_MARKERS,
    "evaluation.md", "evaluation.png", "train", "validation", "dataset_dict.json", "lm_head.safetensors",
)  # fmt: skip


def written_files(folder: str | Path) -> set[str] | None:
    """The top-level names bg2vec recorded writing into `folder`, or None where it keeps no record."""
    record = Path(folder) / WRITTEN_RECORD
    try:
        return set(json.loads(record.read_text(encoding="utf-8"))["written"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def foreign_files(folder: str | Path) -> list[str]:
    """The top-level names in `folder` that bg2vec did not write (kept when the folder is overwritten)."""
    path = Path(folder)
    if not path.is_dir():
        return []
    recorded = written_files(path)
    patterns = CHECKPOINT_PATTERNS if recorded is not None else OWN_PATTERNS
    ours = lambda name: name in (recorded or ()) or name == WRITTEN_RECORD or any(  # noqa: E731
        fnmatch.fnmatch(name, pattern) for pattern in patterns)
    return sorted(child.name for child in path.iterdir() if not ours(child.name))


def record_written(folder: str | Path, kept: list[str] | tuple[str, ...] = ()) -> None:
    """Write the record of `folder`: every top-level name in it but `kept` (files that were there before and are
    not bg2vec's; by default those of an earlier record's `kept`)."""
    path = Path(folder)
    if not path.is_dir():
        return
    earlier = _read_record(path).get("kept", [])
    keep = set(kept) | set(earlier)
    names = sorted(child.name for child in path.iterdir() if child.name not in keep and child.name != WRITTEN_RECORD)
    partial = path / f"{WRITTEN_RECORD}.{os.getpid()}.tmp"
    partial.write_text(json.dumps({"written": names, "kept": sorted(keep)}, indent=1), encoding="utf-8")
    os.replace(partial, path / WRITTEN_RECORD)


def _read_record(folder: Path) -> dict:
    try:
        value = json.loads((folder / WRITTEN_RECORD).read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def clear_output_dir(output_dir: str | Path) -> None:
    """Empty a bg2vec output folder that a new run overwrites of what bg2vec wrote there (old checkpoints would
    otherwise be resumed); every other file stays, and is recorded as kept so the new record leaves it out."""
    path = Path(output_dir)
    if not path.is_dir() or not is_bg2vec_output(path):
        return
    kept = foreign_files(path)
    for child in path.iterdir():
        if child.name in kept:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    if kept:
        record = path / WRITTEN_RECORD
        record.write_text(json.dumps({"written": [], "kept": kept}, indent=1), encoding="utf-8")


def plan_inputs(plan, prefix: str) -> dict[str, str]:
    """Every local path a resolved model (`ModelPlan`) reads, by a name for messages: base weights, tokenizer,
    each adapter of its chain."""
    paths = {f"{prefix} (its base weights)": plan.weights, f"{prefix} (its tokenizer)": plan.tokenizer}
    for adapter in plan.adapters:
        paths[f"{prefix} (adapter {adapter})"] = adapter
    for name in plan.names:
        paths.setdefault(f"{prefix} ({name})", name)
    return {name: value for name, value in paths.items() if value}


DISK_FULL_WORDS = ("No space left", "file write failed", "unexpected pos", "Disk quota exceeded", "IoError")


@contextmanager
def disk_writes(folder: str | Path, what: str, cleanup: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Turn a failed write into `folder` on a full disk into one `OSError` line (the CLI prints it, exit 1).

    torch's zip writer ("unexpected pos"), safetensors ("IoError") and tokenizers do not raise ENOSPC as an
    OSError, so the CLI would print their tracebacks; `cleanup` removes what was half written first."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, ValueError) and type(exc).__module__.startswith("bg2vec"):
            raise
        path = Path(folder).absolute()
        existing = next(p for p in (path, *path.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(w in str(exc) for w in DISK_FULL_WORDS)
        if not full and free > 16 * 2**20:
            raise
        cleanup()
        raise OSError(errno.ENOSPC, f"no space left while writing {what} into {folder} ({free // 1024:,} KiB free): "
                                    "free some space, then run again") from None
