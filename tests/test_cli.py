"""Bad input: one line on stderr naming the setting, exit status 2, and no output folder left behind."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, MambaConfig, T5Config, T5ForConditionalGeneration

from bg2vec.cli import main

from conftest import build_tokenizer


def write_config(tmp_path, **values):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    return path


@pytest.fixture
def base(tiny_model_dirs, corpus_files, tmp_path):
    return dict(
        model_name_or_path=str(tiny_model_dirs["llama"]),
        train_file=str(corpus_files["train"]),
        output_dir=str(tmp_path / "out"),
        max_seq_length=16,
        max_steps=1,
    )


def run_cli(tmp_path, capsys, **values):
    status = main(["mntp", str(write_config(tmp_path, **values))])
    err = capsys.readouterr().err.strip()
    return status, err


def assert_clean_failure(status, err, base_values, *words):
    assert status == 2
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and err.splitlines()[-1] == error_lines[0], err
    err = error_lines[0]
    for word in words:
        assert word in err, err
    from pathlib import Path

    assert not Path(base_values["output_dir"]).exists(), "nothing may be written on bad input"


def test_missing_model_path(tmp_path, capsys, base):
    status, err = run_cli(tmp_path, capsys, **{**base, "model_name_or_path": str(tmp_path / "no-such-model")})
    assert_clean_failure(status, err, base, "model_name_or_path", "no-such-model")


def test_not_a_decoder(tmp_path, capsys, base):
    folder = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, vocab_size=100)).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    status, err = run_cli(tmp_path, capsys, **{**base, "model_name_or_path": str(folder)})
    assert_clean_failure(status, err, base, "model_name_or_path")


def test_architecture_that_cannot_attend_both_ways(tmp_path, capsys, base):
    folder = tmp_path / "mamba"
    tokenizer = build_tokenizer()
    config = MambaConfig(hidden_size=32, num_hidden_layers=1, vocab_size=len(tokenizer), state_size=4)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    status, err = run_cli(tmp_path, capsys, **{**base, "model_name_or_path": str(folder)})
    assert_clean_failure(status, err, base, "bidirectional", "mamba")


def test_unknown_key(tmp_path, capsys, base):
    status, err = run_cli(tmp_path, capsys, **base, lora_rank=8)
    assert_clean_failure(status, err, base, "lora_rank")


@pytest.mark.parametrize("p", [0, 1.5, -0.2])
def test_mlm_probability_out_of_range(tmp_path, capsys, base, p):
    status, err = run_cli(tmp_path, capsys, **base, mlm_probability=p)
    assert_clean_failure(status, err, base, "mlm_probability", "(0, 1]")


def test_empty_corpus(tmp_path, capsys, base):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\n")
    status, err = run_cli(tmp_path, capsys, **{**base, "train_file": str(empty)})
    assert_clean_failure(status, err, base, "train_file", "holds no text")


def test_corpus_shorter_than_one_block(tmp_path, capsys, base):
    short = tmp_path / "short.txt"
    short.write_text("Една кратка история.\nИ още една.\n", encoding="utf-8")
    status, err = run_cli(tmp_path, capsys, **{**base, "train_file": str(short), "max_seq_length": 256})
    assert_clean_failure(status, err, base, "max_seq_length")


def test_blocks_shorter_than_two_tokens(tmp_path, capsys, base):
    from datasets import Dataset

    Dataset.from_dict({"input_ids": [[1], [2], [3]]}).save_to_disk(tmp_path / "blocks")
    values = {k: v for k, v in base.items() if k != "train_file"}
    status, err = run_cli(tmp_path, capsys, **values, dataset_path=str(tmp_path / "blocks"))
    assert_clean_failure(status, err, base, "at least 2")


def test_max_seq_length_below_two(tmp_path, capsys, base):
    status, err = run_cli(tmp_path, capsys, **{**base, "max_seq_length": 1})
    assert_clean_failure(status, err, base, "max_seq_length")


def test_existing_output_dir_without_overwrite(tmp_path, capsys, base):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    status = main(["mntp", str(write_config(tmp_path, **base))])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "overwrite_output_dir" in err.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_tokenizer_without_eos_or_mask(tmp_path, capsys, base, tiny_model_dirs):
    import shutil

    folder = tmp_path / "no-eos"
    shutil.copytree(tiny_model_dirs["llama"], folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config.pop("eos_token", None)
    tokenizer_config.pop("pad_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    status, err = run_cli(tmp_path, capsys, **{**base, "model_name_or_path": str(folder)})
    assert_clean_failure(status, err, base, "eos")


def test_real_process_exit_status(tmp_path, base):
    config = write_config(tmp_path, **base, mlm_probability=2)
    done = subprocess.run([sys.executable, "-m", "bg2vec.cli", "mntp", str(config)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("bg2vec mntp: error: mlm_probability=2")
