"""Reading corpora: every input format, compression, normalisation, invalid UTF-8, and the read cache."""

import bz2
import gzip
import json
import lzma

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from datasets import Dataset, DatasetDict

from bg2vec.data import corpus as corpus_module
from bg2vec.data import text_files
from bg2vec.data.corpus import normalise, read_corpus
from bg2vec.errors import ConfigError, DataError

LINES = ["София е столицата.", "", "  Пловдив   е стар.  ", "Черно море\tе на изток."]
CLEAN = ["София е столицата.", "", "Пловдив е стар.", "Черно море е на изток."]
RECORDS = [{"id": 1, "body": "Първи текст."}, {"id": 2, "body": "Втори текст."}]


def read(tmp_path, *inputs, **settings):
    return read_corpus([str(p) for p in inputs], tmp_path / "cache", **settings)


def texts(tmp_path, *inputs, **settings):
    return read(tmp_path, *inputs, **settings).documents["text"]


def write(path, text: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    if path.suffix in openers:
        with openers[path.suffix](path, "wb") as f:
            f.write(data)
    elif path.suffix == ".zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def test_normalise_nfc_whitespace_and_controls():
    raw = pa.array(["  И\u0306 \u00a0и\tкрай \r\n\r\n\r\n\r\nново\x07 ред \u2028x ", None, " \t\n "])
    assert normalise(raw).to_pylist() == ["Й и край\n\nново ред\nx", "", ""]


def test_text_one_document_per_line(tmp_path):
    path = write(tmp_path / "a.txt", "\r\n".join(LINES) + "\r\n")
    documents = read(tmp_path, path).documents
    assert documents["text"] == CLEAN
    assert documents["chars"] == [len(t) for t in CLEAN]
    assert documents["hash"][0] != documents["hash"][2] and len(set(documents["hash"])) == 4


def test_paragraphs_and_one_document_per_file(tmp_path):
    path = write(tmp_path / "p.txt", "\n\nПърви ред\nвтори ред\n\n \t\n\nВтори абзац.\n")
    assert texts(tmp_path, path, document_per="paragraph") == ["", "Първи ред\nвтори ред", "Втори абзац."]
    folder = tmp_path / "docs"
    write(folder / "b.txt", "Второ.\n")
    write(folder / "a" / "z.txt", "Първо,\nна два реда.")
    write(folder / ".hidden" / "x.txt", "скрито")
    assert texts(tmp_path, folder, document_per="file") == ["Първо,\nна два реда.", "Второ."]


def test_chunk_boundaries_change_nothing(tmp_path, monkeypatch):
    text = "\r\n".join(["Кирилица на ред " + str(i) for i in range(40)]) + "\n\n\nабзац\r\n\r\nкрай"
    path = write(tmp_path / "c.txt", text)
    expected = {per: texts(tmp_path / per, path, document_per=per) for per in ("line", "paragraph")}
    monkeypatch.setattr(text_files, "CHUNK_BYTES", 7)  # splits UTF-8 characters and "\r\n" pairs
    for per in ("line", "paragraph"):
        assert texts(tmp_path / f"small-{per}", path, document_per=per) == expected[per]


@pytest.mark.parametrize("suffix", [".gz", ".zst", ".bz2", ".xz"])
def test_compressed_text_is_read_directly(tmp_path, suffix):
    path = write(tmp_path / f"a.txt{suffix}", "\n".join(LINES))
    assert texts(tmp_path, path) == CLEAN


def test_jsonl_csv_tsv_parquet_with_a_text_column(tmp_path):
    jsonl = write(tmp_path / "r.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS) + "\n\n")
    csv_file = write(tmp_path / "r.csv", 'id,body\n1,"Първи, с ""кавички""\nи нов ред."\n2,Втори текст.\n')
    tsv = write(tmp_path / "r.tsv.gz", "id\tbody\n1\tПърви текст.\n2\tВтори текст.\n")
    parquet = tmp_path / "r.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), parquet)
    expected = [r["body"] for r in RECORDS]
    assert texts(tmp_path, jsonl, text_column="body") == expected
    assert texts(tmp_path, csv_file, text_column="body") == ['Първи, с "кавички"\nи нов ред.', "Втори текст."]
    assert texts(tmp_path, tsv, text_column="body") == expected
    assert texts(tmp_path, parquet, text_column="body") == expected
    assert texts(tmp_path, jsonl, parquet, text_column="body") == expected * 2, "inputs are read in order"


def test_saved_datasets(tmp_path):
    Dataset.from_list(RECORDS).save_to_disk(tmp_path / "one")
    DatasetDict({"train": Dataset.from_list(RECORDS[:1]), "test": Dataset.from_list(RECORDS[1:])}).save_to_disk(
        tmp_path / "two"
    )
    assert texts(tmp_path, tmp_path / "one", text_column="body") == ["Първи текст.", "Втори текст."]
    assert texts(tmp_path, tmp_path / "two", text_column="body") == ["Първи текст."]
    assert texts(tmp_path, tmp_path / "two", text_column="body", dataset_split="test") == ["Втори текст."]
    with pytest.raises(ConfigError, match="dataset_split='dev'.*train, test"):
        read(tmp_path, tmp_path / "two", text_column="body", dataset_split="dev")


def test_wikiextractor_json_output_drops_empty_articles(tmp_path):
    articles = [
        {"id": "1", "revid": "9", "url": "u1", "title": "София", "text": "София е столицата.\nВтори абзац."},
        {"id": "2", "revid": "9", "url": "u2", "title": "Sofia", "text": ""},  # a redirect comes out empty
        {"id": "3", "revid": "9", "url": "u3", "title": "Пловдив", "text": "Пловдив е град."},
    ]
    lines = [json.dumps(a) for a in articles]  # wikiextractor writes ASCII JSON (\\u escapes)
    write(tmp_path / "text" / "AA" / "wiki_00", "\n".join(lines[:2]) + "\n")
    write(tmp_path / "text" / "AB" / "wiki_01.bz2", lines[2] + "\n")  # wikiextractor --compress
    corpus = read(tmp_path, tmp_path / "text")
    assert corpus.documents["text"] == [articles[0]["text"], articles[2]["text"]]
    assert [(s["format"], s["documents"], s["empty_articles"]) for s in corpus.sources] == [
        ("wikiextractor", 1, 1),
        ("wikiextractor", 1, 0),
    ]


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv", "r.parquet", "saved"])
def test_missing_text_column_lists_the_columns(tmp_path, name):
    path = tmp_path / name
    if name == "r.jsonl":
        write(path, json.dumps(RECORDS[0]) + "\n")
    elif name == "r.csv":
        write(path, "id,body\n1,x\n")
    elif name == "r.parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), path)
    else:
        Dataset.from_list(RECORDS).save_to_disk(path)
    with pytest.raises(ConfigError) as error:
        read(tmp_path, path)
    assert "text_column='text'" in str(error.value) and "id, body" in str(error.value)
    assert not list((tmp_path / "cache").glob("*/*")), "a failed read leaves no cache behind"


def test_invalid_utf8_names_file_and_byte_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(text_files, "CHUNK_BYTES", 5)  # the bad byte lies beyond the first chunks
    data = "добро\n".encode() + b"ok \xff bad\n" + "край\n".encode()
    plain = write(tmp_path / "bad.txt", data)
    packed = write(tmp_path / "bad.txt.gz", data)
    for path in (plain, packed):
        with pytest.raises(DataError, match=rf"{path.name}: invalid UTF-8 at byte 14 .*--errors replace"):
            read(tmp_path, path)
    truncated = write(tmp_path / "cut.txt", "добро".encode()[:-1])
    with pytest.raises(DataError, match="cut.txt: invalid UTF-8 at byte 8"):
        read(tmp_path, truncated)
    corpus = read(tmp_path, plain, errors="replace")
    assert corpus.documents["text"] == ["добро", "ok \ufffd bad", "край"]
    assert corpus.sources[0]["invalid_utf8_replaced"] == 1


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="inputs='.*missing.txt'.*check the path"):
        read(tmp_path, tmp_path / "missing.txt")
    with pytest.raises(DataError, match="r.jsonl:2 is not JSON"):
        read(tmp_path, write(tmp_path / "r.jsonl", '{"text": "a"}\n{"text": \n'))
    with pytest.raises(DataError, match="r2.jsonl:1: field 'text' holds a int"):
        read(tmp_path, write(tmp_path / "r2.jsonl", '{"text": 3}\n'))
    with pytest.raises(DataError, match="x.parquet: not a readable Parquet file"):
        read(tmp_path, write(tmp_path / "x.parquet", "not parquet"))
    (tmp_path / "x.txt.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="x.txt.gz: cannot be read"):
        read(tmp_path, tmp_path / "x.txt.gz")


def test_second_read_comes_from_the_cache_until_the_file_changes(tmp_path, monkeypatch):
    path = write(tmp_path / "a.txt", "\n".join(LINES))
    first = read(tmp_path, path)

    def no_reading(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(corpus_module, "_read_source", no_reading)
    again = read(tmp_path, path)
    assert again.documents["text"] == first.documents["text"] and again.sources == first.sources
    write(path, "Нов текст.")
    with pytest.raises(AssertionError, match="read again"):
        read(tmp_path, path)
