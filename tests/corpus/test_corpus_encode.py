"""`bg2vec encode-corpus` with the local engine: shards, manifest and provenance, resume, inputs, bad input,
dtypes, and the output read back (read_embeddings, FAISS, LanceDB: the snippets of docs/corpus.md)."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bg2vec import Bg2Vec, read_embeddings
from bg2vec.cli import EXIT_BAD_INPUT, main
from bg2vec.corpus.plan import plan_shards, shard_rows_of
from bg2vec.corpus.provenance import file_digest
from bg2vec.corpus.sources import Columns, find_inputs, iter_rows
from bg2vec.corpus.vectors import to_columns

from conftest import REPO, CORPUS

TEXTS = [f"{text} ({number})" for number in range(3) for text in CORPUS]  # 27 distinct texts
DOCS = REPO / "docs" / "corpus.md"


@pytest.fixture(scope="module")
def model(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["mistral"])


@pytest.fixture(scope="module")
def encoder(model) -> Bg2Vec:
    return Bg2Vec.from_pretrained(model, torch_dtype="float32")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def encode_corpus(model: str, inputs: list, output: Path, *extra: str) -> int:
    return main(["encode-corpus", *map(str, inputs), "--output", str(output), "--model", model, "--torch-dtype", "float32",
                 "--shard-rows", "10", *extra])


def test_shards_manifest_and_provenance(model, encoder, tmp_path, capsys):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"doc": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    out = tmp_path / "vectors"
    assert encode_corpus(model, [source], out, "--id-column", "doc", "--max-batch-tokens", "64") == 0
    assert "encoded 27 rows" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["stop"] - s["start"] for s in manifest["shards"]] == [10, 10, 7]
    assert manifest["inputs"] == [{"path": str(source.resolve()), "format": "jsonl", "size": source.stat().st_size,
                                   "mtime_ns": source.stat().st_mtime_ns, "rows": 27}]
    for index, entry in manifest["finished"].items():
        shard = out / f"shard-{int(index):05d}.parquet"
        assert entry["sha256"] == file_digest(shard) and entry["rows"] == pq.read_metadata(shard).num_rows
        metadata = json.loads(pq.read_schema(shard).metadata[b"bg2vec"])
        assert metadata["provenance"] == manifest["provenance"] and metadata["shard"]["index"] == int(index)
    provenance = manifest["provenance"]
    assert provenance["pooling_mode"] == "mean" and provenance["dims"] == 64 and provenance["dtype"] == "float32"
    assert len(provenance["model_digest"]) == 32 and provenance["bg2vec_version"]
    got = read_embeddings(out, verify=True)
    assert got.ids.tolist() == [f"d{i}" for i in range(27)]
    np.testing.assert_allclose(got.matrix, encoder.encode(TEXTS), atol=1e-5)
    assert not got.matrix.flags.owndata and not got.matrix.flags.writeable  # a view of the mapped file


def test_rerun_skips_finished_shards_and_refuses_changed_settings(model, tmp_path, capsys):
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "vectors"
    assert encode_corpus(model, [source], out) == 0
    first = read_embeddings(out).matrix.copy()
    capsys.readouterr()
    assert encode_corpus(model, [source], out) == 0
    captured = capsys.readouterr()
    assert "3 of 3 shards finished earlier and skipped; 0 to encode" in captured.err
    assert "encoded 0 rows" in captured.out
    assert encode_corpus(model, [source], out, "--dtype", "int8", "--dim", "32") == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "dtype ('float32' then, 'int8' now)" in error and "dim (None then, 32 now)" in error and "--overwrite" in error
    source.write_text("\n".join(TEXTS[:-1]) + "\n", encoding="utf-8")
    assert encode_corpus(model, [source], out) == EXIT_BAD_INPUT
    assert f"{source.resolve()} changed (size" in capsys.readouterr().err
    assert encode_corpus(model, [source], out, "--overwrite", "--dtype", "int8") == 0
    again = read_embeddings(out)
    assert len(again.ids) == 26 and again.matrix.dtype == np.int8
    np.testing.assert_allclose(again.matrix * again.scale[:, None], first[:26], atol=np.abs(first).max() / 127)


def test_formats_folders_globs_instructions_and_row_number_ids(model, encoder, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "a.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(TEXTS[:5]) + "\n")
    with bz2.open(data / "b.csv.bz2", "wt", encoding="utf-8") as handle:
        handle.write("body,task\n" + "".join(f'"{t}",Q:\n' for t in TEXTS[5:9]))
    (data / "c.tsv").write_text("body\ttask\n" + "".join(f"{t}\t\n" for t in TEXTS[9:12]), encoding="utf-8")
    pq.write_table(pa.table({"body": TEXTS[12:20], "task": ["P:"] * 8}), data / "d.parquet", row_group_size=3)
    out = tmp_path / "vectors"
    plain = encode_corpus(model, [data / "a.txt.gz"], tmp_path / "plain", "--instruction", "Find:")
    assert plain == 0
    np.testing.assert_allclose(read_embeddings(tmp_path / "plain").matrix,
                               encoder.encode([["Find:", t] for t in TEXTS[:5]]), atol=1e-5)
    assert encode_corpus(model, [str(data / "*.*sv*"), data / "d.parquet"], out, "--text-column", "body",
                         "--instruction-column", "task", "--shard-rows", "4") == 0
    got = read_embeddings(out)
    assert got.ids.tolist() == list(range(15))  # row numbers across the inputs
    expected = [["Q:", t] for t in TEXTS[5:9]] + TEXTS[9:12] + [["P:", t] for t in TEXTS[12:20]]
    np.testing.assert_allclose(got.matrix, encoder.encode(expected), atol=1e-5)
    files = find_inputs([str(data)])
    assert [Path(f.path).name for f in files] == ["a.txt.gz", "b.csv.bz2", "c.tsv", "d.parquet"]


def test_shards_read_from_their_start_equal_one_pass(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(TEXTS[:7]) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": TEXTS[7:]}), tmp_path / "b.parquet", row_group_size=4)
    files = find_inputs([str(tmp_path)])
    columns = Columns()
    rows = [sum(len(b) for b in iter_rows(f, columns)) for f in files]
    shards = plan_shards(rows, 6)
    assert [(s.start, s.stop, s.first_input, s.first_row) for s in shards] == [(0, 6, 0, 0), (6, 12, 0, 6), (12, 18, 1, 5),
                                                                              (18, 24, 1, 11), (24, 27, 1, 17)]
    for shard in shards:  # each alone, as a Ray task reads it
        texts = [t for _, batch in shard_rows_of(files, columns, [shard]) for t in batch.texts]
        assert texts == TEXTS[shard.start : shard.stop]


def test_dtypes_store_what_they_say():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 19)).astype(np.float32)
    half = to_columns(x, "float16")["embedding"]
    np.testing.assert_allclose(np.array(half.to_pylist(), dtype=np.float32), x, rtol=1e-3)
    int8 = to_columns(x, "int8")
    values = np.array(int8["embedding"].to_pylist(), dtype=np.float32) * int8["scale"].to_numpy()[:, None]
    assert np.abs(values - x).max() <= np.abs(x).max(axis=1).max() / 127 / 2 + 1e-6
    bits = np.array(to_columns(x, "binary")["embedding"].to_pylist(), dtype=np.uint8)
    assert bits.shape == (5, 3) and (np.unpackbits(bits, axis=1)[:, :19] == (x > 0)).all()


@pytest.mark.parametrize("case", ["no text column", "duplicate id", "non-UTF-8", "output inside input", "input inside output",
                                  "id column in text", "ray address", "ray missing"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(model, tmp_path, capsys, monkeypatch, case):
    data = tmp_path / "data"
    data.mkdir()
    duplicated = case == "duplicate id"  # rows 3 and 7 share the id x2
    source = write_jsonl(data / "docs.jsonl", [{"id": f"x{i % 4 if duplicated and i > 5 else i}", "text": t}
                                              for i, t in enumerate(TEXTS)])
    out = tmp_path / "vectors"
    extra: list[str] = ["--id-column", "id"]
    inputs: list = [source]
    expected = {
        "no text column": "text_column='body'", "duplicate id": "duplicate id 'x2' in id_column 'id': at row 3 of",
        "non-UTF-8": "invalid UTF-8 at byte 6", "output inside input": "lies inside", "input inside output": "contains",
        "id column in text": "id_column='id' is not valid", "ray address": "ray_address='127.0.0.1:9'",
        "ray missing": "pip install 'bg2vec-toolkit[ray]'",
    }[case]
    if case == "no text column":
        extra = ["--text-column", "body"]
    elif case == "non-UTF-8":
        (data / "bad.txt").write_bytes(b"hello\n\xff\xfe\n")
        inputs, extra = [data / "bad.txt"], []
    elif case == "output inside input":
        inputs, out = [data], data / "vectors"
    elif case == "input inside output":
        out = tmp_path
    elif case == "id column in text":
        (data / "t.txt").write_text("a\n", encoding="utf-8")
        inputs = [data / "t.txt"]
    elif case == "ray address":
        extra = ["--engine", "ray", "--ray-address", "127.0.0.1:9"]
    elif case == "ray missing":
        monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
        extra = ["--engine", "ray"]
    assert encode_corpus(model, inputs, out, *extra) == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert expected in error and len(error.splitlines()) == 1, error
    if case == "duplicate id":
        assert "again at row 7 of" in error
    assert not list(out.glob("shard-*")) and not (out / "manifest.json").exists()


def _doc_snippet(name: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    return re.search(rf"<!-- test: {name} -->\n```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("snippet", ["faiss", "lancedb"])
def test_docs_snippets_find_the_expected_neighbour(model, tmp_path, snippet):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)])
    out = tmp_path / "vectors"
    assert encode_corpus(model, [source], out, "--id-column", "id", "--normalize") == 0
    scope = {"OUTPUT": str(out), "MODEL": model, "QUERY": TEXTS[13], "DB_FOLDER": str(tmp_path / "lancedb")}
    exec(compile(_doc_snippet(snippet), f"docs/corpus.md ({snippet})", "exec"), scope)
    assert scope["neighbour"] == "doc-13"


def test_a_recorded_shard_whose_file_is_gone_is_written_again(model, tmp_path, capsys):
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "vectors"
    assert encode_corpus(model, [source], out) == 0
    first = read_embeddings(out).matrix.copy()
    os.remove(out / "shard-00001.parquet")
    (out / "shard-00005.parquet").write_bytes(b"left by a killed run")
    assert encode_corpus(model, [source], out) == 0
    captured = capsys.readouterr()
    assert "shards [1] were recorded but their files are gone" in captured.err and "encoded 10 rows" in captured.out
    assert not (out / "shard-00005.parquet").exists()
    np.testing.assert_array_equal(read_embeddings(out).matrix, first)
