"""The llm2vec 0.2.3 side of the interchange tests: its own environment (transformers 4.44.2, peft 0.12.0),
built once by `make llm2vec-env` (make test does it), and a way to run a script there.

The tests using it run wherever `make test` runs, CI included, and never skip: a missing environment is a
failure that says how to build it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LLM2VEC_PYTHON = ROOT / ".venv-llm2vec" / "bin" / "python"


def run_llm2vec(script: str, *args: str, timeout: int = 600) -> None:
    """Run `script` (Python source) with llm2vec's interpreter; its stderr is shown if it fails."""
    if not LLM2VEC_PYTHON.exists():
        pytest.fail(f"{LLM2VEC_PYTHON} is missing: run `make llm2vec-env` (make test builds it)")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "HF_HUB_CACHE": os.environ["HF_HUB_CACHE"], "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([str(LLM2VEC_PYTHON), "-c", script, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"llm2vec side failed:\n{done.stderr[-4000:]}")


def transformers4_copy(folder: Path, workdir: Path) -> Path:
    """The folder as transformers 4.44 reads it: top-level rope_theta and torch_dtype, a known tokenizer class,
    BPE merges as "a b" strings."""
    copy = workdir / "for-llm2vec"
    copy.mkdir()
    for item in folder.iterdir():
        if item.name not in ("config.json", "tokenizer_config.json", "tokenizer.json"):
            (copy / item.name).symlink_to(item.resolve())
    config = json.loads((folder / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    config["torch_dtype"] = config.get("dtype", "float32")
    (copy / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    merges = tokenizer["model"].get("merges") or []
    tokenizer["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]  # tokenizers < 0.20
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config["model_input_names"] = ["input_ids", "attention_mask"]  # a decoder takes no token_type_ids
    (copy / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return copy
