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
    """A model folder written by transformers 5 (a test's tiny base), as bg2vec writes its own outputs: files that
    transformers 4.44 reads too (`bg2vec.models.portable_files`)."""
    import shutil

    from bg2vec.models.portable_files import portable_model_config, portable_tokenizer_files

    copy = workdir / "for-llm2vec"
    copy.mkdir()
    for item in folder.iterdir():
        if item.name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
            shutil.copy(item, copy / item.name)
        else:
            (copy / item.name).symlink_to(item.resolve())
    portable_model_config(copy)
    portable_tokenizer_files(copy)
    return copy
