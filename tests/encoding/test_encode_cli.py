"""`bg2vec encode`: .txt/.jsonl in, .npy/.parquet out, streamed in chunks, rows in input order."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from bg2vec import Bg2Vec
from bg2vec.cli import EXIT_BAD_INPUT, main

TEXTS = ["Първи ред.", "", "The second text is a little longer than the first one.", "Трети."]


@pytest.fixture(scope="module")
def encoder(tiny_model_dirs) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float32")


def test_txt_to_npy_in_chunks_equals_encode(tiny_model_dirs, encoder, tmp_path, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    args = ["encode", "--model", str(tiny_model_dirs["mistral"]), "--input", str(source),
            "--output", str(tmp_path / "out.npy"), "--chunk-size", "3", "--batch-size", "2", "--torch-dtype", "float32"]
    assert main(args) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encoder.encode(TEXTS), atol=1e-5)
    assert "wrote 4 embeddings" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.partial"))


def test_several_devices_and_a_token_budget(tiny_model_dirs, encoder, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS * 3) + "\n", encoding="utf-8")
    args = ["encode", "--model", str(tiny_model_dirs["mistral"]), "--input", str(source), "--output", str(tmp_path / "out.npy"),
            "--chunk-size", "5", "--device", "cpu,cpu", "--max-batch-tokens", "16", "--torch-dtype", "float32"]
    assert main(args) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encoder.encode(TEXTS * 3), atol=1e-5)


def test_jsonl_to_parquet_with_instructions(tiny_model_dirs, encoder, tmp_path):
    source = tmp_path / "texts.jsonl"
    lines = [json.dumps("plain"), "", json.dumps(["Retrieve:", "a pair"]), json.dumps({"text": "an object", "instruction": "Q:"})]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.parquet"
    assert main(["encode", "--model", str(tiny_model_dirs["mistral"]), "--input", str(source), "--output", str(out),
                 "--normalize", "--torch-dtype", "float32"]) == 0
    table = pq.read_table(out)
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    expected = encoder.encode(["plain", ["Retrieve:", "a pair"], ["Q:", "an object"]], normalize_embeddings=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("input_name, output_name, match", [
    ("texts.csv", "out.npy", "--input"), ("missing.txt", "out.npy", "an existing file"), ("texts.txt", "out.csv", "--output"),
])
def test_bad_paths_fail_before_loading_the_model(tmp_path, capsys, input_name, output_name, match):
    (tmp_path / "texts.csv").write_text("a\n")
    (tmp_path / "texts.txt").write_text("a\n")
    args = ["encode", "--model", "no/such-model", "--input", str(tmp_path / input_name), "--output", str(tmp_path / output_name)]
    assert main(args) == EXIT_BAD_INPUT
    assert match in capsys.readouterr().err
