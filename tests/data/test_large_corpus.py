"""Separation checks of scripts/build_large_corpus.py on small synthetic inputs (no network, no .debs).

Each forbidden case must be refused: a text equal to an evaluation text (up to case, punctuation, spacing), a
text sharing a 13-word sequence with one, a reserved package, a package of the evaluation sets, a package in
both splits; and the rows it writes must have data/supervised's keys.
"""
import importlib.util
import json
import sys

import pytest

from conftest import REPO

SCRIPTS = REPO / "scripts"


@pytest.fixture(scope="module")
def large():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("build_large_corpus_for_test", SCRIPTS / "build_large_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EVAL_TEXT = ("Изберете папката, в която да се запазват снимките от камерата, и натиснете бутона за "
             "потвърждение на избора")
RESERVED = {"libreoffice-l10n-*", "fortunes-*", "wordnet*"}


def test_text_equal_to_an_eval_text_is_refused(large):
    index = large.EvalIndex([EVAL_TEXT, "Open the file"])
    assert index.reason("  open THE file! ") == "equal"
    assert index.reason(EVAL_TEXT.upper() + ".") == "equal"
    problems = large.text_problems([("bg/train.txt", "Open the file."), ("bg/train.txt", "Отваряне на файл")], index)
    assert [(w, r) for w, r, _ in problems] == [("bg/train.txt", "equal")]


def test_shared_13_word_sequence_is_refused_and_12_is_not(large):
    index = large.EvalIndex([EVAL_TEXT])
    words = EVAL_TEXT.replace(",", "").split()
    thirteen = "Съвет: " + " ".join(words[2:15]) + " веднага."
    twelve = "Съвет: " + " ".join(words[2:14]) + " веднага."
    assert index.reason(thirteen) == "ngram"
    assert index.reason(twelve) is None


def test_reserved_and_eval_packages_and_shared_packages_are_refused(large):
    assert large.package_problems(["gnome-photos"], ["nano"], RESERVED, {"baobab"}) == []
    assert large.package_problems(["libreoffice-l10n-bg"], [], RESERVED, set()) == [
        "libreoffice-l10n-bg: reserved for outside evaluation"]
    assert large.package_problems([], ["wordnet-base"], RESERVED, set()) == [
        "wordnet-base: reserved for outside evaluation"]
    assert large.package_problems(["baobab"], [], RESERVED, {"baobab"}) == ["baobab: package of the evaluation sets"]
    assert large.package_problems(["nano"], ["nano"], RESERVED, set()) == ["nano: in both train and validation"]


def test_forbidden_packages_are_never_chosen_for_download(large):
    sizes = {"fortunes-bg": 10, "baobab": 10, "gnome-photos": 10, "huge": 10**9, "tar": 10}
    chosen, skipped = large.choose(sorted(sizes), sizes, RESERVED, {"baobab"}, 30e6, 3e9)
    assert chosen == ["gnome-photos"]
    assert set(skipped) == {"fortunes-bg", "baobab", "huge", "tar"}   # tar: a data/bg eval_pairs catalog


def test_real_eval_sets_are_in_the_index(large):
    row = json.loads((REPO / "data" / "eval" / "debian-bitext-bul-eng" / "test.jsonl").read_text(
        encoding="utf-8").splitlines()[0])
    index = large.EvalIndex(large.eval_texts())
    assert all(index.reason(t) == "equal" for t in row.values() if isinstance(t, str) and t.strip())


def test_rows_have_the_keys_of_data_supervised(large):
    keys = large.reference_keys()
    assert keys == ["query", "positive", "negative", "instruction"]
    pool = [("Save the photo", "Запазване на снимката"), ("Delete the photo now", "Изтриване на снимката сега"),
            ("Quit", "Изход от програмата")]
    finder = large.NegativeFinder(pool)
    index = large.EvalIndex([EVAL_TEXT])
    catalogs = {"gnome-photos": [("Save the photo", "Запазване на снимката"),
                                 ("Delete the photo now", "Изтриване на снимката сега")],
                "gnome-maps-x": [("Save the photo", "Съхраняване на снимката")]}
    rows = large.build_pairs(sorted(catalogs), catalogs, {p: finder for p in catalogs}, index,
                             __import__("collections").defaultdict(int))
    written = [r for split in rows.values() for r, _, _ in split]
    assert written and large.row_problems(written, keys) == []
    assert large.row_problems([{"query": "a", "positive": "b", "negative": ["c"]}], keys)


def test_negative_finder_matches_the_supervised_rule(large):
    import build_supervised_set as sup

    pool = [("Save the photo", "Запазване на снимката"), ("Delete the photo now", "Изтриване на снимката сега"),
            ("Quit", "Изход от програмата"), ("Open a new window", "Отваряне на нов прозорец"),
            ("Open the photo", "Отваряне на снимката")]
    finder = large.NegativeFinder(pool)
    for en, bg in pool + [("Close", "Затваряне на прозорец"), ("Zzz", "Нещо съвсем друго")]:
        for banned in (set(), {"отваряненаснимката"}):
            assert finder(en, bg, banned) == sup.hard_negative(en, bg, pool, banned)
