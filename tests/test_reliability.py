"""Reliability round 3 (issue 19): what the bad-input suite did not reach, crossed with the commands it reaches.

Non-finite training and runs that cannot learn, outputs against the whole resolved input chain, overwriting only
what bg2vec wrote, concurrent runs (two real processes), resume mismatches, custom code, cache keys from user text,
relative references read from another directory, evaluation rows by task type, corrupt files, devices, a full disk
(a real tmpfs), interrupts. Each case asserts the exit status, one line naming the setting or file, what is left
on disk, and that every input is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bg2vec.cli import main
from test_bad_inputs import (  # noqa: F401  (inputs: the shared read-only world of models and data, a fixture)
    World, assert_one_error_line, config_argv, encode_argv, inputs, training_values, tree_hashes, write_run,
)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


def refused(argv: list[str], capsys, *words: str) -> str:
    """`argv` exits 2 with one error line holding `words`."""
    status, err = run_cli(argv, capsys)
    assert status == 2, err
    return assert_one_error_line(err, *words)


@pytest.fixture(scope="module")
def nan_adapter(inputs, tmp_path_factory) -> Path:
    """A copy of the MNTP output whose adapter is all NaN (what a diverged run saved before the guard)."""
    folder = tmp_path_factory.mktemp("nan") / "mntp-nan"
    shutil.copytree(inputs / "mntp-mistral", folder)
    weights = folder / "adapter_model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(weights)).items()}, str(weights))
    return folder


# --- 1. non-finite training, and runs that cannot learn ------------------------------------------------------


@pytest.mark.parametrize("change, words", [
    ({"torch_dtype": "float16", "learning_rate": 0.5}, ("at step 3", "nan", "learning_rate")),
    ({"learning_rate": 1e6}, ("gradient norm is 0", "since step 2", "learning_rate")),
], ids=["float16-overflow", "vanishing-gradient"])
def test_training_stops_at_the_first_bad_step_and_saves_no_adapter(change, words, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    values = {**training_values("mntp", World(inputs, out)), "max_steps": 6, "save_steps": 1, "logging_steps": 1, **change}
    before = tree_hashes(inputs)
    line = refused(["mntp", str(write_run(tmp_path, values))], capsys, "training stopped", *words)
    assert "last good checkpoint: " in line or "no checkpoint from before it" in line
    assert not (out / "adapter_model.safetensors").exists(), "a diverged run saves no final adapter"
    for checkpoint in out.glob("checkpoint-*"):
        assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "adapter_model.safetensors")).values())
    assert tree_hashes(inputs) == before


@pytest.mark.parametrize("change, words", [
    ({"num_train_epochs": 0, "max_steps": -1}, ("num_train_epochs", "> 0")),
    ({"lora_alpha": 0}, ("lora_alpha", "> 0")),
    ({"learning_rate": float("nan")}, ("learning_rate", "finite")),
    ({"learning_rate": -1}, ("learning_rate", "> 0")),
], ids=["zero-epochs", "lora-alpha-0", "lr-nan", "lr-negative"])
@pytest.mark.parametrize("command", ["mntp", "simcse", "supervised"])
def test_settings_that_train_nothing_are_refused_up_front(command, change, words, inputs, tmp_path, capsys):
    world = World(inputs, tmp_path / "out")
    refused(config_argv(command, world, change), capsys, *words)
    assert not world.out.exists()


def _triples(folder: Path, rows: list[dict]) -> str:
    path = folder / "triples.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("rows, batch, words", [
    ([{"query": f"q{i}", "positive": ""} for i in range(8)], 2, ("every positive is empty",)),
    ([{"query": f"q{i}", "positive": "същото"} for i in range(8)], 2, ("every positive is the same text",)),
    ([{"query": f"q{i}", "positive": f"p{i}"} for i in range(8)], 1, ("batches of 1", "per_device_train_batch_size")),
    ([{"query": f"q{i}", "positive": f"p{i}", "negative": f"p{i}"} for i in range(8)], 2, ("hard negative is the same text",)),
], ids=["empty-positives", "identical-positives", "batch-of-one", "negative-is-positive"])
def test_supervised_data_that_leaves_nothing_to_learn_is_refused(rows, batch, words, inputs, tmp_path, capsys):
    world = World(inputs, tmp_path / "out")
    change = {"dataset_file_path": _triples(tmp_path, rows), "per_device_train_batch_size": batch}
    refused(config_argv("supervised", world, change), capsys, "triples.jsonl", "nothing is learned", *words)
    assert not world.out.exists()


def test_a_non_string_instruction_is_named_by_file_and_line(inputs, tmp_path, capsys):
    rows = [{"query": "q", "positive": f"p{i}", **({"instruction": 7} if i == 2 else {})} for i in range(4)]
    world = World(inputs, tmp_path / "out")
    refused(config_argv("supervised", world, {"dataset_file_path": _triples(tmp_path, rows)}), capsys,
            "triples.jsonl:3", "instruction")
    assert not world.out.exists()


def test_non_finite_embeddings_are_refused_by_every_command_that_encodes(inputs, nan_adapter, tmp_path, capsys):
    before = tree_hashes(inputs)
    data = inputs / "data"
    refused(encode_argv(World(inputs, tmp_path / "emb"), model=str(nan_adapter)), capsys, "NaN or infinite embeddings", "40 of 40")
    assert not (tmp_path / "emb.npy").exists() and not list(tmp_path.glob("*.partial"))
    refused(["mine-negatives", "--model", str(nan_adapter), "--input", str(data / "triples.jsonl"),
             "--output", str(tmp_path / "mined.jsonl")], capsys, "NaN or infinite embeddings")
    assert not list(tmp_path.glob("*mined*"))
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.json").write_text(json.dumps({"name": "pairs", "type": "pair_classification"}))
    (task / "test.jsonl").write_text("".join(json.dumps({"sentence1": f"a{i}", "sentence2": f"b{i}", "label": i % 2}) + "\n"
                                             for i in range(6)))
    refused(["evaluate", "--model", str(nan_adapter), "--tasks", str(task), "--output-dir", str(tmp_path / "report"),
             "--no-cache"], capsys, "NaN or infinite embeddings")
    assert not (tmp_path / "report" / "evaluation.json").exists()
    assert tree_hashes(inputs) == before
