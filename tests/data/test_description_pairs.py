"""Checks of scripts/build_description_pairs.py's separation from data/eval and its row format.

Fast: no archive lists, no network; small hand-made packages and texts.
"""
import importlib.util
import json
import random

import pytest

from conftest import REPO

EVAL_TEXT = ("Frobnicator is a small tool that frobnicates widgets in place, keeping their "
             "original colour, size and shape while reporting every change it makes to the log.")


@pytest.fixture(scope="module")
def bdp():
    spec = importlib.util.spec_from_file_location(
        "build_description_pairs_for_test", REPO / "scripts" / "build_description_pairs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def sep(bdp):
    source_of = {"frob": "frob-src", "frob-data": "frob-src", "fortunes-bg": "fortune-bg",
                 "fortune-bg-extra": "fortune-bg", "other": "other"}
    return bdp.Separation(source_of, {"frob"}, [EVAL_TEXT, "Widget frobnicator"])


def test_refuses_eval_and_reserved_packages(sep):
    assert sep.package_problem("frob", "frob-src") == "eval package"
    assert sep.package_problem("frob-data", "frob-src") == "same source as an eval package"
    assert sep.package_problem("fortunes-bg", "fortune-bg") == "reserved package"
    assert sep.package_problem("fortune-bg-extra", "fortune-bg") == "same source as a reserved package"
    assert sep.package_problem("other", "other") is None


def test_refuses_eval_equal_text_and_shared_13_words(sep):
    assert sep.text_problem("widget  FROBNICATOR!") == "equals an eval text"
    # 13 consecutive eval words inside otherwise new text
    shared = "Unlike others, it frobnicates widgets in place, keeping their original colour, size and shape while reporting."
    assert "13-word" in sep.text_problem(shared)
    # 12 of them are not enough
    assert sep.text_problem("Unlike others, it frobnicates widgets in place, keeping their original colour, "
                            "size and shape while.") is None


def candidate(pkg, src, section, synopsis, text):
    return {"package": pkg, "source": src, "section": section, "version": "1", "synopsis": synopsis, "text": text}


def test_hard_negative_same_section_most_overlap_not_same_source(bdp):
    pos = candidate("a", "a", "net", "mail relay daemon", "A fast mail relay daemon with queue files and TLS support.")
    same_src = candidate("a-doc", "a", "net", "docs of a", "Mail relay daemon queue files TLS support documentation.")
    other_sec = candidate("b", "b", "games", "a game", "Mail relay daemon queue files and TLS support in a game.")
    best = candidate("c", "c", "net", "news server", "A news server with spool files and TLS support for readers.")
    weak = candidate("d", "d", "net", "ftp client", "An FTP client with TLS.")
    negatives = bdp.hard_negatives([pos, same_src, other_sec, best, weak])
    assert negatives["a"]["package"] == "c"


def test_rows_have_the_supervised_keys_and_pass_the_checks(bdp, sep):
    first = json.loads((REPO / "data" / "supervised" / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    rng = random.Random(1)
    vocab = [f"word{k}" for k in range(80)]
    pool = [candidate(f"p{i}", f"s{i}", "utils", f"tool number {i} for files",
                      f"Tool {i} " + " ".join(rng.sample(vocab, 12)) + ".") for i in range(40)]
    train, validation = bdp.build(pool, random.Random(0))
    assert train and validation
    row = train[0][0]
    assert list(row) == list(first) == list(bdp.KEYS)
    assert isinstance(row["negative"], list) and len(row["negative"]) == 1
    assert row["instruction"] == bdp.INSTRUCTION
    source_of = {c["package"]: c["source"] for c in pool} | {"frob": "frob-src"}
    assert bdp.check(train, validation, sep, source_of) == []
    bad = dict(train[0][0], positive=EVAL_TEXT)
    problems = bdp.check([(bad, train[0][1], train[0][2])] + train[1:], validation, sep, source_of)
    assert any("equals an eval text" in p for p in problems)
