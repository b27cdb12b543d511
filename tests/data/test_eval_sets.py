"""Checks of the offline evaluation sets in data/eval/ (built by scripts/build_eval_sets.py).

Fast: no model, no network.  Verifies the file formats a loader depends on, minimum sizes,
no duplicates, no text equal to a training/validation line, no forbidden package in the
recorded sources, and the sha256 values recorded in data/eval/SOURCE.md.
"""
import fnmatch
import hashlib
import importlib.util
import json
import re
import unicodedata
from pathlib import Path

import pytest

from conftest import REPO

ROOT = REPO
EVAL = ROOT / "data" / "eval"
BG = ROOT / "data" / "bg"
TYPES = {"sts", "pair_classification", "retrieval", "reranking", "bitext_mining",
         "classification", "clustering", "hard_triples"}
LANGS = {"bul-Cyrl", "eng-Latn"}
FIELDS = {
    "bitext_mining": {"sentence1": str, "sentence2": str},
    "pair_classification": {"sentence1": str, "sentence2": str, "label": int},
    "retrieval": {"query": str, "positive": list},
    "reranking": {"query": str, "positive": list, "negative": list},
    "classification": {"text": str, "label": str},
    "clustering": {"text": str, "label": str},
    "hard_triples": {"anchor": str, "positive": str, "negative": str},
    "sts": {"sentence1": str, "sentence2": str, "score": (int, float)},
}
TASKS = sorted(p.parent.name for p in EVAL.glob("*/task.json"))


def norm(text):  # same as scripts/build_eval_sets.py norm()
    return "".join(c for c in unicodedata.normalize("NFC", text).lower() if c.isalnum())


def load_script():
    spec = importlib.util.spec_from_file_location(
        "build_eval_sets", ROOT / "scripts" / "build_eval_sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_jsonl(path):
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        assert line.strip(), f"{path}:{i + 1}: empty line"
        rows.append(json.loads(line))
    return rows


def texts(row):
    for k, v in row.items():
        if k in ("label", "score"):
            continue
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            yield from v


@pytest.fixture(scope="module")
def train_keys():
    keys = set()
    for name in ("train.txt", "validation.txt"):
        keys.update(norm(l) for l in (BG / name).read_text(encoding="utf-8").splitlines()
                    if l.strip())
    return keys


@pytest.fixture(scope="module")
def source_md():
    return (EVAL / "SOURCE.md").read_text(encoding="utf-8")


def test_there_are_tasks():
    assert len(TASKS) >= 4
    meta = [json.loads((EVAL / t / "task.json").read_text(encoding="utf-8")) for t in TASKS]
    assert len({m["type"] for m in meta}) >= 4
    assert sum("bul-Cyrl" in m["languages"] for m in meta) >= 2


def test_norm_matches_script():
    mod = load_script()
    for s in ("Hello, World!", "  Отваряне на _файл…  ", "Ёлка-2 «x»"):
        assert mod.norm(s) == norm(s)


@pytest.mark.parametrize("task", TASKS)
def test_task(task, train_keys):
    d = EVAL / task
    meta = json.loads((d / "task.json").read_text(encoding="utf-8"))
    for k in ("name", "type", "languages", "description", "source", "license"):
        assert k in meta, f"{task}: task.json lacks {k}"
    assert meta["name"] == task
    assert meta["type"] in TYPES
    assert isinstance(meta["languages"], list) and meta["languages"]
    assert set(meta["languages"]) <= LANGS
    for k in ("description", "source", "license"):
        assert isinstance(meta[k], str) and meta[k].strip()
    typ = meta["type"]
    if typ == "sts":
        assert meta["min_score"] < meta["max_score"]

    splits = ["test"] + (["train"] if typ == "classification" else [])
    allowed = {"task.json", "test.jsonl"} | ({"train.jsonl"} if typ == "classification" else set())
    allowed |= {"corpus.jsonl"} if typ == "retrieval" else set()
    assert {p.name for p in d.iterdir()} <= allowed
    data = {s: read_jsonl(d / f"{s}.jsonl") for s in splits}
    assert len(data["test"]) >= 100, f"{task}: only {len(data['test'])} test rows"

    for split, rows in data.items():
        seen = set()
        for row in rows:
            assert set(row) == set(FIELDS[typ]), f"{task}/{split}: keys {sorted(row)}"
            for k, t in FIELDS[typ].items():
                assert isinstance(row[k], t) and not isinstance(row[k], bool), (task, k)
            for t in texts(row):
                assert isinstance(t, str) and t.strip() and t == t.strip(), (task, t)
                assert norm(t) not in train_keys, f"{task}: equals a training line: {t!r}"
            if typ == "pair_classification":
                assert row["label"] in (0, 1)
            if typ in ("retrieval", "reranking"):
                assert row["positive"], f"{task}: empty positive list"
            if typ == "reranking":
                assert row["negative"]
            key = json.dumps(row, ensure_ascii=False, sort_keys=True)
            assert key not in seen, f"{task}/{split}: duplicate row {key[:80]}"
            seen.add(key)

    if typ == "pair_classification":
        labels = [r["label"] for r in data["test"]]
        assert 0 in labels and 1 in labels
    if typ == "bitext_mining":
        for side in ("sentence1", "sentence2"):
            vals = [norm(r[side]) for r in data["test"]]
            assert len(set(vals)) == len(vals), f"{task}: repeated {side}"
    if typ == "hard_triples":
        for r in data["test"]:
            assert len({norm(r["anchor"]), norm(r["positive"]), norm(r["negative"])}) == 3
    if typ == "classification":
        tr = {r["label"] for r in data["train"]}
        te = {r["label"] for r in data["test"]}
        assert len(tr) >= 2 and tr == te
        train_texts = {norm(r["text"]) for r in data["train"]}
        assert not train_texts & {norm(r["text"]) for r in data["test"]}
    if typ == "clustering":
        assert len({r["label"] for r in data["test"]}) >= 2
    if typ == "retrieval" and (d / "corpus.jsonl").exists():
        corpus = read_jsonl(d / "corpus.jsonl")
        docs = [r["text"] for r in corpus]
        assert all(set(r) == {"text"} and isinstance(r["text"], str) and r["text"].strip()
                   for r in corpus)
        assert len(set(docs)) == len(docs)
        assert not {norm(x) for x in docs} & train_keys
        positives = {p for r in data["test"] for p in r["positive"]}
        assert not positives & set(docs), "corpus repeats a positive"


def parse_bg_forbidden():
    """Reserved patterns and used packages, parsed from data/bg/SOURCE.md."""
    mod = load_script()
    reserved, used = mod.parse_bg_source_md(str(BG / "SOURCE.md"))
    assert reserved == set(mod.RESERVED) and used == set(mod.USED_FOR_TRAINING)
    assert {"libreoffice-l10n-*", "fortunes-*", "mythes-*", "wordnet*", "freedict-*"} <= reserved
    assert {"firefox-esr-l10n-bg", "wesnoth-1.16-data", "gedit-common", "tar"} <= used
    return reserved, used


def recorded_packages(source_md):
    block = source_md.split("## Packages (machine-readable)", 1)[1].split("```text", 1)[1]
    block = block.split("```", 1)[0]
    rows = [l.split() for l in block.strip().splitlines()]
    assert rows and all(len(r) == 3 for r in rows)
    return rows


def test_no_forbidden_package(source_md):
    reserved, used = parse_bg_forbidden()
    rows = recorded_packages(source_md)
    assert {r[0] for r in rows} == set(TASKS), "every task must list its packages"
    for task, pkg, _version in rows:
        assert pkg not in used, f"{task} uses training package {pkg}"
        assert not any(fnmatch.fnmatch(pkg, r) for r in reserved), f"{task} uses {pkg}"
    for task in TASKS:
        src = json.loads((EVAL / task / "task.json").read_text(encoding="utf-8"))["source"]
        for name in re.findall(r"([a-z0-9][a-z0-9.+-]+) \(", src):
            assert name not in used and not any(fnmatch.fnmatch(name, r) for r in reserved)
    mod = load_script()
    assert not [p for p in mod.PACKAGES if p in used or
                any(fnmatch.fnmatch(p, r) for r in reserved)]


def test_sha256_recorded(source_md):
    sums = re.findall(r"^([0-9a-f]{64})  (\S+)$", source_md, re.M)
    files = {str(p.relative_to(EVAL)) for p in EVAL.glob("*/*") if p.is_file()}
    assert {f for _, f in sums} == files
    for digest, rel in sums:
        assert hashlib.sha256((EVAL / rel).read_bytes()).hexdigest() == digest, rel


def test_size_budget():
    total = sum(p.stat().st_size for p in EVAL.rglob("*") if p.is_file())
    assert total < 1_500_000
