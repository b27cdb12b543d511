"""Checks of the supervised set in data/supervised/ (built by scripts/build_supervised_set.py).

Fast: no model, no network.  Verifies the format a loader depends on, sizes, no duplicates,
package separation (train vs validation, and against the training corpus, the reserved
packages and the evaluation sets), no text equal to a training line or an evaluation text,
and the sha256 values recorded in data/supervised/SOURCE.md.
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
SUP = ROOT / "data" / "supervised"
BG = ROOT / "data" / "bg"
EVAL = ROOT / "data" / "eval"
FILES = ("train", "validation")
INSTRUCTION = "Retrieve the Bulgarian translation of the English text; "
CYR = re.compile(r"[\u0400-\u04FF]")
RESERVED = {"libreoffice-l10n-*", "fortunes-*", "mythes-*", "wordnet*", "freedict-*",
            "dict-freedict-*"}


def norm(text):  # same as scripts/build_eval_sets.py norm()
    return "".join(c for c in unicodedata.normalize("NFC", text).lower() if c.isalnum())


def load_eval_script():
    spec = importlib.util.spec_from_file_location(
        "build_eval_sets_for_supervised_test", ROOT / "scripts" / "build_eval_sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rows():
    out = {}
    for name in FILES:
        path = SUP / f"{name}.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        assert all(l.strip() for l in lines), f"{path}: empty line"
        out[name] = [json.loads(l) for l in lines]
    return out


@pytest.fixture(scope="module")
def source_md():
    return (SUP / "SOURCE.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def split_packages(source_md):
    block = source_md.split("## Packages (machine-readable)", 1)[1].split("```text", 1)[1]
    pkgs = {name: set() for name in FILES}
    for line in block.split("```", 1)[0].splitlines():
        parts = line.split()
        if parts:
            assert len(parts) == 3 and parts[0] in FILES, line
            pkgs[parts[0]].add(parts[1])
    return pkgs


def eval_source_packages():
    text = (EVAL / "SOURCE.md").read_text(encoding="utf-8")
    block = text.split("## Packages (machine-readable)", 1)[1].split("```text", 1)[1]
    pkgs = {l.split()[1] for l in block.split("```", 1)[0].splitlines() if len(l.split()) == 3}
    pkgs |= set(re.findall(r"^\| ([a-z0-9][a-z0-9.+-]+) \|", text, re.M)) - {"package"}
    return pkgs


def test_fields(rows):
    for name, rs in rows.items():
        for i, r in enumerate(rs):
            where = f"{name}.jsonl:{i + 1}"
            assert set(r) == {"query", "positive", "negative", "instruction"}, where
            for k in ("query", "positive"):
                assert isinstance(r[k], str) and r[k].strip(), where
            assert r["instruction"] == INSTRUCTION, where
            neg = r["negative"]
            assert isinstance(neg, list) and neg, where
            for n in neg:
                assert isinstance(n, str) and n.strip(), where
                assert norm(n) != norm(r["positive"]), where
            assert not CYR.search(r["query"]), where
            assert CYR.search(r["positive"]) and all(CYR.search(n) for n in neg), where
            assert len(r["query"].split()) >= 3 and len(r["positive"].split()) >= 3, where
            assert not re.search(r"%[a-z0-9]|\{\d*\}|\$[A-Za-z_]|</?[a-z]", r["query"]), where


def test_sizes(rows):
    assert len(rows["train"]) >= 1000
    assert len(rows["validation"]) >= 150
    total = sum(p.stat().st_size for p in SUP.iterdir() if p.is_file())
    assert total < 700_000


def test_no_duplicate_texts(rows):
    for field in ("query", "positive"):
        keys = [norm(r[field]) for name in FILES for r in rows[name]]
        assert len(keys) == len(set(keys)), f"duplicate {field} texts"
    # a negative of one file is never a query/positive of the other
    for a, b in (("train", "validation"), ("validation", "train")):
        other = {norm(r[k]) for r in rows[b] for k in ("query", "positive")}
        assert not {norm(n) for r in rows[a] for n in r["negative"]} & other


def test_split_packages_disjoint(split_packages):
    assert split_packages["train"] and split_packages["validation"]
    assert not split_packages["train"] & split_packages["validation"]


def test_no_forbidden_package(split_packages):
    mod = load_eval_script()
    reserved, used = mod.parse_bg_source_md(BG / "SOURCE.md")
    assert used, "no training packages parsed from data/bg/SOURCE.md"
    reserved = set(reserved) | RESERVED
    eval_pkgs = set(mod.PACKAGES) | eval_source_packages()
    assert len(mod.PACKAGES) >= 100 and len(eval_pkgs) > len(mod.PACKAGES)
    for pkg in split_packages["train"] | split_packages["validation"]:
        assert pkg not in used, f"{pkg} is used for training"
        assert pkg not in eval_pkgs, f"{pkg} is used by the evaluation sets"
        assert not any(fnmatch.fnmatch(pkg, r) for r in reserved), f"{pkg} is reserved"


def test_no_training_or_eval_text(rows):
    banned = set()
    for name in ("train.txt", "validation.txt"):
        banned.update(norm(l) for l in (BG / name).read_text(encoding="utf-8").splitlines()
                      if l.strip())
    for path in sorted(EVAL.glob("**/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            for k, v in json.loads(line).items():
                if k in ("label", "score"):
                    continue
                for t in (v if isinstance(v, list) else [v]):
                    if isinstance(t, str):
                        banned.add(norm(t))
    banned.discard("")
    for name, rs in rows.items():
        for r in rs:
            for t in [r["query"], r["positive"]] + r["negative"]:
                assert norm(t) not in banned, f"{name}: {t!r} equals a training/eval text"


def test_sha256_recorded(source_md):
    for name in FILES:
        digest = hashlib.sha256((SUP / f"{name}.jsonl").read_bytes()).hexdigest()
        assert f"{digest}  {name}.jsonl" in source_md, f"sha256 of {name}.jsonl not recorded"


def test_row_counts_recorded(rows, source_md):
    for name in FILES:
        assert f"| `{name}.jsonl` | {len(rows[name])} |" in source_md
