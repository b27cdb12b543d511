"""The bad-input suite: every command crossed with every bad input a hostile but honest user gives.

Each case runs the real CLI entry point and asserts: exit status 2, exactly one error line (the last line of
stderr) naming the setting or file, no output left behind, and every input byte-identical afterwards (hashes
of the whole input tree). Interrupts, kills and truncated checkpoints are at the end of the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

from bg2vec.cli import main

COMMANDS = ("prepare", "mntp", "simcse", "supervised", "encode")
TEXTS = [f"{i}. Изречение номер {i}: София, Пловдив и Варна са градове в България." for i in range(40)]


@dataclass
class World:
    """The inputs every case reads (hashed before and after), and a fresh place for its output."""

    root: Path  # every input lives under here
    out: Path  # the case's output path (must not exist afterwards unless the case says so)

    def path(self, name: str) -> str:
        return str(self.root / name)


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def inputs(tiny_model_dirs, tmp_path_factory) -> Path:
    """Models, an MNTP output, good and bad data files: a read-only world for the cases."""
    root = tmp_path_factory.mktemp("world")
    for arch in ("mistral", "llama"):
        shutil.copytree(tiny_model_dirs[arch], root / arch)
    (root / "data").mkdir()
    write = lambda name, text: (root / "data" / name).write_text(text, encoding="utf-8")  # noqa: E731
    write("train.txt", "\n".join(TEXTS) + "\n")
    write("texts.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    write("short.txt", "Една кратка история.\nИ още една.\n")
    write("three.txt", "Първо.\nВторо.\nТрето.\n")
    write("blank.txt", "\n   \n\n")
    write("empty.txt", "")
    write("bad.jsonl", json.dumps({"text": TEXTS[0]}) + "\n{not json\n")
    write("fake.txt.gz", "this is not gzip data\n")
    write("pairs-without-scores.tsv", "sentence1\tsentence2\nа\tб\n")
    write("triples.jsonl", "".join(json.dumps({"query": f"Въпрос {i}?", "positive": t, "negative": TEXTS[i - 1]},
                                              ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)))
    (root / "data" / "bad-utf8.txt").write_bytes("добро\n".encode() + b"ok \xff bad\n")
    (root / "data" / "folder").mkdir()
    (root / "unknown-model").mkdir()
    (root / "unknown-model" / "notes.txt").write_text("not a model")
    (root / "model-file.bin").write_bytes(b"\0" * 64)
    # an MNTP output trained on mistral: the SimCSE input
    assert main(["mntp", "--model_name_or_path", str(root / "mistral"), "--train_file", str(root / "data/train.txt"),
                 "--output_dir", str(root / "mntp-mistral"), "--max_seq_length", "16", "--max_steps", "1",
                 "--per_device_train_batch_size", "2", "--do_eval", "false", "--save_steps", "1000"]) == 0
    foreign = root / "foreign-results"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("earlier results that bg2vec did not write")
    return root


def unwritable_path() -> str:
    """A folder nobody (root included) can create here."""
    if os.geteuid() == 0:
        return "/sys/bg2vec-cannot-create/out"
    return "/proc/bg2vec-cannot-create/out"


# --- how each command is called, with one setting changed ------------------------------------------------------


def training_values(command: str, w: World) -> dict:
    values = dict(
        model_name_or_path=w.path("mistral"), train_file=w.path("data/train.txt"), output_dir=str(w.out),
        max_seq_length=16, max_steps=1, per_device_train_batch_size=2, do_eval=False, save_steps=1000,
    )
    if command in ("simcse", "supervised"):
        values["peft_model_name_or_path"] = w.path("mntp-mistral")
    if command == "supervised":
        values["dataset_file_path"] = values.pop("train_file").replace("train.txt", "triples.jsonl")
    return values


def config_argv(command: str, w: World, change: dict | None = None, raw: str | None = None, extra=()) -> list[str]:
    """`bg2vec COMMAND run.json`: the config is the command's good one with `change` applied (None drops a key)."""
    config = w.out.parent / "run.json"
    values = training_values(command, w)
    for key, value in (change or {}).items():
        if isinstance(value, str):  # "{root}/..." paths of the shared inputs, and the unwritable place
            value = unwritable_path() if value == "UNWRITABLE" else value.replace("{root}", str(w.root))
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    config.write_text(raw if raw is not None else json.dumps(values), encoding="utf-8")
    return [command, str(config), *extra]


def prepare_argv(w: World, inputs=None, **options) -> list[str]:
    values = {"--model": w.path("mistral"), "--output": str(w.out), "--max-seq-length": "16"}
    values.update({"--" + k.replace("_", "-"): v for k, v in options.items()})
    argv = ["prepare", *(inputs or [w.path("data/train.txt")])]
    for key, value in values.items():
        argv += [key] if value is True else [key, str(value)]
    return argv


def encode_argv(w: World, **options) -> list[str]:
    values = {"--model": w.path("mistral"), "--input": w.path("data/train.txt"), "--output": str(w.out) + ".npy"}
    values.update({"--" + k.replace("_", "-"): v for k, v in options.items()})
    argv = ["encode"]
    for key, value in values.items():
        if value is not None:
            argv += [key, str(value)]
    return argv


# --- the bad inputs: for each, every command it applies to, its arguments, and the words the error must hold --

Build = Callable[[World], list[str]]
BAD_INPUTS: dict[str, dict[str, tuple[Build, tuple[str, ...]]]] = {
    "malformed JSON config": {
        c: (lambda w, c=c: config_argv(c, w, raw="{not json"), ("config file", "run.json")) for c in ("mntp", "simcse")
    },
    "list JSON config": {
        c: (lambda w, c=c: config_argv(c, w, raw="[1, 2]"), ("config file", "JSON object")) for c in ("mntp", "simcse")
    },
    "missing config file": {
        c: (lambda w, c=c: [c, str(w.out.parent / "no-such.json")], ("config file", "no-such.json")) for c in ("mntp", "simcse")
    },
    "wrong type": {
        "prepare": (lambda w: prepare_argv(w, max_seq_length="long"), ("--max-seq-length", "invalid int")),
        "mntp": (lambda w: config_argv("mntp", w, {"lora_r": "big"}), ("lora_r", "big")),
        "simcse": (lambda w: config_argv("simcse", w, {"learning_rate": [1]}), ("learning_rate",)),
        "encode": (lambda w: encode_argv(w, batch_size="many"), ("--batch-size", "invalid int")),
    },
    "out-of-range value": {
        "prepare": (lambda w: prepare_argv(w, max_seq_length=1), ("max_seq_length", "at least 2")),
        "mntp": (lambda w: config_argv("mntp", w, {"mlm_probability": 1.5}), ("mlm_probability", "(0, 1]")),
        "simcse": (lambda w: config_argv("simcse", w, {"simcse_dropout": 1.5}), ("simcse_dropout", "[0, 1)")),
        "encode": (lambda w: encode_argv(w, batch_size=0), ("batch_size", "positive")),
    },
    "unknown key": {
        "prepare": (lambda w: prepare_argv(w, lora_rank=8), ("unrecognized arguments", "--lora-rank")),
        "mntp": (lambda w: config_argv("mntp", w, {"lora_rank": 8}), ("lora_rank",)),
        "simcse": (lambda w: config_argv("simcse", w, {"lora_rank": 8}), ("lora_rank",)),
        "encode": (lambda w: encode_argv(w) + ["--lora-rank", "8"], ("unrecognized arguments", "--lora-rank")),
    },
    "missing model": {
        "prepare": (lambda w: prepare_argv(w, model=w.path("no-such-model")), ("model_name_or_path", "no-such-model")),
        "mntp": (lambda w: config_argv("mntp", w, {"model_name_or_path": w.path("no-such-model")}), ("model_name_or_path", "no-such-model")),
        "simcse": (lambda w: config_argv("simcse", w, {"model_name_or_path": w.path("no-such-model")}), ("model_name_or_path", "no-such-model")),
        "encode": (lambda w: encode_argv(w, model=w.path("no-such-model")), ("no-such-model",)),
    },
    "model is a file": {
        "prepare": (lambda w: prepare_argv(w, model=w.path("model-file.bin")), ("model_name_or_path", "model-file.bin")),
        "mntp": (lambda w: config_argv("mntp", w, {"model_name_or_path": w.path("model-file.bin")}), ("model_name_or_path", "model-file.bin")),
        "simcse": (lambda w: config_argv("simcse", w, {"model_name_or_path": w.path("model-file.bin")}), ("model_name_or_path", "model-file.bin")),
        "encode": (lambda w: encode_argv(w, model=w.path("model-file.bin")), ("model-file.bin",)),
    },
    "folder of no known model layout": {
        "prepare": (lambda w: prepare_argv(w, model=w.path("unknown-model")), ("unknown-model",)),
        "mntp": (lambda w: config_argv("mntp", w, {"model_name_or_path": w.path("unknown-model")}), ("model_name_or_path", "notes.txt")),
        "simcse": (lambda w: config_argv("simcse", w, {"model_name_or_path": w.path("unknown-model")}), ("model_name_or_path", "notes.txt")),
        "encode": (lambda w: encode_argv(w, model=w.path("unknown-model")), ("unknown-model", "notes.txt")),
    },
    "adapter for another base": {
        "simcse": (lambda w: config_argv("simcse", w, {"model_name_or_path": w.path("llama")}), ("llama", "mistral")),
        "encode": (lambda w: encode_argv(w, model=w.path("llama"), adapter=w.path("mntp-mistral")), ("llama", "mistral")),
    },
    "missing data file": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/none.txt")]), ("inputs", "none.txt")),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/none.txt")}), ("train_file", "none.txt")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/none.txt")}), ("train_file", "none.txt")),
        "encode": (lambda w: encode_argv(w, input=w.path("data/none.txt")), ("--input", "none.txt")),
    },
    "data is an empty folder": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/folder")]), ("inputs", "folder")),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/folder")}), ("train_file", "folder")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/folder")}), ("train_file", "folder")),
        "encode": (lambda w: encode_argv(w, input=w.path("data/folder")), ("--input", "folder")),
    },
    "non-UTF-8 data": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/bad-utf8.txt")]), ("bad-utf8.txt", "byte 14")),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/bad-utf8.txt")}), ("bad-utf8.txt", "byte 14")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/bad-utf8.txt")}), ("bad-utf8.txt", "byte 14")),
        "encode": (lambda w: encode_argv(w, input=w.path("data/bad-utf8.txt")), ("bad-utf8.txt", "byte 14")),
    },
    "empty data file": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/empty.txt")]), ("no block",)),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/empty.txt")}), ("train_file", "empty.txt", "no text")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/empty.txt")}), ("train_file", "empty.txt", "no text")),
        "encode": (lambda w: encode_argv(w, input=w.path("data/empty.txt")), ("empty.txt", "no texts")),
    },
    "blank lines only": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/blank.txt")]), ("no block",)),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/blank.txt")}), ("train_file", "blank.txt", "no text")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/blank.txt")}), ("train_file", "blank.txt", "no text")),
    },
    "fake compressed file": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/fake.txt.gz")]), ("fake.txt.gz", "cannot be read")),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/fake.txt.gz")}), ("fake.txt.gz", "cannot be read")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/fake.txt.gz")}), ("fake.txt.gz", "cannot be read")),
        "encode": (lambda w: encode_argv(w, input=w.path("data/fake.txt.gz")), ("--input", "fake.txt.gz")),
    },
    "bad JSON line": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/bad.jsonl")]), ("bad.jsonl", "2")),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/bad.jsonl")}), ("bad.jsonl", "2")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/bad.jsonl")}), ("bad.jsonl", "2")),
        "encode": (lambda w: encode_argv(w, input=w.path("data/bad.jsonl")), ("bad.jsonl:2", "not JSON")),
    },
    "wrong text column": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/texts.jsonl")], text_column="body"), ("text_column", "body")),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/texts.jsonl"), "text_column": "body"}), ("text_column", "body")),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/texts.jsonl"), "text_column": "body"}), ("text_column", "body")),
    },
    "too little data": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/short.txt")], max_seq_length=256), ("no block", "max_seq_length")),
        "mntp": (lambda w: config_argv("mntp", w, {"train_file": w.path("data/short.txt"), "max_seq_length": 256}), ("max_seq_length",)),
        "simcse": (lambda w: config_argv("simcse", w, {"train_file": w.path("data/three.txt"), "per_device_train_batch_size": 8}),
                   ("per_device_train_batch_size", "fewer than one batch")),
    },
    "existing output": {
        "prepare": (lambda w: prepare_argv(w, output=w.path("foreign-results")), ("output", "--overwrite")),
        "mntp": (lambda w: config_argv("mntp", w, {"output_dir": w.path("foreign-results")}), ("output_dir", "overwrite_output_dir")),
        "simcse": (lambda w: config_argv("simcse", w, {"output_dir": w.path("foreign-results")}), ("output_dir", "overwrite_output_dir")),
    },
    "overwriting a folder bg2vec did not write": {
        "prepare": (lambda w: prepare_argv(w, output=w.path("foreign-results"), overwrite=True), ("output", "keep.txt")),
        "mntp": (lambda w: config_argv("mntp", w, {"output_dir": w.path("foreign-results"), "overwrite_output_dir": True}),
                 ("output_dir", "keep.txt")),
        "simcse": (lambda w: config_argv("simcse", w, {"output_dir": w.path("foreign-results"), "overwrite_output_dir": True}),
                   ("output_dir", "keep.txt")),
    },
    "output is a file": {
        "prepare": (lambda w: prepare_argv(w, output=w.path("data/three.txt")), ("output", "not a file")),
        "mntp": (lambda w: config_argv("mntp", w, {"output_dir": w.path("data/three.txt")}), ("output_dir", "not a file")),
        "simcse": (lambda w: config_argv("simcse", w, {"output_dir": w.path("data/three.txt")}), ("output_dir", "not a file")),
    },
    "output is an input": {
        "prepare": (lambda w: prepare_argv(w, inputs=[w.path("data/folder")], output=w.path("data/folder")), ("output", "inputs[0]")),
        "mntp": (lambda w: config_argv("mntp", w, {"output_dir": w.path("mistral"), "overwrite_output_dir": True}),
                 ("output_dir", "model_name_or_path")),
        "simcse": (lambda w: config_argv("simcse", w, {"output_dir": w.path("mntp-mistral"), "overwrite_output_dir": True}),
                   ("output_dir", "peft_model_name_or_path")),
        "encode": (lambda w: encode_argv(w, input=w.path("data/texts.jsonl"), output=w.path("data/texts.jsonl")), ("--output",)),
    },
    "output inside an input": {
        "prepare": (lambda w: prepare_argv(w, output=w.path("mistral/blocks")), ("output", "lies inside", "model_name_or_path")),
        "mntp": (lambda w: config_argv("mntp", w, {"output_dir": w.path("mistral/mntp")}), ("output_dir", "lies inside", "model_name_or_path")),
        "simcse": (lambda w: config_argv("simcse", w, {"output_dir": w.path("mntp-mistral/simcse")}),
                   ("output_dir", "lies inside", "peft_model_name_or_path")),
        "encode": (lambda w: encode_argv(w, output=w.path("mistral/embeddings.npy")), ("--output", "lies inside", "--model")),
    },
    "output holds an input": {
        "prepare": (lambda w: prepare_argv(w, output=w.path("data"), overwrite=True), ("output",)),
        "mntp": (lambda w: config_argv("mntp", w, {"output_dir": w.path("data"), "overwrite_output_dir": True}), ("output_dir",)),
        "simcse": (lambda w: config_argv("simcse", w, {"output_dir": w.path("data"), "overwrite_output_dir": True}), ("output_dir",)),
    },
    "output cannot be created": {
        "prepare": (lambda w: prepare_argv(w, output=unwritable_path()), ("output", "bg2vec-cannot-create")),
        "mntp": (lambda w: config_argv("mntp", w, {"output_dir": unwritable_path()}), ("output_dir", "bg2vec-cannot-create")),
        "simcse": (lambda w: config_argv("simcse", w, {"output_dir": unwritable_path()}), ("output_dir", "bg2vec-cannot-create")),
        "encode": (lambda w: encode_argv(w, output=unwritable_path() + ".npy"), ("--output", "bg2vec-cannot-create")),
    },
    "resume without a checkpoint": {
        c: (lambda w, c=c: config_argv(c, w, extra=["--resume"]), ("resume", "checkpoint")) for c in ("mntp", "simcse")
    },
    "pair file without scores": {
        "simcse": (lambda w: config_argv("simcse", w, {"eval_pairs_file": w.path("data/pairs-without-scores.tsv")}),
                   ("pairs-without-scores.tsv", "score")),
    },
}
def _supervised(change: dict | None = None, words: tuple[str, ...] = (), **kwargs) -> tuple[Build, tuple[str, ...]]:
    return (lambda w: config_argv("supervised", w, change, **kwargs)), words


# `bg2vec supervised` meets every kind the other training commands meet (its data is a triples file)
SUPERVISED_CASES = {
    "malformed JSON config": _supervised(raw="{not json", words=("config file", "run.json")),
    "list JSON config": _supervised(raw="[1, 2]", words=("config file", "JSON object")),
    "wrong type": _supervised({"lora_r": "big"}, ("lora_r", "big")),
    "out-of-range value": _supervised({"hard_negative_weight": -1}, ("hard_negative_weight",)),
    "unknown key": _supervised({"lora_rank": 8}, ("lora_rank",)),
    "missing model": _supervised({"model_name_or_path": "{root}/no-such-model"}, ("model_name_or_path", "no-such-model")),
    "model is a file": _supervised({"model_name_or_path": "{root}/model-file.bin"}, ("model_name_or_path", "model-file.bin")),
    "folder of no known model layout": _supervised({"model_name_or_path": "{root}/unknown-model"}, ("model_name_or_path", "notes.txt")),
    "adapter for another base": _supervised({"model_name_or_path": "{root}/llama"}, ("llama", "mistral")),
    "missing data file": _supervised({"dataset_file_path": "{root}/data/none.jsonl"}, ("dataset_file_path", "none.jsonl")),
    "data is an empty folder": _supervised({"dataset_file_path": "{root}/data/folder"}, ("dataset_file_path", "folder")),
    "non-UTF-8 data": _supervised({"dataset_file_path": "{root}/data/bad-utf8.txt"}, ("bad-utf8.txt", "byte 14")),
    "empty data file": _supervised({"dataset_file_path": "{root}/data/empty.txt"}, ("dataset_file_path", "no rows")),
    "bad JSON line": _supervised({"dataset_file_path": "{root}/data/bad.jsonl"}, ("bad.jsonl:1", "query")),
    "too little data": _supervised({"per_device_train_batch_size": 64}, ("per_device_train_batch_size",)),
    "existing output": _supervised({"output_dir": "{root}/foreign-results"}, ("output_dir", "overwrite_output_dir")),
    "overwriting a folder bg2vec did not write": _supervised(
        {"output_dir": "{root}/foreign-results", "overwrite_output_dir": True}, ("output_dir", "keep.txt")),
    "output is a file": _supervised({"output_dir": "{root}/data/three.txt"}, ("output_dir", "not a file")),
    "output is an input": _supervised({"output_dir": "{root}/mntp-mistral", "overwrite_output_dir": True},
                                      ("output_dir", "peft_model_name_or_path")),
    "output inside an input": _supervised({"output_dir": "{root}/mntp-mistral/sup"}, ("output_dir", "lies inside")),
    "output cannot be created": _supervised({"output_dir": "UNWRITABLE"}, ("output_dir", "bg2vec-cannot-create")),
    "resume without a checkpoint": _supervised(extra=["--resume"], words=("resume", "checkpoint")),
}
for _kind, _case in SUPERVISED_CASES.items():
    BAD_INPUTS[_kind]["supervised"] = _case
CASES = [(kind, command) for kind, by_command in BAD_INPUTS.items() for command in COMMANDS if command in by_command]


def assert_one_error_line(err: str, *words: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("kind, command", CASES, ids=[f"{c}-{k.replace(' ', '_')}" for k, c in CASES])
def test_bad_input(kind, command, inputs, tmp_path, capsys):
    world = World(inputs, tmp_path / "out")
    build, words = BAD_INPUTS[kind][command]
    argv = build(world)
    before = tree_hashes(inputs)
    with pytest.raises(SystemExit) if _argparse_case(kind, command) else _no_exit() as exited:
        status = main(argv)
    if exited is not None:
        status = exited.value.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert_one_error_line(err, *words)
    assert tree_hashes(inputs) == before, "an input changed"
    assert not world.out.exists() and not Path(str(world.out) + ".npy").exists(), "nothing may be written on bad input"
    assert not list(inputs.rglob(".partial-*")) and not list(inputs.rglob(".bg2vec-probe-*"))


def _argparse_case(kind: str, command: str) -> bool:
    """argparse reports its own errors (usage + one error line) by exiting 2."""
    return command in ("prepare", "encode") and kind in ("wrong type", "unknown key")


class _no_exit:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_every_command_meets_every_kind_it_can():
    """The matrix is complete: each command is crossed with the bad inputs that can reach it."""
    per_command = {c: [k for k, by in BAD_INPUTS.items() if c in by] for c in COMMANDS}
    assert {c: len(kinds) for c, kinds in per_command.items()} == {"prepare": 22, "mntp": 26, "simcse": 28, "supervised": 22, "encode": 16}
    assert not [k for k, by in BAD_INPUTS.items() if not by], "every kind reaches a command"


# --- interrupts, kills and damaged checkpoints ---------------------------------------------------------------

# Runs the CLI in a child process, each training step slowed (so a signal lands mid-run), optionally killing
# itself with SIGKILL in the middle of writing checkpoint KILL_IN_CHECKPOINT (after the adapter and optimizer,
# before the trainer state): what a power cut or the OOM killer does.
WORKER = """
import os, signal, sys, time
import transformers
from bg2vec.recipes.trainer import AdapterTrainer

step = AdapterTrainer.training_step
def slow_step(self, *args, **kwargs):
    time.sleep(float(os.environ.get("STEP_SLEEP", "0")))
    if os.environ.get("STEP_FILE"):  # tells the test that training is under way
        open(os.environ["STEP_FILE"], "w").write(str(self.state.global_step))
    return step(self, *args, **kwargs)
AdapterTrainer.training_step = slow_step

save_rng = transformers.Trainer._save_rng_state
def save_rng_or_die(self, output_dir):
    if self.state.global_step == int(os.environ.get("KILL_IN_CHECKPOINT", "-1")):
        os.kill(os.getpid(), signal.SIGKILL)
    return save_rng(self, output_dir)
transformers.Trainer._save_rng_state = save_rng_or_die

from bg2vec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def last_line(err: str) -> str:
    """The last line of stderr, progress bars' carriage returns counted as line ends."""
    return [line for line in re.split(r"[\r\n]+", err) if line.strip()][-1]


def start_worker(tmp_path: Path, argv: list[str], **env: str) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.Popen([sys.executable, str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def kill_run_values(inputs: Path, output_dir: Path, **changes) -> dict:
    values = dict(
        model_name_or_path=str(inputs / "mistral"), train_file=str(inputs / "data/train.txt"), output_dir=str(output_dir),
        max_seq_length=16, per_device_train_batch_size=4, max_steps=8, save_steps=1, logging_steps=1, do_eval=False,
        learning_rate=1e-2, lora_r=4, data_collator_type="all_mask", mlm_probability=0.5, seed=3,
    )
    values.update(changes)
    return values


def write_run(folder: Path, values: dict) -> Path:
    config = folder / f"{Path(values['output_dir']).name}.json"
    config.write_text(json.dumps(values))
    return config


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The adapter of the same MNTP run, never stopped."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    assert main(["mntp", str(write_run(folder, kill_run_values(inputs, folder / "whole")))]) == 0
    return load_file(str(folder / "whole" / "adapter_model.safetensors"))


def assert_same_adapter(folder: Path, expected: dict[str, torch.Tensor]) -> None:
    got = load_file(str(folder / "adapter_model.safetensors"))
    assert got.keys() == expected.keys()
    for key in got:
        assert torch.allclose(got[key], expected[key], atol=1e-6), key


def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(inputs, uninterrupted, tmp_path, capsys):
    out = tmp_path / "killed"
    config = write_run(tmp_path, kill_run_values(inputs, out))
    step = random.randint(2, 6)
    process = start_worker(tmp_path, ["mntp", str(config)], STEP_SLEEP="0.3")
    wait_for(out / f"checkpoint-{step}", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "adapter_model.safetensors").exists(), f"killed after step {step}, before the end"
    capsys.readouterr()
    assert main(["mntp", str(config), "--resume"]) == 0, f"killed after checkpoint-{step}"
    assert "resuming from" in capsys.readouterr().out
    assert_same_adapter(out, uninterrupted)
    assert not list(out.glob(".partial-*"))


def test_kill_while_writing_a_checkpoint_leaves_none_that_looks_complete(inputs, uninterrupted, tmp_path, capsys):
    out = tmp_path / "killed-in-write"
    config = write_run(tmp_path, kill_run_values(inputs, out))
    process = start_worker(tmp_path, ["mntp", str(config)], KILL_IN_CHECKPOINT="4")
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert (out / "checkpoint-3").is_dir() and not (out / "checkpoint-4").exists()
    assert (out / ".partial-checkpoint-4").is_dir(), "the write was under way when the process died"
    assert main(["mntp", str(config), "--resume"]) == 0
    assert f"resuming from {out / 'checkpoint-3'}" in capsys.readouterr().out
    assert_same_adapter(out, uninterrupted)
    assert not list(out.glob(".partial-*")), "the half-written checkpoint is replaced"


def test_a_truncated_last_checkpoint_is_named_and_the_previous_one_used(inputs, uninterrupted, tmp_path, capsys):
    out = tmp_path / "truncated"
    config = write_run(tmp_path, kill_run_values(inputs, out, save_steps=2))
    assert main(["mntp", str(config), "--stop_after_n_steps", "4"]) == 0
    optimizer = out / "checkpoint-4" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    capsys.readouterr()

    assert main(["mntp", str(config), "--resume", str(out / "checkpoint-4")]) == 2
    assert_one_error_line(capsys.readouterr().err, "checkpoint-4", "optimizer.pt", "truncated")

    assert main(["mntp", str(config), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "checkpoint-4 is incomplete (optimizer.pt: truncated" in said
    assert f"resuming from {out / 'checkpoint-2'}" in said
    assert_same_adapter(out, uninterrupted)


def test_resume_with_every_checkpoint_damaged_is_one_line(inputs, tmp_path, capsys):
    out = tmp_path / "all-damaged"
    config = write_run(tmp_path, kill_run_values(inputs, out, save_steps=2))
    assert main(["mntp", str(config), "--stop_after_n_steps", "2"]) == 0
    (out / "checkpoint-2" / "trainer_state.json").write_text("{trunc")
    capsys.readouterr()
    assert main(["mntp", str(config), "--resume"]) == 2
    assert_one_error_line(capsys.readouterr().err, "resume", "damaged")


@pytest.mark.parametrize("command", ["mntp", "simcse", "supervised"])
def test_ctrl_c_prints_where_it_stopped_and_how_to_resume(command, inputs, tmp_path):
    out = tmp_path / f"{command}-interrupted"
    values = {**training_values(command, World(inputs, out)), "max_steps": 400, "save_steps": 2}
    config = write_run(tmp_path, values)
    process = start_worker(tmp_path, [command, str(config)], STEP_SLEEP="0.05")
    wait_for(out / "checkpoint-2", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    line = last_line(err)
    assert line.startswith(f"bg2vec {command}: interrupted at step ") and " of 400" in line, line
    assert f"last checkpoint: {out}/checkpoint-" in line
    assert line.endswith(f"resume with: bg2vec {command} {config} --resume"), line


def test_sigterm_before_the_first_checkpoint_leaves_nothing(inputs, tmp_path):
    out = tmp_path / "terminated"
    config = write_run(tmp_path, {**training_values("mntp", World(inputs, out)), "max_steps": 400, "save_steps": 1000,
                                  "logging_steps": 1})
    process = start_worker(tmp_path, ["mntp", str(config)], STEP_SLEEP="0.05", STEP_FILE=str(tmp_path / "step"))
    wait_for(tmp_path / "step", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "before the first checkpoint; nothing was kept" in last_line(err), err
    assert not out.exists()


def test_overwriting_a_bg2vec_output_replaces_its_old_checkpoints(inputs, tmp_path):
    out = tmp_path / "again"
    config = write_run(tmp_path, kill_run_values(inputs, out, max_steps=2, save_steps=2))
    assert main(["mntp", str(config)]) == 0
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-50")  # an earlier, longer run's
    assert main(["mntp", str(config), "--overwrite_output_dir", "true"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


@pytest.mark.parametrize("command", ["mntp", "simcse", "supervised"])
def test_max_seq_length_beyond_the_positions_is_capped_with_a_warning(command, inputs, tmp_path, capsys):
    out = tmp_path / "capped"
    config = write_run(tmp_path, {**training_values(command, World(inputs, out)), "max_seq_length": 1000})
    assert main([command, str(config)]) == 0
    assert "max_seq_length=1000 is more than the model's 512 positions" in capsys.readouterr().out
    saved = json.loads((out / "bg2vec_config.json").read_text())
    assert saved["training_config"]["max_seq_length"] == 512


def test_encode_caps_max_length_at_the_positions(inputs, tmp_path):
    with pytest.warns(UserWarning, match="max_length=4096 is more than the model's 512 positions"):
        status = main(encode_argv(World(inputs, tmp_path / "emb"), max_length=4096))
    assert status == 0


def test_no_deprecation_noise(inputs, tmp_path):
    """Training (gradient checkpointing on) and encoding print none of transformers' renamed-option warnings."""
    out = tmp_path / "quiet"
    config = write_run(tmp_path, {**training_values("mntp", World(inputs, out)), "gradient_checkpointing": True})
    trained = subprocess.run([sys.executable, "-m", "bg2vec.cli", "mntp", str(config)], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert trained.returncode == 0, trained.stderr
    encoded = subprocess.run([sys.executable, "-m", "bg2vec.cli", *encode_argv(World(inputs, tmp_path / "emb"), model=str(out))],
                             capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert encoded.returncode == 0, encoded.stderr
    for done in (trained, encoded):
        assert "FutureWarning" not in done.stderr and "deprecated" not in done.stderr, done.stderr
