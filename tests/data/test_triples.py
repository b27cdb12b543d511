"""Supervised data (issue 12): llm2vec's E5 layout read as llm2vec's own E5Data reads it, our JSON-lines rows,
bad rows named by file and line, and batches that hold one dataset each."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bg2vec.data.triples import E5_INSTRUCTIONS, dataset_batches, read_triples
from bg2vec.errors import ConfigError, DataError

from llm2vec_side import run_llm2vec

LLM2VEC_E5 = """
import json, sys
from accelerate import PartialState
PartialState()  # llm2vec logs through accelerate, which needs its state
from llm2vec.dataset.E5Data import E5Data
data = E5Data(file_path=sys.argv[1], effective_batch_size=1, shuffle_individual_datasets=False)
rows = [{"task": s.task_name, "query": s.query, "positive": s.positive, "negative": s.negative} for s in data.data]
open(sys.argv[2], "w").write(json.dumps(rows))
"""


def write_e5(folder, rows_per_dataset=3):
    folder.mkdir()
    for name in E5_INSTRUCTIONS:
        rows = [{"query": f"{name} q{i}", "positive": f"{name} p{i}", "negative": f"{name} n{i}"} for i in range(rows_per_dataset)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_e5_layout_reads_as_llm2vec_reads_it(tmp_path):
    folder = write_e5(tmp_path / "echo-data")
    run_llm2vec(LLM2VEC_E5, str(folder), str(tmp_path / "theirs.json"))
    theirs = json.loads((tmp_path / "theirs.json").read_text())
    ours = read_triples(folder)
    separator = "!@#$%^&*()"
    mine = {(t.dataset, f"{t.instruction}{separator}{t.query}", separator + t.positive, separator + t.negatives[0])
            for rows in ours.datasets.values() for t in rows}
    assert mine == {(r["task"], r["query"], r["positive"], r["negative"]) for r in theirs}
    assert len(ours) == len(theirs) == 3 * len(E5_INSTRUCTIONS)


def test_jsonl_rows_with_lists_of_negatives_and_own_instructions(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"query": "q", "positive": "p", "negative": ["n1", "n2"], "instruction": "Find:"}) + "\n"
                    + json.dumps({"query": "q2", "positive": "p2"}) + "\n", encoding="utf-8")
    rows = read_triples(path).datasets["pairs"]
    assert rows[0].negatives == ("n1", "n2") and rows[0].instruction == "Find:"
    assert rows[1].negatives == () and rows[1].instruction == ""


@pytest.mark.parametrize("text, words", [
    ('{"query": "q", "positive": "p"}\n{broken\n', "pairs.jsonl:2 is not JSON"),
    ('{"query": "q"}\n', 'pairs.jsonl:1 needs "query" and "positive"'),
    ('{"query": "q", "positive": "p", "negative": 3}\n', '"negative" must be'),
    (b"\xff\n", "invalid UTF-8 at byte 0"),
])
def test_bad_rows_name_file_and_line(tmp_path, text, words):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace('"', '"')):
        read_triples(path)


def test_a_missing_source_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="train_file"):
        read_triples(tmp_path / "none.jsonl")


def test_batches_hold_one_dataset_each_and_drop_the_remainder(tmp_path):
    data = read_triples(write_e5(tmp_path / "echo-data", rows_per_dataset=5))
    batches = dataset_batches(data, batch_size=2, seed=0)
    assert all(len({t.dataset for t in batch}) == 1 for batch in batches)
    assert Counter(batch[0].dataset for batch in batches) == {name: 2 for name in E5_INSTRUCTIONS}
    assert dataset_batches(data, 2, seed=0) == batches and dataset_batches(data, 2, seed=1) != batches


def test_a_saved_dataset_with_a_dataset_column_reads_too(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({
        "query": ["q1", "q2", "q3"], "positive": ["p1", "p2", "p3"], "negative": [["n1"], [], ["n3a", "n3b"]],
        "dataset": ["fever", "fever", "mine"],
    }).save_to_disk(tmp_path / "saved")
    data = read_triples(tmp_path / "saved")
    assert sorted(data.datasets) == ["fever", "mine"]
    assert data.datasets["fever"][0].instruction == E5_INSTRUCTIONS["fever"] + "; "
    assert data.datasets["mine"][0].negatives == ("n3a", "n3b")
    Dataset.from_dict({"text": ["a"]}).save_to_disk(tmp_path / "wrong")
    with pytest.raises(DataError, match="lacks the column"):
        read_triples(tmp_path / "wrong")
