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

import bg2vec
from bg2vec.cli import main
from test_bad_inputs import (  # noqa: F401  (inputs: the shared read-only world of models and data, a fixture)
    TEXTS, World, assert_one_error_line, config_argv, encode_argv, inputs, start_worker, training_values, tree_hashes, wait_for,
    write_run,
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


# --- 2. outputs never destroy inputs ------------------------------------------------------------------------


def test_mine_negatives_never_writes_into_the_model_it_loads(inputs, tmp_path, capsys):
    before = tree_hashes(inputs)
    mine = ["mine-negatives", "--model", str(inputs / "mntp-mistral"), "--input", str(inputs / "data/triples.jsonl")]
    refused([*mine, "--output", str(inputs / "mntp-mistral/bg2vec_config.json"), "--overwrite"], capsys, "--output", "--model")
    refused([*mine, "--output", str(inputs / "mistral/x.jsonl")], capsys, "--output", "lies inside", "base weights")
    refused([*mine, "--output", str(tmp_path / "missing/x.jsonl")], capsys, "--output", "existing folder")
    assert tree_hashes(inputs) == before and not (inputs / "mistral/x.jsonl").exists()


def test_evaluate_checks_its_output_and_cache_against_the_whole_chain(inputs, tmp_path, capsys):
    before = tree_hashes(inputs)
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.json").write_text(json.dumps({"name": "t", "type": "hard_triples"}))
    (task / "test.jsonl").write_text(json.dumps({"anchor": "a", "positive": "b", "negative": "c"}) + "\n")
    evaluate = ["evaluate", "--model", str(inputs / "mntp-mistral"), "--tasks", str(task)]
    # the MNTP output's recorded base is an input too, though only the MNTP folder was named
    refused([*evaluate, "--output-dir", str(inputs / "mistral/report")], capsys, "--output-dir", "lies inside", "base weights")
    refused([*evaluate, "--output-dir", str(tmp_path / "r"), "--cache-dir", str(inputs / "mntp-mistral/cache")], capsys,
            "--cache-dir", "lies inside")
    assert tree_hashes(inputs) == before and not (tmp_path / "r").exists()


def test_encode_needs_overwrite_to_replace_an_existing_file(inputs, tmp_path, capsys):
    world = World(inputs, tmp_path / "emb")
    existing = tmp_path / "emb.npy"
    existing.write_bytes(b"earlier embeddings")
    refused(encode_argv(world), capsys, "--output", "--overwrite")
    assert existing.read_bytes() == b"earlier embeddings"
    assert main(encode_argv(world) + ["--overwrite"]) == 0
    assert existing.read_bytes() != b"earlier embeddings"


def test_overwriting_deletes_only_what_bg2vec_wrote(inputs, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "evaluation.json").write_text("{}")  # another command's output: the folder is bg2vec's
    (out / "analysis.py").write_text("print('mine')")
    (out / "my-analysis").mkdir()
    (out / "my-analysis" / "notes.txt").write_text("mine too")
    config = write_run(tmp_path, {**training_values("mntp", World(inputs, out)), "overwrite_output_dir": True})
    assert main(["mntp", str(config)]) == 0
    assert (out / "analysis.py").read_text() == "print('mine')" and (out / "my-analysis" / "notes.txt").is_file()
    assert (out / "adapter_model.safetensors").is_file() and not (out / "evaluation.json").exists()
    (out / "later.txt").write_text("written after the run")
    assert main(["mntp", str(config)]) == 0  # again: the record says what the first run wrote
    assert {p.name for p in out.iterdir()} >= {"analysis.py", "my-analysis", "later.txt", "adapter_model.safetensors"}
    capsys.readouterr()


def test_prepare_never_replaces_what_appeared_at_its_output_while_it_ran(inputs, tmp_path, capsys, monkeypatch):
    from datasets import DatasetDict

    out = tmp_path / "blocks"
    save = DatasetDict.save_to_disk

    def someone_writes_meanwhile(self, path, **kwargs):
        out.mkdir(exist_ok=True)
        (out / "user.txt").write_text("a user's file")
        return save(self, path, **kwargs)

    monkeypatch.setattr(DatasetDict, "save_to_disk", someone_writes_meanwhile)
    argv = ["prepare", str(inputs / "data/train.txt"), "--model", str(inputs / "mistral"), "--output", str(out),
            "--max-seq-length", "16"]
    refused(argv, capsys, "output", "meanwhile")
    assert [p.name for p in out.iterdir()] == ["user.txt"] and (out / "user.txt").read_text() == "a user's file"
    assert not list(tmp_path.glob(".blocks*"))


# --- 3. concurrent runs ----------------------------------------------------------------------------------------


HOLD_LOCK = """
import sys, time
from bg2vec.locks import hold_output_lock
hold_output_lock(sys.argv[1], "output")
open(sys.argv[2], "w").write("held")
time.sleep(120)
"""


def test_a_second_run_into_a_locked_folder_is_one_line_and_a_stale_lock_is_taken_over(inputs, tmp_path, capsys):
    out = tmp_path / "blocks"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(tmp_path / "held")],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        wait_for(tmp_path / "held", holder)
        argv = ["prepare", str(inputs / "data/train.txt"), "--model", str(inputs / "mistral"), "--output", str(out),
                "--max-seq-length", "16"]
        refused(argv, capsys, "output", f"PID {holder.pid}", "is writing it")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    status = main(argv)  # the holder was killed: its lock file stays, with a PID that no longer runs
    said = capsys.readouterr().out
    assert status == 0 and f"stale lock of PID {holder.pid}" in said
    assert (out / "prepare_summary.json").is_file() and not list(tmp_path.glob(".*lock"))


def test_two_training_runs_into_one_folder(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    values = {**training_values("mntp", World(inputs, out)), "max_steps": 400, "save_steps": 1000}
    first = start_worker(tmp_path, ["mntp", str(write_run(tmp_path, values))], STEP_SLEEP="0.05",
                         STEP_FILE=str(tmp_path / "step"))
    try:
        wait_for(tmp_path / "step", first)
        (tmp_path / "second").mkdir()
        second = write_run(tmp_path / "second", {**values, "lora_r": 8})
        refused(["mntp", str(second)], capsys, "output_dir", f"PID {first.pid}")
        refused(["mntp", str(second), "--overwrite_output_dir", "true"], capsys, "output_dir", f"PID {first.pid}")
    finally:
        first.kill()
        first.communicate()


# --- 4. resume --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpointed(inputs, tmp_path_factory) -> Path:
    """An MNTP run with checkpoints (lora_r 4, alpha 8) on mistral."""
    folder = tmp_path_factory.mktemp("checkpointed")
    values = {**training_values("mntp", World(inputs, folder / "run")), "max_steps": 2, "save_steps": 1, "lora_r": 4}
    assert main(["mntp", str(write_run(folder, values))]) == 0
    return folder / "run"


@pytest.mark.parametrize("change, setting", [
    ({"lora_alpha": 64}, "lora_alpha=64"),
    ({"lora_r": 8}, "lora_r=8"),
    ({"model_name_or_path": "{root}/llama"}, "model_name_or_path="),
    ({"train_file": "{root}/data/three.txt"}, "train_file="),
], ids=["lora_alpha", "lora_r", "another-base", "other-data"])
def test_resuming_under_other_settings_names_the_setting_and_both_values(change, setting, inputs, checkpointed, tmp_path, capsys):
    values = {**training_values("mntp", World(inputs, checkpointed)), "lora_r": 4}
    values.update({k: v.replace("{root}", str(inputs)) if isinstance(v, str) else v for k, v in change.items()})
    before = tree_hashes(checkpointed)
    line = refused(["mntp", str(write_run(tmp_path, values)), "--resume"], capsys, setting, "checkpoint-2", "was trained with")
    recorded = json.loads((checkpointed / "checkpoint-2" / "bg2vec_run.json").read_text())
    name = setting.split("=")[0]
    assert repr(recorded[name]) in line
    assert tree_hashes(checkpointed) == before


# --- 5. custom code, cache keys, relative references --------------------------------------------------------


CUSTOM_CODE = '''
import pathlib
pathlib.Path(__file__).with_name("CODE-RAN").write_text("the folder's code ran")
from transformers import MistralConfig, MistralModel
class CustomConfig(MistralConfig):
    model_type = "bg2vec-custom"
class CustomModel(MistralModel):
    config_class = CustomConfig
'''


def test_custom_code_never_runs_and_is_never_asked_for(inputs, tmp_path):
    model = tmp_path / "custom"
    shutil.copytree(inputs / "mistral", model)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="bg2vec-custom", auto_map={"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "custom.py").write_text(CUSTOM_CODE)
    argv = encode_argv(World(inputs, tmp_path / "emb"), model=str(model))
    done = subprocess.run([sys.executable, "-m", "bg2vec.cli", *argv], input="y\ny\n", capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, "trust_remote_code", "--trust-remote-code", str(model))
    assert "Do you wish to run" not in done.stdout + done.stderr
    assert not (model / "CODE-RAN").exists() and not (tmp_path / "emb.npy").exists()


def test_a_task_name_never_becomes_a_path(inputs, tmp_path, capsys):
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.json").write_text(json.dumps({"name": "../../escaped", "type": "hard_triples"}))
    (task / "test.jsonl").write_text("".join(json.dumps({"anchor": f"a{i}", "positive": f"b{i}", "negative": f"c{i}"}) + "\n"
                                             for i in range(3)))
    cache = tmp_path / "deep" / "cache"
    argv = ["evaluate", "--model", str(inputs / "mistral"), "--tasks", str(task), "--output-dir", str(tmp_path / "report"),
            "--cache-dir", str(cache)]
    assert main(argv) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(cache in p.parents or p.parent in (task, tmp_path / "report") for p in written), written
    assert len(list(cache.rglob("*.json"))) == 1
    assert main([*argv, "--overwrite"]) == 0 and "(cached)" in capsys.readouterr().out


def test_a_relative_record_resolves_against_its_own_folder_only(inputs, tmp_path, monkeypatch, capsys):
    from bg2vec.models.layouts import resolve_model

    moved = tmp_path / "elsewhere" / "mntp"
    shutil.copytree(inputs / "mntp-mistral", moved)  # records its base as "../mistral": not there any more
    assert json.loads((moved / "bg2vec_config.json").read_text())["base_model_name_or_path"] == "../mistral"
    decoy = tmp_path / "cwd"
    shutil.copytree(inputs / "llama", decoy / "mistral")  # same shapes, another model, at ../mistral from cwd/sub
    (decoy / "sub").mkdir()
    monkeypatch.chdir(decoy / "sub")
    assert resolve_model(str(moved)).weights == str(inputs / "mistral"), "adapter_config.json's absolute record"
    adapter_config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**adapter_config, "base_model_name_or_path": "/nowhere/mistral"}))
    line = refused(encode_argv(World(inputs, tmp_path / "emb"), model=str(moved)), capsys, "base_model_name_or_path",
                   "'../mistral'", str(moved), "/nowhere/mistral")
    assert "cwd" not in line and not (tmp_path / "emb.npy").exists()


# --- 6. evaluation rows checked by task type -------------------------------------------------------------------


def _task(folder: Path, kind: str, test, train=None, **info) -> Path:
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps({"name": "t", "type": kind, **info}))
    for split, rows in (("test", test), ("train", train)):
        if rows is not None:
            (folder / f"{split}.jsonl").write_bytes(rows if isinstance(rows, bytes) else
                                                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    return folder


PAIR = {"sentence1": "а", "sentence2": "б"}
BAD_TASKS = {
    "retrieval positive as a string": ("retrieval", [{"query": "q", "positive": ["d"]}, {"query": "q", "positive": "abc"}],
                                       None, ("test.jsonl:2", "positive", "list of strings")),
    "one-label clustering": ("clustering", [{"text": f"t{i}", "label": "a"} for i in range(4)], None, ("test.jsonl", "2 labels")),
    "one-label classification": ("classification", [{"text": "x", "label": 1}, {"text": "y", "label": 0}],
                                 [{"text": f"t{i}", "label": 1} for i in range(4)], ("train.jsonl", "2 labels")),
    "bare number row": ("sts", [{**PAIR, "score": 1}, 5], None, ("test.jsonl:2", "not an object")),
    "text STS score": ("sts", [{**PAIR, "score": "high"}], None, ("test.jsonl:1", "score", "finite number")),
    "text pair label": ("pair_classification", [{**PAIR, "label": "yes"}], None, ("test.jsonl:1", "label", "0 or 1")),
    "bad UTF-8": ("bitext_mining", b'{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "\xff"}\n', None, ("test.jsonl", "byte")),
}


@pytest.mark.parametrize("kind, test, train, words", BAD_TASKS.values(), ids=list(BAD_TASKS))
def test_task_rows_are_checked_by_type(kind, test, train, words, tmp_path):
    from bg2vec.errors import DataError
    from bg2vec.evaluation.local_tasks import load_local_task

    folder = _task(tmp_path / "task", kind, test, train)
    with pytest.raises(DataError) as raised:
        load_local_task(folder)
    assert len(str(raised.value).splitlines()) == 1
    for word in words:
        assert word in str(raised.value)


def test_languages_given_as_one_string_is_refused_and_mteb_names_get_a_suggestion(inputs, tmp_path, capsys):
    folder = _task(tmp_path / "task", "hard_triples", [{"anchor": "a", "positive": "b", "negative": "c"}], languages="bul-Cyrl")
    evaluate = ["evaluate", "--model", str(inputs / "mistral"), "--output-dir", str(tmp_path / "report")]
    refused([*evaluate, "--tasks", str(folder)], capsys, "task.json", "languages", "list")
    refused([*evaluate, "--tasks", "BelebeleRetrievl"], capsys, "tasks", "did you mean BelebeleRetrieval")
    assert not (tmp_path / "report").exists()


# --- 7/8. corrupt files, devices, references, a full disk, interrupts ----------------------------------------


@pytest.fixture(scope="module")
def damaged(inputs, tmp_path_factory) -> Path:
    """Copies of the models with one file damaged each."""
    root = tmp_path_factory.mktemp("damaged")
    for name, source, file in (("model", "mistral", "model.safetensors"), ("adapter", "mntp-mistral", "adapter_model.safetensors")):
        shutil.copytree(inputs / source, root / name)
        data = (root / name / file).read_bytes()
        (root / name / file).write_bytes(data[: len(data) // 3])
    shutil.copytree(inputs / "mntp-mistral", root / "config")
    (root / "config" / "bg2vec_config.json").write_text('{"stage": "mntp", ')
    (root / "text.gguf").write_text("this is a text file, not a GGUF model\n")
    return root


@pytest.mark.parametrize("command, model, words", [
    ("encode", "model", ("model_name_or_path", "truncated", "model")),
    ("encode", "adapter", ("peft_model_name_or_path", "truncated")),
    ("encode", "config", ("bg2vec_config.json", "not valid JSON")),
    ("encode", "text.gguf", ("text.gguf", "GGUF")),
    ("encode", "org/na..me", ("org/na..me", "Hub id")),
    ("mntp", "model", ("model_name_or_path", "truncated")),
    ("simcse", "adapter", ("peft_model_name_or_path", "truncated")),
    ("simcse", "config", ("bg2vec_config.json", "not valid JSON")),
    ("evaluate", "config", ("bg2vec_config.json", "not valid JSON")),
], ids=lambda v: v if isinstance(v, str) else None)
def test_damaged_models_are_one_line(command, model, words, inputs, damaged, tmp_path, capsys):
    reference = str(damaged / model) if (damaged / model).exists() else model
    world = World(inputs, tmp_path / "out")
    before = tree_hashes(inputs)
    if command == "encode":
        argv = encode_argv(world, model=reference)
    elif command == "evaluate":
        argv = ["evaluate", "--model", reference, "--tasks", "STS22", "--output-dir", str(world.out)]
    else:
        key = "peft_model_name_or_path" if command == "simcse" else "model_name_or_path"
        argv = config_argv(command, world, {key: reference})
    refused(argv, capsys, *words)
    assert not world.out.exists() and not (tmp_path / "out.npy").exists()
    assert tree_hashes(inputs) == before


@pytest.mark.parametrize("device, words", [("gpu7", ("device='gpu7'", "cuda:N")), ("cuda:0", ("device='cuda:0'",))])
def test_devices_this_machine_lacks_are_one_line(device, words, inputs, tmp_path, capsys):
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
        words = (f"device='{device}'",)
    refused(encode_argv(World(inputs, tmp_path / "emb"), device=device), capsys, *words)
    assert not (tmp_path / "emb.npy").exists()


def test_a_bad_dtype_is_blamed_on_the_dtype(inputs, tmp_path, capsys):
    line = refused(encode_argv(World(inputs, tmp_path / "emb"), torch_dtype="float64"), capsys, "torch_dtype", "float64")
    assert "model_name_or_path" not in line
    refused(config_argv("mntp", World(inputs, tmp_path / "out"), {"torch_dtype": "float64"}), capsys, "torch_dtype")


@pytest.mark.parametrize("command, target, said", [
    ("encode", "bg2vec.encoding.files.encode_file", "no output file was written"),
    ("evaluate", "bg2vec.recipes.evaluate.run_evaluate", "no report was written"),
    ("prepare", "bg2vec.recipes.prepare.prepare_corpus", "no output folder was written"),
])
def test_ctrl_c_outside_training_says_what_it_left(command, target, said, inputs, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    world = World(inputs, tmp_path / "out")
    argv = {"encode": encode_argv(world),
            "evaluate": ["evaluate", "--model", str(inputs / "mistral"), "--tasks", "STS22", "--output-dir", str(world.out)],
            "prepare": ["prepare", str(inputs / "data/train.txt"), "--model", str(inputs / "mistral"), "--output", str(world.out)],
            }[command]
    status, err = run_cli(argv, capsys)
    assert status == 130
    line = err.strip().splitlines()[-1]
    assert line == f"bg2vec {command}: interrupted; {said}" or line.startswith(f"bg2vec {command}: interrupted; {said}")
    assert "training" not in line


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs; needs root), unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    # make test runs as root here and in CI; a machine that cannot mount fails this test rather than skip it
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"the disk-full tests mount a 2 MiB tmpfs (root needed): {mounted.stderr.strip()}"
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def fill(disk: Path, free_kib: int) -> Path:
    """A file that leaves about `free_kib` KiB free on `disk`."""
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - free_kib * 1024))
    return filler


def test_a_full_disk_while_saving_is_one_line_and_never_blocks_overwrite_or_resume(inputs, small_disk, tmp_path, capsys):
    out = small_disk / "run"
    values = {**training_values("mntp", World(inputs, out)), "save_steps": 1000}
    config = write_run(tmp_path, values)
    before = tree_hashes(inputs)
    filler = fill(small_disk, 200)  # not even the checkpoint fits
    assert main(["mntp", str(config)]) == 1
    assert_one_error_line(capsys.readouterr().err, "no space left", "checkpoint-1")
    assert not out.exists(), "the folder the run created is gone: no checkpoint made it"
    filler.unlink()
    filler = fill(small_disk, 540)  # the checkpoint fits (~470 KiB), the final adapter does not
    assert main(["mntp", str(config)]) == 1
    assert_one_error_line(capsys.readouterr().err, "no space left", "final adapter", "checkpoint-1", "--resume")
    assert (out / "checkpoint-1" / "trainer_state.json").is_file() and not (out / "adapter_model.safetensors").exists()
    filler.unlink()
    shutil.copytree(out / "checkpoint-1", out / ".partial-checkpoint-3")  # as a write cut short leaves it
    assert main(["mntp", str(config), "--resume"]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    shutil.rmtree(out)
    (out / ".partial-checkpoint-1").mkdir(parents=True)  # all a run that died in its first save left
    assert main(["mntp", str(config), "--overwrite_output_dir", "true"]) == 0
    assert tree_hashes(inputs) == before


def test_encode_names_a_bad_row_by_file_and_line_before_encoding_anything(inputs, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(t) + "\n" for t in ["а", ["Instruct:", "б"], {"text": "в"}] * 500) + "[1, 2]\n")
    refused(encode_argv(World(inputs, tmp_path / "emb"), input=str(rows), chunk_size=4), capsys, "rows.jsonl:1501",
            "[instruction, text]")
    assert not list(tmp_path.glob("emb*"))


def test_encode_on_a_full_disk_is_one_line_and_leaves_no_partial_file(inputs, small_disk, capsys):
    big = small_disk.parent / "many.txt"
    big.write_text("текст\n" * 20000, encoding="utf-8")  # 20000 x 64 float32 = 5 MiB: more than the disk holds
    status, err = run_cli(encode_argv(World(inputs, small_disk / "emb"), input=str(big), chunk_size=64), capsys)
    assert status == 1, err
    assert_one_error_line(err, "no space left", "emb.npy")
    assert list(small_disk.iterdir()) == []


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_ctrl_c_of_a_multi_device_encode_is_one_line(inputs, tmp_path):
    """Ctrl-C goes to the whole process group: the workers stay quiet, the command says one line, exit 130."""
    import signal
    import time

    texts = tmp_path / "many.txt"
    texts.write_text("\n".join(f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(4000)) + "\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(Path(bg2vec.__file__).parents[1]))
    process = subprocess.Popen(
        [sys.executable, "-m", "bg2vec.cli", "encode", "--model", str(inputs / "mistral"), "--input", str(texts),
         "--output", str(tmp_path / "out.npy"), "--device", "cpu,cpu", "--batch-size", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while len(children_of(process.pid)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    time.sleep(3)  # the workers have the model and are encoding
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("bg2vec encode: interrupted"), err
    assert not (tmp_path / "out.npy").exists()
