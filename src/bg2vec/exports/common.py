"""What every export shares: the output checks, the all-or-nothing write, the merged Hugging Face folder with
the attention flags each runtime reads, and the record (`bg2vec_export.json`) that says what the folder holds.

Each runtime reads bidirectional attention from a different switch (issue 22):

| runtime | reads |
| --- | --- |
| transformers >= 5, sentence-transformers | `config.is_causal: false` |
| TEI (Mistral, Llama, Qwen3, Gemma 3) | `use_bidirectional_attention: true`; Qwen2: `is_causal: false` |
| vLLM | Llama/Mistral: architecture `LlamaBidirectionalModel` (hf_overrides); Qwen: `is_causal: false` |
| llama.cpp | GGUF `<arch>.attention.causal = false` (written by `gguf.py`) |

`runtime_flags` writes all the config.json keys at once: each runtime ignores the others' keys.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._version import __version__
from ..encoding.encoder import Bg2Vec, save_merged_model
from ..errors import ConfigError
from ..models.saved_outputs import EXPORT_RECORD
from ..models.portable_files import portable_tokenizer_files

# Families whose Hugging Face config has a `use_bidirectional_attention` switch (TEI and transformers read it).
BIDIRECTIONAL_SWITCH_FAMILIES = ("gemma3_text", "gemma3", "qwen3", "llama", "mistral")


def check_output(output: str | Path, sources: dict[str, str | None], overwrite: bool = False) -> Path:
    """The output folder, after refusing one inside (or equal to) a local input folder, or one that exists."""
    out = Path(output).resolve()
    for setting, source in sources.items():
        if not source:
            continue
        folder = Path(source).expanduser()
        folder = folder.parent if folder.is_file() else folder
        if folder.exists() and (out == folder.resolve() or folder.resolve() in out.parents or out in folder.resolve().parents):
            raise ConfigError("--output", str(output), f"a folder neither inside nor around {setting} {source}",
                              fix="an export never writes into (or replaces) the model it reads; pick another folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError("--output", str(output), "a new or empty folder", fix="pick another folder or pass --overwrite")
    return out


@contextmanager
def staged(output: Path) -> Iterator[Path]:
    """A temporary folder beside `output` that becomes `output` only if the block finishes: a failed export
    leaves nothing behind (and an earlier folder is replaced only by a complete one)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if output.exists():
        shutil.rmtree(output)
    work.rename(output)


def save_hf_folder(encoder: Bg2Vec, path: Path, flags: dict[str, Any]) -> None:
    """The merged decoder (adapters folded in), its tokenizer and bg2vec_config.json, with `flags` added to
    config.json (the switches the target runtime reads)."""
    save_merged_model(encoder.model, path)
    encoder.tokenizer.save_pretrained(path)
    portable_tokenizer_files(path)
    config_file = path / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(flags)
    write_json(config_file, config)
    write_json(path / "bg2vec_config.json", encoder.description())


def runtime_flags(config: Any) -> dict[str, Any]:
    """The config.json keys that make transformers, sentence-transformers and TEI attend both ways.

    Gemma 3 reads `use_bidirectional_attention` as EmbeddingGemma's switch: on load transformers turns a saved
    window S into S // 2 + 1 (`configuration_gemma3.py`), so bg2vec's window W (|i - j| <= W) is saved as
    2 (W - 1), which loads back as W."""
    flags: dict[str, Any] = {"is_causal": False}
    if config.model_type in BIDIRECTIONAL_SWITCH_FAMILIES:
        flags["use_bidirectional_attention"] = True
    if config.model_type in ("gemma3_text", "gemma3") and getattr(config, "sliding_window", None):
        flags["sliding_window"] = 2 * (config.sliding_window - 1)
    return flags


def hidden_size(encoder: Bg2Vec) -> int:
    return encoder.model.get_input_embeddings().weight.shape[1]


def instruction_prompts(prompts: dict[str, str] | None) -> dict[str, str]:
    """Named instructions as the runtimes' prompt strings: bg2vec's input is `instruction.strip() + " " + text`."""
    return {name: text.strip() + " " for name, text in (prompts or {}).items()}


def write_record(path: Path, encoder: Bg2Vec, target: str, runtime: dict[str, Any], prompts: dict[str, str],
                 instructions_pooled: bool, notes: list[str]) -> dict[str, Any]:
    """`bg2vec_export.json`: the target, what it reads, pooling, Matryoshka dims, instructions and caveats."""
    settings = encoder.settings
    record = {
        "bg2vec_version": __version__,
        "target": target,
        "base_model": encoder.name_or_path,
        "runtime": runtime,
        "pooling_mode": settings.pooling_mode,
        "skip_instruction": settings.skip_instruction,
        "max_length": settings.max_length,
        "embedding_dimension": hidden_size(encoder),
        "matryoshka_dims": settings.matryoshka_dims,
        "instructions": prompts,
        "instructions_pooled_by_runtime": instructions_pooled,
        "notes": notes,
    }
    write_json(path / EXPORT_RECORD, record)
    return record


def write_json(file: Path, data: Any) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def settings_table(encoder: Bg2Vec, prompts: dict[str, str]) -> str:
    """The Markdown rows every card shares: base, pooling, dims, instructions."""
    settings = encoder.settings
    dims = ", ".join(map(str, settings.matryoshka_dims)) if settings.matryoshka_dims else "(full vector only)"
    rows = [
        ("base model", f"`{encoder.name_or_path}`"),
        ("attention", "bidirectional"),
        ("pooling", f"`{settings.pooling_mode}`" + (" over the text's own tokens" if settings.skip_instruction else " over all tokens")),
        ("embedding dimension", str(hidden_size(encoder))),
        ("Matryoshka dims", dims),
        ("max_length", f"{settings.max_length} tokens"),
    ]
    lines = ["| setting | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    if prompts:
        lines += ["", "Instructions (bg2vec input: `instruction + \" \" + text`):", "", "| name | instruction |", "| --- | --- |",
                  *(f"| `{name}` | `{text}` |" for name, text in prompts.items())]
    return "\n".join(lines)
