"""What a model reference holds, and what loading it means: the one resolver of model folders.

`resolve_model(reference, adapter)` looks at the files of a local folder or of a Hub repo (only its small
JSON/Markdown files are fetched; an offline machine reads the Hugging Face cache) and returns a `ModelPlan`:
the base weights to load, the adapters to merge in order, the adapter to keep, the saved encoder settings and
the tokenizer. The layouts, told apart by their files (never by their names):

| layout | files | what it is | loads as |
| --- | --- | --- | --- |
| `base` | config.json + weights | any decoder | itself |
| `base+adapter` | config.json + adapter_config.json | llm2vec MNTP output, McGill's `*-mntp` repos | its weights (else the adapter's recorded base), adapter merged |
| `adapter` | adapter_config.json, no config.json | llm2vec MNTP without config, `mboyanov/bggpt-mntp`, `*-simcse` | the recorded base + this adapter |
| `bg2vec-mntp` | bg2vec_config.json, stage mntp | `bg2vec mntp` output | recorded base (vocabulary grown if it was), adapter merged |
| `bg2vec-simcse` | bg2vec_config.json, stage simcse | `bg2vec simcse` output | recorded base + its MNTP chain merged + this adapter |
| `bg2vec-supervised` | bg2vec_config.json, stage supervised | `bg2vec supervised` output | as bg2vec-simcse |
| `bg2vec-encoder` | bg2vec_config.json, stage encoder | `Bg2Vec.save` | merged weights, or the recorded base + this adapter |
| `sentence-transformers` | modules.json | `export_sentence_transformers` output | its Transformer folder |

References recorded inside a folder are read as the user gave them: a Hub id, a `pypi:` alias, or a local path,
relative to that folder (absolute paths, as older outputs wrote them, work too). Within one `resolve_model` call
each reference is looked up, and each file read, once: a chain names its base and adapters several times.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, first_line
from .adapters import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILES
from .references import PYPI_PREFIX, ModelReferenceError, resolve_model_reference
from .saved_outputs import (
    BG2VEC_CONFIG_FILE, CONTRASTIVE_STAGES, LLM2VEC_CONFIG_FILE, STAGES, TRAINING_STAGES, read_description, read_json,
)

ST_MODULES_FILE = "modules.json"
ENCODER_SETTING_KEYS = ("pooling_mode", "max_length", "doc_max_length", "skip_instruction", "bidirectional", "matryoshka_dims")
LAYOUTS = {
    "base": "config.json + model weights (a plain decoder)",
    "base+adapter": "config.json + adapter_config.json (llm2vec MNTP output, McGill *-mntp)",
    "adapter": "adapter_config.json + adapter weights, no config.json (bggpt-mntp, *-simcse)",
    "bg2vec-mntp": "a bg2vec mntp output (bg2vec_config.json stage mntp)",
    "bg2vec-simcse": "a bg2vec simcse output (bg2vec_config.json stage simcse)",
    "bg2vec-supervised": "a bg2vec supervised output (bg2vec_config.json stage supervised)",
    "bg2vec-encoder": "a Bg2Vec.save folder (bg2vec_config.json stage encoder)",
    "sentence-transformers": "a sentence-transformers folder (modules.json)",
}
# Config keys that fix the shapes an adapter was trained for: two bases that differ here are different models.
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size")  # fmt: skip
_WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
_METADATA_PATTERNS = ["*.json", "*.md", "*.model", "*.txt"]


@dataclass(frozen=True)
class ModelPlan:
    """How to build a model from a reference: load `weights`, grow the vocabulary to `vocab_size` (if set),
    apply and merge each of `merged` in order, then apply `kept` (merged only if asked)."""

    reference: str  # as the user gave it
    layout: str  # a key of LAYOUTS
    weights: str  # Hub id or local folder of the base weights (config.json from there too)
    tokenizer: str  # Hub id or local folder of the tokenizer
    merged: tuple[str, ...] = ()  # adapter folders or Hub ids, merged in this order
    kept: str | None = None  # the last adapter
    vocab_size: int | None = None  # embedding rows after growing (a `mask_token_type: mask` MNTP run added one)
    settings: dict[str, Any] = field(default_factory=dict)  # saved encoder settings (ENCODER_SETTING_KEYS)
    names: tuple[str, ...] = ()  # every model name met on the way (chat formats are chosen by name)
    base_reference: str = ""  # the base weights as recorded (a Hub id or pypi: alias where one was given)
    under: tuple[str, str | None] | None = None  # (model, adapter) that resolve to this plan without `kept`
    language: tuple[str, ...] = ()  # the training text's languages, as the last folder on the way recorded them

    @property
    def adapters(self) -> tuple[str, ...]:
        """Every adapter, in the order they are applied."""
        return self.merged + ((self.kept,) if self.kept else ())


def resolve_model(reference: str, adapter: str | None = None) -> ModelPlan:
    """The plan for `reference` (any layout), with `adapter` (llm2vec's `peft_model_name_or_path`) on top.

    >>> resolve_model("outputs/simcse").merged   # the MNTP adapter, merged before the SimCSE one is applied
    ('/work/outputs/mntp',)
    """
    with _one_lookup_each():
        return _resolve(reference, adapter)


def _resolve(reference: str, adapter: str | None) -> ModelPlan:
    plan = _plan(reference, setting="model_name_or_path", depth=0)
    if adapter is None:
        return plan
    on_top = _plan(adapter, setting="peft_model_name_or_path", depth=0)
    if on_top.kept is None and not on_top.merged:
        raise ConfigError(
            "peft_model_name_or_path", adapter, "a folder or Hub repo with an adapter (adapter_config.json)",
            fix=f"it is a {LAYOUTS[on_top.layout]}; pass it as the model instead",
        )
    own = on_top.kept or on_top.merged[-1]
    check_same_base(own, _recorded_base(own), plan)
    return replace(
        plan,
        merged=plan.adapters,
        kept=own,
        vocab_size=max(filter(None, (plan.vocab_size, on_top.vocab_size)), default=None),
        settings={**plan.settings, **on_top.settings},
        tokenizer=_own_tokenizer(adapter) or plan.tokenizer,  # the adapter folder's own, if it saved one
        names=plan.names + on_top.names,
        under=(reference, None),
        language=on_top.language or plan.language,
    )


def recorded_language(given: list[str] | None, plan: ModelPlan) -> list[str] | None:
    """The languages a new output records: those it was given, else those the chain it was built on recorded."""
    return given or list(plan.language) or None


def check_same_base(adapter: str, recorded: str | None, plan: ModelPlan) -> None:
    """Refuse an adapter whose recorded base is another model than `plan` builds; the error names both.

    Same model: the recorded reference is one met while resolving `plan` (the base or an adapter of its chain),
    or its config has the plan's shapes (a local copy of a Hub model). A recorded base that cannot be read
    here (a Hub id not in the offline cache) cannot be compared; PEFT's shape check at load time remains.
    """
    if not recorded:
        return
    known = {_canonical(name) for name in (plan.reference, plan.weights, plan.base_reference, *plan.names, *plan.adapters)}
    if _canonical(recorded) in known:
        return
    theirs, ours = _shape_config(recorded), _shape_config(plan.weights)
    if theirs is None or ours is None or theirs == ours:
        return
    differs = ", ".join(f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in SHAPE_KEYS if theirs.get(k) != ours.get(k))
    raise ConfigError(
        "peft_model_name_or_path",
        adapter,
        f"an adapter trained on {plan.base_reference or plan.weights!r}",
        fix=f"it was trained on {recorded!r} ({differs}): use that model as the base, or an adapter for this one",
    )


def recorded_reference(value: str, folder: str | Path, absolute: str | None = None) -> str:
    """A reference read from a file in `folder`: a relative path is relative to that folder only (never to the
    current directory, where another model of the same shapes may sit); where it is missing there, `absolute` (the
    absolute record adapter_config.json keeps of the same reference) if that exists; else one line naming both."""
    if value.startswith(PYPI_PREFIX) or Path(value).expanduser().is_absolute():
        return value
    inside = Path(folder) / value
    if inside.exists():
        return str(inside.resolve())
    if not _looks_like_path(value):
        return value  # a Hub id ('org/name', or a bare name such as 'gpt2')
    if absolute and Path(absolute).is_absolute() and Path(absolute).exists():
        return absolute
    also = f" nor adapter_config.json's {absolute!r}" if absolute else ""
    raise ConfigError(
        "base_model_name_or_path", value, f"a model found relative to {folder}, the folder that records it",
        fix=f"neither {inside}{also} exists: copy the base model there, or pass it as --model with this folder as --adapter",
    )


def _looks_like_path(value: str) -> bool:
    """A record that can only be a local path (a Hub id is 'name' or 'org/name', never '../name' or 'a/b/c')."""
    return value.startswith((".", "~")) or "\\" in value or value.count("/") > 1


def _base_record(folder: Path, description: dict[str, Any]) -> str | None:
    """The base model a folder records: bg2vec_config.json's (relative to the folder), falling back to the
    absolute one adapter_config.json keeps, read as a reference."""
    adapter_base = _read_json(folder / ADAPTER_CONFIG_FILE).get("base_model_name_or_path")
    value = description.get("base_model_name_or_path") or adapter_base
    if not isinstance(value, str) or not value:
        return None
    return recorded_reference(value, folder, adapter_base if adapter_base != value else None)


def portable_reference(reference: str, output_dir: str | Path | None = None) -> str:
    """How an output records a reference: a Hub id or `pypi:` alias as given, a Hub cache snapshot as its Hub id,
    a local path relative to `output_dir` (so the two can move together) or, without one, absolute: what
    adapter_config.json holds, since peft, transformers and llm2vec read it from any working directory (bg2vec
    reads the relative record in bg2vec_config.json first, so a moved pair of folders still loads)."""
    path = Path(reference).expanduser()
    if reference.startswith(PYPI_PREFIX) or not path.exists():
        return reference
    resolved = path.resolve()
    hub_id = _hub_id_of_snapshot(resolved)
    if hub_id:
        return hub_id
    return os.path.relpath(resolved, Path(output_dir).resolve()) if output_dir is not None else str(resolved)


# --- reading one reference ----------------------------------------------------------------------------------


def _plan(reference: str, setting: str, depth: int) -> ModelPlan:
    return _memo(("plan", reference), lambda: _read_plan(reference, setting, depth))


def _read_plan(reference: str, setting: str, depth: int) -> ModelPlan:
    if depth > 8:
        raise ConfigError(setting, reference, "a chain of at most 8 recorded models", fix="the records form a loop")
    folder = _inspectable(reference, setting)
    files = {p.name for p in folder.iterdir()} if folder is not None else set()
    layout = _layout(reference, folder, files, setting)
    description = _description(folder) if folder else {}
    settings = _saved_settings(folder) if folder else {}
    source = _loadable(reference, folder)
    tokenizer = str(folder) if _has_tokenizer(files) else None  # a Hub repo's: already in its snapshot
    language = tuple(description.get("language") or ())

    if layout == "base":
        return ModelPlan(reference, layout, source, tokenizer or source, settings=settings,
                         names=(reference,), base_reference=reference, language=language)  # fmt: skip
    if layout == "sentence-transformers":
        inner = _sentence_transformers_folder(folder, files)
        plan = _plan(str(inner), setting, depth + 1) if inner != folder else None
        if plan is None:
            return ModelPlan(reference, layout, source, source, settings=settings, names=(reference,), base_reference=reference,
                             language=language)
        return replace(plan, reference=reference, layout=layout, settings={**plan.settings, **settings},
                       language=language or plan.language)
    if layout == "base+adapter" and _has_weights(files):
        return ModelPlan(reference, layout, source, tokenizer or source, merged=(source,), settings=settings,
                         names=(reference,), base_reference=reference, language=language)  # fmt: skip
    if layout == "bg2vec-encoder" and description.get("adapter") != "separate":
        return ModelPlan(reference, layout, source, tokenizer or source, settings=settings, language=language,
                         names=(reference, *_strings(description, folder)), base_reference=reference)  # fmt: skip

    # Every other layout holds an adapter over a recorded model: resolve that first.
    base, under = _recorded_model(folder, description, layout, reference, setting, depth)
    check_same_base(source, _recorded_base(source), base)
    merge = layout in ("base+adapter", "bg2vec-mntp")
    grown = description.get("vocab_size") if layout == "bg2vec-mntp" else None
    return replace(
        base,
        reference=reference,
        layout=layout,
        merged=base.adapters + ((source,) if merge else ()),
        kept=None if merge else source,
        vocab_size=max(filter(None, (base.vocab_size, grown)), default=None),
        tokenizer=tokenizer or base.tokenizer,
        settings={**base.settings, **settings},
        names=base.names + (reference,),
        under=None if merge else under,
        language=language or base.language,
    )


def _recorded_model(
    folder: Path, description: dict[str, Any], layout: str, reference: str, setting: str, depth: int
) -> tuple[ModelPlan, tuple[str, str | None]]:
    """The plan of the model an adapter folder applies to, as the folder records it, and the (model, adapter)
    pair it came from. A SimCSE output (or an encoder saved with its adapter apart) records its base and MNTP
    adapter as they were given, and they resolve as they did then."""
    base = _base_record(folder, description)
    if not base:
        raise ConfigError(
            setting, reference, "a model, or an adapter folder that records its base model",
            fix="pass base_model_name_or_path=<the base model> and peft_model_name_or_path=<this folder>",
        )
    stage = STAGES.get(description.get("stage", ""))
    mntp = description.get("mntp_adapter") if stage and stage.records_mntp else None
    if mntp:
        mntp = recorded_reference(mntp, folder)
        return _resolve(base, mntp), (base, mntp)
    return _plan(base, setting, depth + 1), (base, None)


def _layout(reference: str, folder: Path | None, files: set[str], setting: str) -> str:
    if folder is None:  # a .gguf file or pypi: alias: converted into a base folder
        return "base"
    stage = _description(folder).get("stage")
    if ST_MODULES_FILE in files:
        return "sentence-transformers"
    if f"bg2vec-{stage}" in LAYOUTS:
        return f"bg2vec-{stage}"
    has_adapter = ADAPTER_CONFIG_FILE in files and any(name in files for name in ADAPTER_WEIGHTS_FILES)
    if "config.json" in files:
        if has_adapter:
            return "base+adapter"
        if _has_weights(files):
            return "base"
    elif has_adapter:
        return "adapter"
    found = ", ".join(sorted(files)[:12]) or "nothing"
    raise ModelReferenceError(
        reference, f"is none of the model layouts bg2vec reads (it holds: {found})",
        "give one of: " + "; ".join(LAYOUTS.values()), setting,
    )


def _inspectable(reference: str, setting: str) -> Path | None:
    return _memo(("folder", reference), lambda: _find_folder(reference, setting))


def _find_folder(reference: str, setting: str) -> Path | None:
    """A local folder whose files tell the layout: the folder itself, or a Hub repo's snapshot of its small
    files. None for references that are converted into a base (`.gguf`, `pypi:`)."""
    if not isinstance(reference, str) or not reference.strip():
        raise ConfigError(setting, reference, "a Hub id, a local folder, a .gguf file or a pypi:<package> alias")
    if reference.startswith(PYPI_PREFIX) or reference.lower().endswith(".gguf"):
        return None
    path = Path(reference).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        resolve_model_reference(reference, setting=setting)  # a file that is not a .gguf: its error says so
    hub_id = resolve_model_reference(reference, setting=setting)  # checks the form; a Hub id comes back unchanged
    return Path(_hub_snapshot(hub_id, setting))


def _hub_snapshot(hub_id: str, setting: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    from huggingface_hub.errors import HFValidationError

    try:
        return snapshot_download(hub_id, allow_patterns=_METADATA_PATTERNS)
    except HFValidationError as exc:
        raise ModelReferenceError(hub_id, "is not a valid Hub id", f"{first_line(exc)}; a Hub id is 'org/name'", setting) from None
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        fix = ("it is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it once online"
               if offline else f"check the Hub id ({type(exc).__name__})")  # fmt: skip
        raise ModelReferenceError(hub_id, "cannot be read from the Hub", fix, setting) from None


def _loadable(reference: str, folder: Path | None) -> str:
    """What transformers/peft load: a converted folder for .gguf/pypi:, a local folder, or the Hub id."""
    if folder is None or not Path(reference).expanduser().exists():
        return resolve_model_reference(reference)
    return str(folder)


def _saved_settings(folder: Path) -> dict[str, Any]:
    """Encoder settings saved in a folder: llm2vec_config.json, then bg2vec_config.json (sentence-transformers
    folders also carry bg2vec's). A training run's max_length is its block size, not an encoding length."""
    settings: dict[str, Any] = {}
    for saved in (_read_json(folder / LLM2VEC_CONFIG_FILE), _description(folder)):
        for key in ENCODER_SETTING_KEYS:
            if key in saved and not (key == "max_length" and saved.get("stage") in TRAINING_STAGES):
                settings[key] = saved[key]
    return settings


def _sentence_transformers_folder(folder: Path, files: set[str]) -> Path:
    """The folder of the Transformer module (the first module of modules.json)."""
    modules = json.loads((folder / ST_MODULES_FILE).read_text(encoding="utf-8"))
    transformer = next((m for m in modules if m.get("type", "").endswith("Transformer")), None)
    return folder / transformer.get("path", "") if transformer else folder


def _recorded_base(adapter: str) -> str | None:
    """The base an adapter records (bg2vec_config.json first, then adapter_config.json), read as a reference."""
    folder = Path(adapter)
    if not folder.is_dir():
        return None
    description = _description(folder)
    if description.get("stage") in CONTRASTIVE_STAGES:
        return None  # its chain was checked when it was resolved
    return _base_record(folder, description)


def _canonical(reference: str | None) -> str:
    if not reference:
        return ""
    path = Path(reference).expanduser()
    if path.exists():
        resolved = path.resolve()
        return _hub_id_of_snapshot(resolved) or str(resolved)
    return reference.rstrip("/").lower()


def _shape_config(reference: str) -> dict[str, Any] | None:
    """The shape-defining keys of a model's config, or None if it cannot be read here."""
    try:
        folder = _inspectable(reference, "base_model_name_or_path")
        if folder is None:
            folder = Path(resolve_model_reference(reference))
    except (ConfigError, ModelReferenceError):
        return None
    config = _read_json(folder / "config.json")
    if not config:
        return None
    text = config.get("text_config") or {}
    return {key: config.get(key, text.get(key)) for key in SHAPE_KEYS}


def _hub_id_of_snapshot(path: Path) -> str | None:
    """'org/name' for a folder inside a Hugging Face cache snapshot (models--org--name/snapshots/HASH/...)."""
    for parent in (path, *path.parents):
        if parent.parent.name == "snapshots" and parent.parent.parent.name.startswith("models--"):
            return parent.parent.parent.name[len("models--"):].replace("--", "/")
    return None


def _strings(description: dict[str, Any], folder: Path) -> tuple[str, ...]:
    value = _base_record(folder, description) if isinstance(description.get("base_model_name_or_path"), str) else None
    return (value,) if value else ()


def _has_weights(files: set[str]) -> bool:
    return any(Path(name).match(pattern) for name in files for pattern in _WEIGHT_PATTERNS)


def _own_tokenizer(reference: str) -> str | None:
    """The folder (or Hub snapshot) of `reference` if it holds tokenizer files itself."""
    folder = _inspectable(reference, "peft_model_name_or_path")
    return str(folder) if folder is not None and _has_tokenizer({p.name for p in folder.iterdir()}) else None


def _has_tokenizer(files: set[str]) -> bool:
    return "tokenizer_config.json" in files or "tokenizer.json" in files or "tokenizer.model" in files


# --- one lookup of each reference and one read of each file per resolve_model call -------------------------

_LOOKUPS: ContextVar[dict[tuple[str, str], Any] | None] = ContextVar("bg2vec_resolver_lookups", default=None)


@contextmanager
def _one_lookup_each() -> Iterator[None]:
    """Remember, until the outermost `resolve_model` returns, every folder found, file read and plan made."""
    if _LOOKUPS.get() is not None:
        yield
        return
    token = _LOOKUPS.set({})
    try:
        yield
    finally:
        _LOOKUPS.reset(token)


def _memo(key: tuple[str, str], compute: Callable[[], Any]) -> Any:
    lookups = _LOOKUPS.get()
    if lookups is None:
        return compute()
    if key not in lookups:
        lookups[key] = compute()
    return lookups[key]


def _description(folder: Path) -> dict[str, Any]:
    return _memo(("description", str(folder)), lambda: read_description(folder))


def _read_json(file: Path) -> dict[str, Any]:
    return _memo(("json", str(file)), lambda: read_json(file))
