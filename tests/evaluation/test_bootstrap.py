"""Bootstrap intervals in `bg2vec evaluate`: per-item scores reproduce the main score of each local task type (from
the vectors MTEB's evaluator used), the seeded percentile interval matches a hand computation, paired differences
are marked only when their interval excludes zero, and the JSON, table and chart carry them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bg2vec.cli import main
from bg2vec.evaluation.bootstrap import add_intervals, bootstrap_interval, paired_difference, resample_indices, statistic
from bg2vec.evaluation.local_tasks import load_local_task
from bg2vec.evaluation.report import differences_table
from bg2vec.evaluation.runner import score_task

from test_evaluate import angle, designed, tiny_encoder, tiny_tasks, write_task  # noqa: F401  (fixture)


def test_interval_of_a_mean_by_hand():
    # items (0, 0, 0, 1): a resample's mean is Binomial(4, 1/4) / 4, P(0) = .316, P(.25) = .422, P(.5) = .211,
    # P(.75) = .047, P(1) = .004: the 2.5th percentile is 0 and the 97.5th is .75 (P(<= .5) = .949 < .975)
    assert bootstrap_interval("t", {"statistic": "mean", "values": [0, 0, 0, 1]}, 0.25) == (0.0, 0.75)
    # the same draws whatever the model: seeded by task name and item count
    np.testing.assert_array_equal(resample_indices("t", 4), resample_indices("t", 4))
    assert not np.array_equal(resample_indices("t", 4), resample_indices("u", 4))
    # identical items: no width; a shifted main score (a stand-in's items) moves the interval, not its width
    assert bootstrap_interval("t", {"statistic": "mean", "values": [0.5] * 5}, 0.5) == (0.5, 0.5)
    assert bootstrap_interval("t", {"statistic": "mean", "values": [0, 0, 0, 1]}, 0.35) == pytest.approx((0.1, 0.85))


def test_hand_resample_of_spearman_and_average_precision():
    items = {"statistic": "spearman", "values": [[0.9, 5], [0.5, 1], [0.1, 3], [0.3, 2]]}
    assert statistic(items) == pytest.approx(0.2)  # ranks (4, 3, 1, 2) vs (4, 1, 3, 2): 1 - 6 * 8 / (4 * 15)
    assert statistic(items, np.array([0, 0, 1, 2])) == pytest.approx(statistic({"statistic": "spearman", "values": [[0.9, 5], [0.9, 5], [0.5, 1], [0.1, 3]]}))
    ap = {"statistic": "average_precision", "values": [[0.9, 0.9, 1], [0.8, 0.8, 0], [0.7, 0.7, 1]]}
    assert statistic(ap) == pytest.approx(5 / 6)
    assert statistic(ap, np.array([0, 2, 2])) == 1.0  # positives only
    v = {"statistic": "v_measure", "values": [[0, 0], [0, 0], [1, 1], [1, 1]]}
    assert statistic(v) == pytest.approx(1.0)


def test_items_reproduce_the_main_scores(tiny_encoder, tmp_path):
    retrieval_vectors = {"q0": [1, 0, 0], "d0": [0.8, 0.6, 0], "noise": [1, 0.1, 0], "q1": [0, 0, 1], "d1": [0, 0, 1]}
    retrieval = write_task(tmp_path / "ret", "retrieval", [{"query": "q0", "positive": ["d0"]}, {"query": "q1", "positive": ["d1"]}],
                           corpus=[{"text": "noise"}])
    score = score_task(designed(tiny_encoder, retrieval_vectors), load_local_task(retrieval))
    assert score.items["values"] == pytest.approx([1 / math.log2(3), 1.0])  # nDCG@10 of each query
    assert statistic(score.items) == pytest.approx(score.main_score, abs=1e-4)

    vectors = {"x": angle(0), **{f"y{c}": angle(math.acos(c)) for c in (0.9, 0.5, 0.1, 0.3)}}
    rows = [{"sentence1": "x", "sentence2": f"y{c}", "score": g, "label": int(g > 2)} for c, g in ((0.9, 5), (0.5, 1), (0.1, 3), (0.3, 2))]
    for kind in ("sts", "pair_classification"):
        score = score_task(designed(tiny_encoder, vectors), load_local_task(write_task(tmp_path / kind, kind, rows)))
        assert statistic(score.items) == pytest.approx(score.main_score, abs=1e-4), kind

    vectors = {"bg0": angle(0), "bg1": angle(0.8), "bg2": angle(1.5), "en0": angle(0.05), "en1": angle(0.75), "en2": angle(1.05)}
    bitext = write_task(tmp_path / "bt", "bitext_mining", [{"sentence1": f"bg{i}", "sentence2": f"en{i}"} for i in range(3)])
    score = score_task(designed(tiny_encoder, vectors), load_local_task(bitext))
    assert score.items["values"] == [[0, 0, 0], [1, 1, 1], [2, 2, 1]]  # (row, forward, backward): en2 finds bg1
    assert statistic(score.items) == pytest.approx(score.main_score, abs=1e-4)


def test_paired_differences_are_marked_only_when_the_interval_excludes_zero():
    a = {"main_score": 0.5, "items": {"statistic": "mean", "values": [0, 1] * 20}}
    better = {"main_score": 0.75, "items": {"statistic": "mean", "values": [1, 1] * 10 + [0, 1] * 10}}
    noisy = {"main_score": 0.525, "items": {"statistic": "mean", "values": [1, 1] + [0, 1] * 19}}
    found = paired_difference("t", better, a)
    assert found["difference"] == pytest.approx(0.25) and found["significant"] and found["interval"][0] > 0
    assert not paired_difference("t", noisy, a)["significant"]
    assert paired_difference("t", a, a) == {"difference": 0.0, "interval": [0.0, 0.0], "significant": False}
    runs = [{"model": m, "tasks": [{"task": "t", **entry}]} for m, entry in (("a", a), ("b", better), ("c", noisy))]
    add_intervals(runs)
    table = differences_table(runs).splitlines()
    assert table[2] == "| task | b | c |"
    assert table[4].startswith("| t | +0.250 [") and table[4].split("|")[2].strip().endswith("*")
    assert not table[4].split("|")[3].strip().endswith("*")
    assert runs[0]["average_interval"] == runs[0]["tasks"][0]["interval"]  # one task: the average is that task


def test_cli_writes_intervals_to_json_table_and_compare(tiny_model_dirs, tmp_path):
    tasks = tiny_tasks(tmp_path / "tasks")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    for name in ("mistral", "llama"):
        assert main(["evaluate", "--model", str(tiny_model_dirs[name]), "--label", name, "--tasks", *tasks, *cache,
                     "--output-dir", str(tmp_path / name)]) == 0
    run = json.loads((tmp_path / "mistral" / "evaluation.json").read_text())["runs"][0]
    for task in run["tasks"]:
        low, high = task["interval"]
        assert low <= task["main_score"] <= high and high > low
    assert run["average_interval"][0] <= run["average"] <= run["average_interval"][1]
    assert "±" in (tmp_path / "mistral" / "evaluation.md").read_text()
    # cached scores keep their items: the same interval from the cache
    assert main(["evaluate", "--model", str(tiny_model_dirs["mistral"]), "--tasks", *tasks, *cache, "--output-dir", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "evaluation.json").read_text())["runs"][0]
    assert [t["interval"] for t in again["tasks"]] == [t["interval"] for t in run["tasks"]]
    assert main(["evaluate", "--compare", str(tmp_path / "mistral"), str(tmp_path / "llama"), "--output-dir", str(tmp_path / "both")]) == 0
    text = (tmp_path / "both" / "evaluation.md").read_text()
    assert "Difference from mistral" in text and "| tiny-triples | " in text.split("Difference from")[1]


def test_texts_the_evaluator_skipped_are_encoded_for_the_items(tiny_encoder, tmp_path):
    """MTEB's classification may subsample train rows: the stand-in classifier still sees every train text."""
    from bg2vec.evaluation.runner import _Recording

    model = designed(tiny_encoder, {"a": [1.0, 0.0], "b": [0.0, 1.0]})
    with _Recording(model) as seen:
        model.encode([{"text": ["a"]}], task_metadata=None, hf_split="test", hf_subset="default")
        vectors = seen.vectors(["a", "b"], "query")
    np.testing.assert_array_equal(vectors, [[1.0, 0.0], [0.0, 1.0]])


def test_every_resample_at_once_equals_scipy_and_scikit_learn():
    """`statistics` scores all resamples in numpy; each must equal the library's own score of that resample
    (ties, repeated rows, one-class resamples and constant columns included)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, f1_score, v_measure_score

    from bg2vec.evaluation.bootstrap import statistics

    rng, n = np.random.default_rng(1), 40
    reference = {
        "spearman": lambda v: np.nan_to_num(spearmanr(v[:, 0], v[:, 1]).statistic),
        "average_precision": lambda v: v[0, -1] if v[:, -1].min() == v[:, -1].max()
        else max(average_precision_score(v[:, -1], v[:, c]) for c in range(v.shape[1] - 1)),
        "bitext_f1": lambda v: np.mean([f1_score(v[:, 0], v[:, c], zero_division=0, average="weighted") for c in (1, 2)]),
        "v_measure": lambda v: v_measure_score(v[:, 1], v[:, 0]),
    }
    values = {
        "spearman": np.c_[rng.integers(0, 6, n), rng.integers(0, 3, n)],
        "average_precision": np.c_[rng.integers(0, 5, n) / 5, rng.normal(size=n), rng.random(n) < 0.2],
        "bitext_f1": np.c_[np.arange(n), np.where(rng.random(n) < 0.6, np.arange(n), rng.integers(0, n, n)), rng.integers(0, n, n)],
        "v_measure": np.c_[rng.integers(0, 4, n), rng.integers(0, 3, n)],
    }
    indices = np.concatenate([resample_indices("t", n, 150), np.zeros((1, n), dtype=int)])  # + one row repeated
    for kind, table in values.items():
        items = {"statistic": kind, "values": table.astype(float).tolist()}
        expected = [reference[kind](table.astype(float)[index]) for index in indices]
        np.testing.assert_allclose(statistics(items, indices), expected, atol=1e-12, err_msg=kind)
