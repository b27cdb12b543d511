"""One JSON-lines reader and one saved-dataset loader for the whole library: their errors, and that every former
reader (triples, corpus, local tasks, file encoding, dataset_path) now gives exactly those errors."""

import gzip
import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from bg2vec.data.blocks import load_blocks
from bg2vec.data.corpus import read_corpus
from bg2vec.data.saved_datasets import load_saved, load_saved_splits
from bg2vec.data.text_files import read_json_lines
from bg2vec.data.texts import _load_saved as load_saved_texts
from bg2vec.data.triples import read_triples
from bg2vec.encoding.files import read_chunks
from bg2vec.errors import ConfigError, DataError
from bg2vec.evaluation.local_tasks import load_local_task

GOOD = {"query": "q", "positive": "p", "text": "t", "label": 1}
BAD_JSON = (json.dumps(GOOD) + "\n\n{broken\n").encode()  # the bad line is the file's third (a blank line between)
BAD_UTF8 = (json.dumps(GOOD) + "\n").encode() + b'{"text": "\xff"}\n'


def error_of(read) -> str:
    with pytest.raises(DataError) as caught:
        read()
    return str(caught.value)


def test_values_with_their_line_numbers_blank_lines_skipped(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"a": 1}\n\n  \n["x", "y"]\n"text"')
    assert list(read_json_lines(path)) == [(1, {"a": 1}), (4, ["x", "y"]), (5, "text")]


def test_bad_json_names_file_and_line_bad_utf8_names_the_byte(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(BAD_JSON)
    message = error_of(lambda: list(read_json_lines(tmp_path / "a.jsonl")))
    assert f"{tmp_path / 'a.jsonl'}:3 is not JSON" in message and "\n" not in message
    (tmp_path / "b.jsonl").write_bytes(BAD_UTF8)
    offset = BAD_UTF8.index(b"\xff")
    assert f"invalid UTF-8 at byte {offset}" in error_of(lambda: list(read_json_lines(tmp_path / "b.jsonl")))
    replaced = list(read_json_lines(tmp_path / "b.jsonl", errors="replace"))
    assert replaced[1] == (2, {"text": "\ufffd"})


def _task(folder: Path) -> Path:
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps({"type": "clustering"}))
    return folder / "test.jsonl"


# each former reader: where it reads the bad file from, and how it is called
READERS = {
    "triples": (lambda tmp: tmp / "pairs.jsonl", lambda path: read_triples(path)),
    "corpus": (lambda tmp: tmp / "docs.jsonl", lambda path: read_corpus([str(path)], path.parent / "cache")),
    "local task": (lambda tmp: _task(tmp / "task"), lambda path: load_local_task(path.parent)),
    "encode file": (lambda tmp: tmp / "texts.jsonl", lambda path: [c for c in read_chunks(path, 8)]),
}


@pytest.mark.parametrize("content", [BAD_JSON, BAD_UTF8], ids=["bad JSON", "bad UTF-8"])
@pytest.mark.parametrize("reader", READERS)
def test_every_former_reader_gives_the_shared_errors(tmp_path, reader, content):
    where, read = READERS[reader]
    path = where(tmp_path)
    path.write_bytes(content)
    assert error_of(lambda: read(path)) == error_of(lambda: list(read_json_lines(path)))


def test_one_saved_dataset_loader(tmp_path):
    Dataset.from_dict({"input_ids": [[1, 2], [3, 4]]}).save_to_disk(tmp_path / "one")
    DatasetDict({"test": Dataset.from_dict({"input_ids": [[1, 2]]})}).save_to_disk(tmp_path / "no-train")
    (tmp_path / "not-saved").mkdir()
    assert isinstance(load_saved(tmp_path / "one", "dataset_path"), Dataset)
    assert list(load_saved_splits(tmp_path / "one", "dataset_path")) == ["train"]
    with pytest.raises(DataError, match="expected a 'train' split"):
        load_saved_splits(tmp_path / "no-train", "dataset_path")

    for name, fix in (("missing", "check the path"), ("not-saved", "")):
        path = str(tmp_path / name)
        with pytest.raises(ConfigError) as shared:
            load_saved(path, "dataset_path")
        assert "dataset_path" in str(shared.value) and fix in str(shared.value)
        for former in (lambda: load_blocks(path, 5), lambda: load_saved_texts(path)):
            with pytest.raises(ConfigError) as caught:
                former()
            assert str(caught.value) == str(shared.value)
