"""`bg2vec prepare`: blocks checked by hand, run_mntp equivalence, the document-level split, the summary, the
cache, an MNTP run on the output, and bad input (one line, exit status 2, nothing written)."""

import json
from pathlib import Path

import pytest
from datasets import load_from_disk
from transformers import AutoTokenizer

from bg2vec.cli import main
from bg2vec.config import MNTPConfig, PrepareConfig
from bg2vec.data.blocks import TextSource, load_blocks, mntp_datasets
from bg2vec.errors import ConfigError
from bg2vec.recipes.prepare import SUMMARY_FILE, prepare_corpus
from bg2vec.recipes.mntp import run_mntp

from conftest import REPO

DOCS = [
    "София е столицата на България.",
    "Пловдив е стар град.",
    "The quick brown fox jumps over the lazy dog.",
    "Езикът е български.",
    "A sentence encoder maps text to a vector.",
]


@pytest.fixture
def model(tiny_model_dirs):
    return str(tiny_model_dirs["llama"])


@pytest.fixture
def tokenizer(model):
    return AutoTokenizer.from_pretrained(model)


def prepare(tmp_path, model, inputs, name="out", **settings):
    settings.setdefault("validation_split_percentage", 0)
    config = PrepareConfig(
        inputs=[str(p) for p in inputs], model_name_or_path=model, output=str(tmp_path / name),
        cache_dir=str(tmp_path / "cache"), **settings,
    )
    return prepare_corpus(config, log=lambda *_: None)


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def blocks_of(result, split="train"):
    return load_from_disk(result.output)[split]["input_ids"]


@pytest.mark.parametrize("group_size, remainder", [(1000, "drop"), (2, "drop"), (2, "keep"), (0, "keep")])
def test_blocks_and_bos_match_a_hand_computation(tmp_path, model, tokenizer, group_size, remainder):
    corpus = write_lines(tmp_path / "c.txt", DOCS)
    result = prepare(tmp_path, model, [corpus], max_seq_length=8, group_size=group_size, remainder=remainder)

    bos = tokenizer.bos_token_id
    documents = [[bos] + tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in DOCS]  # BOS per document
    starts = range(0, len(documents), group_size or len(documents))
    groups = [documents[i : i + (group_size or len(documents))] for i in starts]
    expected = []
    for group in groups:
        stream = [token for document in group for token in document]
        expected += [stream[i : i + 8] for i in range(0, len(stream) // 8 * 8, 8)]
        tail = stream[len(stream) // 8 * 8 :]
        if remainder == "keep" and len(tail) >= 2:
            expected.append(tail)
    assert blocks_of(result) == expected
    assert expected[0][0] == bos
    train = load_from_disk(result.output)["train"]
    assert train["attention_mask"] == [[1] * len(block) for block in expected]
    assert result.summary["splits"]["train"]["tokens"] == sum(map(len, documents))


def test_same_blocks_as_run_mntp_from_the_same_text(tmp_path, model, tokenizer, corpus_files):
    result = prepare(tmp_path, model, [corpus_files["train"]], validation_input=[str(corpus_files["validation"])],
                     max_seq_length=16)
    source = TextSource(train_file=str(corpus_files["train"]), validation_file=str(corpus_files["validation"]))
    reference = mntp_datasets(tokenizer, 16, source)
    prepared = load_blocks(result.output, 5)
    for split in ("train", "validation"):
        assert prepared[split]["input_ids"] == reference[split]["input_ids"]


def split_documents(tmp_path, model, tokenizer, corpus, name, seed):
    """Each document alone in its block(s), decoded back: which documents each split got."""
    result = prepare(tmp_path, model, [corpus], name=name, seed=seed, validation_split_percentage=10,
                     max_seq_length=512, group_size=1, remainder="keep")
    return {split: [tokenizer.decode(ids, skip_special_tokens=True) for ids in blocks_of(result, split)]
            for split in ("train", "validation")}


def test_split_is_by_document_and_deterministic_under_the_seed(tmp_path, model, tokenizer):
    documents = [f"Документ номер {i}: {DOCS[i % len(DOCS)]}" for i in range(60)] + ["Повторен текст."] * 4
    corpus = write_lines(tmp_path / "c.txt", documents)
    first = split_documents(tmp_path, model, tokenizer, corpus, "a", seed=1)
    assert len(first["validation"]) in (6, 6 + 4)  # 10% of 64; the 4 copies of one text stay together
    assert sorted(first["train"] + first["validation"]) == sorted(documents)
    assert not set(first["train"]) & set(first["validation"]), "no document in both splits"
    assert split_documents(tmp_path, model, tokenizer, corpus, "b", seed=1) == first
    other = split_documents(tmp_path, model, tokenizer, corpus, "c", seed=2)
    assert set(other["validation"]) != set(first["validation"])
    shuffled = write_lines(tmp_path / "shuffled.txt", documents[::-1])
    assert set(split_documents(tmp_path, model, tokenizer, shuffled, "d", seed=1)["validation"]) == set(
        first["validation"]
    ), "the split does not depend on document order"


def test_summary_counts_and_caps(tmp_path, model, tokenizer):
    lines = DOCS + ["", "   ", "кратко", DOCS[0], DOCS[1]]
    corpus = write_lines(tmp_path / "c.txt", lines)
    validation = write_lines(tmp_path / "v.txt", [DOCS[2], "Нов валидационен текст, доста по-дълъг от другите."])
    result = prepare(tmp_path, model, [corpus], validation_input=[str(validation)], max_seq_length=4,
                     min_chars=10, dedup=True, max_train_samples=3, max_eval_samples=2)
    summary = json.loads((Path(result.output) / SUMMARY_FILE).read_text())
    assert summary == json.loads(json.dumps(result.summary))
    documents = summary["documents"]
    assert documents["train"]["read"] == 10 and documents["train"]["kept"] == 5
    assert documents["train"]["dropped"] == {"empty": 2, "too_short": 1, "duplicate": 2}
    assert documents["validation"]["dropped"] == {"empty": 0, "too_short": 0, "duplicate": 0, "in_train": 1}
    train = summary["splits"]["train"]
    tokens = sum(len(tokenizer(doc)["input_ids"]) for doc in DOCS)
    assert train["tokens"] == tokens and train["blocks"] == tokens // 4
    assert train["characters"] == sum(map(len, DOCS))
    assert train["tokens_per_character"] == pytest.approx(tokens / train["characters"])
    assert train["tokens_not_in_blocks"] == tokens - 4 * train["blocks"]
    assert train["blocks_saved"] == 3 and summary["splits"]["validation"]["blocks_saved"] == 2
    assert summary["tokenizer"]["adds_bos"] is True
    output = load_from_disk(result.output)
    assert (len(output["train"]), len(output["validation"])) == (3, 2)
    assert "also in train" in result.table and "tokens per character" in result.table


def test_rerun_reuses_the_cache(tmp_path, model):
    corpus = write_lines(tmp_path / "c.txt", DOCS * 3)
    first = prepare(tmp_path, model, [corpus], name="one", max_seq_length=8, validation_split_percentage=20)
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*")}
    second = prepare(tmp_path, model, [corpus], name="two", max_seq_length=8, validation_split_percentage=20)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*")} == cached, "nothing recomputed"
    assert blocks_of(first) == blocks_of(second) and blocks_of(first, "validation") == blocks_of(second, "validation")


def test_prepared_blocks_train_with_mntp(tmp_path, model, corpus_files):
    result = prepare(tmp_path, model, [corpus_files["train"]], max_seq_length=32, validation_split_percentage=20)
    config = MNTPConfig(
        model_name_or_path=model, dataset_path=result.output, output_dir=str(tmp_path / "mntp"), max_seq_length=32,
        per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=2, eval_steps=2, save_steps=2,
        max_eval_samples=4, lora_r=4, data_collator_type="all_mask", mlm_probability=0.5,
    )
    run = run_mntp(config, log=lambda *_: None)
    assert [row["Step"] for row in run.rows] == [0, 2]
    assert (Path(run.output_dir) / "adapter_model.safetensors").exists()


def test_prepared_blocks_of_another_length_are_an_error_naming_both(tmp_path, model, corpus_files):
    result = prepare(tmp_path, model, [corpus_files["train"]], max_seq_length=32, validation_split_percentage=20)
    for summary in (True, False):  # read from prepare_summary.json, else from the longest block
        if not summary:
            (Path(result.output) / "prepare_summary.json").unlink()
        config = MNTPConfig(model_name_or_path=model, dataset_path=result.output, output_dir=str(tmp_path / "x"), max_seq_length=64)
        with pytest.raises(ConfigError, match=r"max_seq_length=64 .*block length .*: 32"):
            run_mntp(config, log=lambda *_: None)
        assert not (tmp_path / "x").exists(), "nothing written"


def test_demo_corpus_prepares_from_the_command_line(tmp_path, model, capsys):
    output = tmp_path / "bg"
    status = main([
        "prepare", str(REPO / "data/bg/train.txt"), "--validation-input", str(REPO / "data/bg/validation.txt"),
        "--model", model, "--max-seq-length", "128", "--output", str(output), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert status == 0, capsys.readouterr().err
    blocks = load_blocks(str(output), 5)
    assert len(blocks["train"]) > 1000 and len(blocks["validation"]) > 50
    assert json.loads((output / SUMMARY_FILE).read_text())["documents"]["train"]["read"] == 5822
    assert "tokens per character" in capsys.readouterr().out


def run_cli(tmp_path, capsys, *arguments):
    status = main(["prepare", *map(str, arguments), "--output", str(tmp_path / "out" / "blocks"),
                   "--cache-dir", str(tmp_path / "cache")])
    return status, capsys.readouterr().err.strip()


def assert_clean_failure(tmp_path, status, err, *words):
    assert status == 2
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and err.splitlines()[-1] == error_lines[0], err
    for word in words:
        assert word in error_lines[0], error_lines[0]
    assert not (tmp_path / "out").exists(), "nothing may be written on bad input"


def test_bad_inputs(tmp_path, capsys, model):
    good = write_lines(tmp_path / "good.txt", DOCS)
    records = tmp_path / "r.jsonl"
    records.write_text('{"id": 1, "body": "текст"}\n', encoding="utf-8")
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes("добро\n".encode() + b"ok \xff bad\n")
    blank = write_lines(tmp_path / "blank.txt", ["", "  ", ""])
    single = write_lines(tmp_path / "single.txt", DOCS[:1])
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((Path(model) / "config.json").read_text())
    cases = [
        ((tmp_path / "missing.txt", "--model", model), ("inputs=", "missing.txt")),
        ((records, "--model", model), ("text_column='text'", "id, body", "--text-column")),
        ((bad_utf8, "--model", model), ("bad.txt", "byte 14", "--errors replace")),
        ((good, "--model", model, "--max-seq-length", 100000), ("no block", "max_seq_length")),
        ((blank, "--model", model), ("no block",)),
        ((single, "--model", model), ("1 document(s)", "--validation-split-percentage 0")),
        ((good, "--model", model, "--validation-split-percentage", 20, "--max-seq-length", 64),
         ("validation split has no block",)),
        ((good, "--model", no_tokenizer), ("model_name_or_path", "tokenizer")),
        ((good, "--model", tmp_path / "nowhere"), ("model_name_or_path", "nowhere")),
        ((good, "--model", model, "--remainder", "pad"), ("remainder='pad'", "drop, keep")),
        (("hub:nobody/nothing", "--model", model), ("hub:nobody/nothing",)),
    ]
    for arguments, words in cases:
        status, err = run_cli(tmp_path, capsys, *arguments)
        assert_clean_failure(tmp_path, status, err, *words)
    assert run_cli(tmp_path, capsys, bad_utf8, "--model", model, "--max-seq-length", 4, "--errors", "replace")[0] == 0
    status, err = run_cli(tmp_path, capsys, good, "--model", model)
    assert status == 2 and "--overwrite" in err.splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["blocks"], "no staging folder left behind"
