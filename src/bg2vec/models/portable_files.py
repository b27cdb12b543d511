"""config.json and tokenizer files that transformers 4.44 (llm2vec 0.2.3's pin) reads as transformers 5 does.

transformers 5 writes three things that transformers 4.x misreads or refuses:

- `rope_parameters: {rope_theta, rope_type, ...}` instead of a top-level `rope_theta` (4.x silently falls back to
  10,000: BgGPT's is 1,000,000) and `dtype` instead of `torch_dtype`. `portable_model_config` adds the old keys
  next to the new ones; transformers 5 reads the file as before.
- tokenizer.json BPE merges as pairs (`["a", "b"]`), which tokenizers < 0.20 cannot parse; written back as
  "a b" strings, which every tokenizers version reads, when no merged token contains a space.
- `tokenizer_class: "TokenizersBackend"`, a class 4.x does not have; written as "PreTrainedTokenizerFast" (the
  same tokenizer.json-backed class in both), with `model_input_names` so 4.x adds no `token_type_ids`.

bg2vec applies both to every folder it writes with these files (MNTP outputs, checkpoints, SimCSE and
supervised outputs, sentence-transformers exports); a test loads them with llm2vec's own environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend",)  # transformers 5's names for a plain tokenizer.json tokenizer


def portable_model_config(folder: str | Path) -> None:
    """Add transformers 4.x's keys (`rope_theta`, `rope_scaling`, `torch_dtype`) to `folder`/config.json."""
    file = Path(folder) / "config.json"
    config = _read(file)
    for part in [config, *(v for v in config.values() if isinstance(v, dict) and "model_type" in v)]:
        _add_old_keys(part)  # the config itself and any sub-config (a multimodal text_config)
    _write(file, config)


def _add_old_keys(config: dict[str, Any]) -> None:
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":  # 4.x reads scaled RoPE from rope_scaling
            config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])


def portable_tokenizer_files(folder: str | Path) -> None:
    """Rewrite `folder`'s tokenizer.json merges and tokenizer_config.json class so transformers 4.44 reads them."""
    folder = Path(folder)
    tokenizer_file = folder / "tokenizer.json"
    if tokenizer_file.is_file():
        tokenizer = _read(tokenizer_file)
        model = tokenizer.get("model") or {}
        merges = model.get("merges")
        if merges and all(isinstance(m, list) and len(m) == 2 and " " not in m[0] + m[1] for m in merges):
            model["merges"] = [f"{left} {right}" for left, right in merges]
            _write(tokenizer_file, tokenizer)
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        config = _read(config_file)
        if config.get("tokenizer_class") in GENERIC_TOKENIZER_CLASSES:
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
            config.setdefault("model_input_names", ["input_ids", "attention_mask"])
            _write(config_file, config)


def _read(file: Path) -> dict[str, Any]:
    return json.loads(file.read_text(encoding="utf-8"))


def _write(file: Path, data: dict[str, Any]) -> None:
    file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
