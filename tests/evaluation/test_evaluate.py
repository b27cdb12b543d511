"""`bg2vec evaluate`: local tasks scored by MTEB's evaluators (checked against hand computations with designed
embeddings), the hard-triple metric, the report, the result cache, --compare, MTEB's Bulgarian task names,
out-of-memory adaptation, and quality curves during training (eval_tasks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bg2vec import Bg2Vec
from bg2vec.cli import main
from bg2vec.evaluation.local_tasks import hard_triple_scores, load_local_task
from bg2vec.evaluation.mteb_model import Bg2VecMTEB
from bg2vec.evaluation.runner import BULGARIAN_BENCHMARK, resolve_tasks, score_task


def write_task(folder: Path, kind: str, test: list[dict], train: list[dict] | None = None, corpus=None, **info) -> Path:
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps({"name": folder.name, "type": kind, "languages": ["bul-Cyrl"], **info}))
    for split, rows in (("test", test), ("train", train), ("corpus", corpus)):
        if rows is not None:
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return folder


class Designed:
    """An encoder whose embedding of each text is given: metrics then have values one can work out by hand."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode(self, sentences, batch_size=32, show_progress_bar=False, device=None, **kwargs):
        texts = [s if isinstance(s, str) else s[1] for s in sentences]
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model_dirs) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float32")


def designed(tiny_encoder, vectors) -> Bg2VecMTEB:
    model = Bg2VecMTEB(tiny_encoder, use_instructions=False)
    model.model = Designed(vectors)
    return model


def angle(t: float) -> list[float]:
    return [math.cos(t), math.sin(t)]


def test_retrieval_ndcg_and_mrr_by_hand(tiny_encoder, tmp_path):
    # q0's positive is second (a distractor is closer), q1's is first:
    # nDCG@10 = (1/log2(3) + 1) / 2, MRR@10 = (1/2 + 1) / 2
    vectors = {"q0": [1, 0, 0], "d0": [0.8, 0.6, 0], "noise": [1, 0.1, 0], "q1": [0, 0, 1], "d1": [0, 0, 1]}
    task = write_task(tmp_path / "ret", "retrieval", [{"query": "q0", "positive": ["d0"]}, {"query": "q1", "positive": ["d1"]}],
                      corpus=[{"text": "noise"}])
    score = score_task(designed(tiny_encoder, vectors), load_local_task(task))
    values = score.scores["test"][0]
    assert score.main_score == pytest.approx((1 / math.log2(3) + 1) / 2, abs=1e-4)
    assert values["mrr_at_10"] == pytest.approx(0.75, abs=1e-4)
    assert values["recall_at_1"] == pytest.approx(0.5, abs=1e-4)


def test_reranking_map_by_hand(tiny_encoder, tmp_path):
    # q0: candidates ranked n0 > p0 > n1 (AP 1/2); q1: p1 first (AP 1): MAP 0.75
    vectors = {"q0": angle(0), "p0": angle(0.4), "n0": angle(0.2), "n1": angle(1.2),
               "q1": angle(1.5), "p1": angle(1.5), "n2": angle(0.1)}
    task = write_task(tmp_path / "rr", "reranking", [{"query": "q0", "positive": ["p0"], "negative": ["n0", "n1"]},
                                                      {"query": "q1", "positive": ["p1"], "negative": ["n2"]}])
    assert score_task(designed(tiny_encoder, vectors), load_local_task(task)).main_score == pytest.approx(0.75, abs=1e-4)


def test_pair_classification_average_precision_by_hand(tiny_encoder, tmp_path):
    # cosines 0.9 (label 1), 0.8 (label 0), 0.7 (label 1): AP = (1 + 2/3) / 2; unit vectors in one quadrant
    # rank the pairs alike by cosine, dot, euclidean and manhattan distance, so the best of them is the same
    vectors = {"x": angle(0), **{f"y{c}": angle(math.acos(c)) for c in (0.9, 0.8, 0.7)}}
    rows = [{"sentence1": "x", "sentence2": f"y{c}", "label": label} for c, label in ((0.9, 1), (0.8, 0), (0.7, 1))]
    score = score_task(designed(tiny_encoder, vectors), load_local_task(write_task(tmp_path / "pc", "pair_classification", rows)))
    assert score.scores["test"][0]["cosine_ap"] == pytest.approx(5 / 6, abs=1e-4)
    assert score.main_score == pytest.approx(5 / 6, abs=1e-4)


def test_sts_spearman_by_hand(tiny_encoder, tmp_path):
    # cosine ranks (3, 2, 1) against gold ranks (3, 1, 2): rho = 1 - 6 * 2 / (3 * 8) = 0.5
    vectors = {"x": angle(0), **{f"y{c}": angle(math.acos(c)) for c in (0.9, 0.5, 0.1)}}
    rows = [{"sentence1": "x", "sentence2": f"y{c}", "score": gold} for c, gold in ((0.9, 5), (0.5, 1), (0.1, 3))]
    task = write_task(tmp_path / "sts", "sts", rows, min_score=0, max_score=5)
    assert score_task(designed(tiny_encoder, vectors), load_local_task(task)).main_score == pytest.approx(0.5, abs=1e-6)


def test_bitext_mining_both_ways(tiny_encoder, tmp_path):
    # forward every bg finds its en; backward "en2" finds "bg1" (closer than bg2): 2 of 3 right that way
    vectors = {"bg0": angle(0), "bg1": angle(0.8), "bg2": angle(1.5), "en0": angle(0.05), "en1": angle(0.75), "en2": angle(1.05)}
    rows = [{"sentence1": f"bg{i}", "sentence2": f"en{i}"} for i in range(3)]
    score = score_task(designed(tiny_encoder, vectors), load_local_task(write_task(tmp_path / "bt", "bitext_mining", rows)))
    forward, backward = score.scores["forward"]["test"][0], score.scores["backward"]["test"][0]
    assert forward["accuracy"] == 1.0
    assert backward["accuracy"] == pytest.approx(2 / 3)
    assert score.main_score == pytest.approx((forward["f1"] + backward["f1"]) / 2)


def test_classification_and_clustering_of_separable_embeddings(tiny_encoder, tmp_path):
    rng = np.random.default_rng(0)
    centres = {"a": [10, 0, 0], "b": [0, 10, 0], "c": [0, 0, 10]}
    rows = [{"text": f"{label}{i}", "label": label} for label in centres for i in range(12)]
    vectors = {r["text"]: list(np.array(centres[r["label"]]) + rng.normal(0, 0.5, 3)) for r in rows}
    model = designed(tiny_encoder, vectors)
    classification = write_task(tmp_path / "cls", "classification", rows[::2], train=rows[1::2])
    assert score_task(model, load_local_task(classification)).main_score == 1.0
    clustering = write_task(tmp_path / "clu", "clustering", rows)
    assert score_task(model, load_local_task(clustering)).main_score == pytest.approx(1.0)


def test_hard_triple_metric_by_hand():
    anchors = np.array([[1.0, 0.0], [0.0, 2.0]])
    positives = np.array([[1.0, 1.0], [0.0, 1.0]])  # cosines 0.7071, 1
    negatives = np.array([[0.0, 1.0], [1.0, 1.0]])  # cosines 0, 0.7071
    scores = hard_triple_scores(anchors, positives, negatives)
    assert scores["margin"] == pytest.approx(((0.70711 - 0) + (1 - 0.70711)) / 2, abs=1e-5)
    assert scores["accuracy"] == 1.0


def test_bulgarian_benchmark_names_are_mteb_tasks():
    tasks = resolve_tasks([], "bulgarian")
    assert [t.metadata.name for t in tasks] == list(BULGARIAN_BENCHMARK)


def test_out_of_memory_halves_the_batch_and_carries_on(tiny_encoder):
    class Tight:
        def encode(self, sentences, batch_size=32, **kwargs):
            if batch_size > 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return np.ones((len(sentences), 3), dtype=np.float32)

    model = Bg2VecMTEB(tiny_encoder, use_instructions=False)
    model.model = Tight()
    out = model.encode([{"text": ["a"] * 10}], task_metadata=None, hf_split="test", hf_subset="default", batch_size=32)
    assert out.shape == (10, 3) and model.batch_size == 4


def tiny_tasks(root: Path) -> list[str]:
    words = "ябълка круша слива дюля череша вишна праскова кайсия".split()
    pairs = [{"sentence1": f"{words[i % 8]} {words[(i + 1) % 8]}", "sentence2": f"{words[(i * 3) % 8]} {words[(i + 2) % 8]}",
              "label": i % 2} for i in range(20)]
    triples = [{"anchor": words[i % 8], "positive": f"{words[i % 8]} {words[(i + 1) % 8]}", "negative": words[(i + 4) % 8]}
               for i in range(10)]
    return [str(write_task(root / "tiny-pairs", "pair_classification", pairs)),
            str(write_task(root / "tiny-triples", "hard_triples", triples))]


def test_cli_report_cache_and_compare(tiny_model_dirs, tmp_path, capsys, monkeypatch):
    tasks = tiny_tasks(tmp_path / "tasks")
    cache = tmp_path / "cache"
    base = ["evaluate", "--tasks", *tasks, "--cache-dir", str(cache)]
    assert main([*base, "--model", str(tiny_model_dirs["mistral"]), "--label", "mistral", "--output-dir", str(tmp_path / "a")]) == 0
    assert main([*base, "--model", str(tiny_model_dirs["llama"]), "--label", "llama", "--output-dir", str(tmp_path / "b")]) == 0
    for name in ("evaluation.json", "evaluation.md", "evaluation.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    first = json.loads((tmp_path / "a" / "evaluation.json").read_text())["runs"][0]
    assert [t["task"] for t in first["tasks"]] == ["tiny-pairs", "tiny-triples"]

    # a re-run takes every score from the cache: the model is never loaded
    import bg2vec.recipes.evaluate as recipe

    monkeypatch.setattr(recipe, "Bg2VecMTEB", lambda *a, **k: pytest.fail("the model was loaded"))
    capsys.readouterr()
    assert main([*base, "--model", str(tiny_model_dirs["mistral"]), "--output-dir", str(tmp_path / "again")]) == 0
    assert "tiny-pairs: %.4f (cached)" % first["tasks"][0]["main_score"] in capsys.readouterr().out

    assert main(["evaluate", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(tmp_path / "both")]) == 0
    table = (tmp_path / "both" / "evaluation.md").read_text().splitlines()
    assert table[0] == "| task | mistral | llama |"
    assert table[2].startswith("| tiny-pairs |") and "**" in table[2]
    assert table[-1].startswith("| **average** |")


def test_evaluate_resolves_each_model_once(tiny_model_dirs, tmp_path, monkeypatch):
    """One resolution per model serves both the cache key and the load (`Bg2Vec.from_plan`)."""
    import bg2vec.models.layouts as layouts

    resolved, plan_of = [], layouts._plan
    monkeypatch.setattr(layouts, "_plan", lambda reference, setting, depth: (
        resolved.append(reference) if depth == 0 else None, plan_of(reference, setting, depth))[1])
    models = [str(tiny_model_dirs["mistral"]), str(tiny_model_dirs["llama"])]
    assert main(["evaluate", "--model", models[0], "--model", models[1], "--tasks", *tiny_tasks(tmp_path / "tasks"), "--no-cache",
                 "--output-dir", str(tmp_path / "out")]) == 0
    assert resolved == models
    runs = json.loads((tmp_path / "out" / "evaluation.json").read_text())["runs"]
    assert [run["model"] for run in runs] == models and all(len(run["tasks"]) == 2 for run in runs)


def test_bad_evaluate_inputs_are_one_line(tiny_model_dirs, tmp_path, capsys):
    model = str(tiny_model_dirs["mistral"])
    broken = write_task(tmp_path / "broken", "pair_classification", [{"sentence1": "a", "sentence2": "b", "label": 1}])
    (broken / "test.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 1}\n{"sentence1": "a"}\n')
    cases = [
        (["--tasks", "NoSuchTask"], ("tasks", "NoSuchTask")),
        (["--tasks", str(broken)], ("test.jsonl:2", "sentence2")),
        (["--tasks", str(broken), "--output-dir", str(broken)], ("--output-dir", "--tasks")),
        (["--tasks", str(broken), "--batch-size", "0"], ("batch_size",)),
    ]
    for extra, words in cases:
        argv = ["evaluate", "--model", model, "--output-dir", str(tmp_path / "out"), *extra]
        if "--output-dir" in extra:
            argv = ["evaluate", "--model", model, *extra]
        assert main(argv) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert all(word in line for word in words), line
        assert not (tmp_path / "out").exists()


def test_eval_tasks_are_scored_during_training_next_to_the_loss(tiny_model_dirs, corpus_files, tmp_path, capsys):
    tasks = tiny_tasks(tmp_path / "tasks")
    out = tmp_path / "mntp"
    config = tmp_path / "run.json"
    config.write_text(json.dumps(dict(
        model_name_or_path=str(tiny_model_dirs["mistral"]), train_file=str(corpus_files["train"]),
        validation_file=str(corpus_files["validation"]), output_dir=str(out), max_seq_length=16, max_steps=4,
        eval_steps=2, save_steps=100, per_device_train_batch_size=2, learning_rate=5e-2, eval_tasks=tasks,
    )))
    assert main(["mntp", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-pairs" in printed and "tiny-triples" in printed  # columns of the run table
    table = json.loads((out / "metrics.json").read_text())["table"]
    assert [row["Step"] for row in table] == [0, 2, 4]
    assert all(isinstance(row["tiny-triples"], float) for row in table)
    assert table[-1]["tiny-triples"] != table[0]["tiny-triples"], "the scores follow training"

    # Scored with the encoder the output loads (max_length 512 capped at the model's positions), not with the
    # 16-token training blocks; metrics.json says so, and evaluate given the same settings gives step 0's score
    # (the untrained, bidirectional, mean-pooled model) whatever the tokenizer makes of the texts.
    scored_with = json.loads((out / "metrics.json").read_text())["eval_tasks_encoder"]
    assert scored_with["max_length"] == 512 and scored_with["pooling_mode"] == "mean"
    assert main(["evaluate", "--model", str(tiny_model_dirs["mistral"]), "--tasks", *tasks, "--no-cache",
                 "--max-length", str(scored_with["max_length"]), "--pooling-mode", scored_with["pooling_mode"],
                 "--output-dir", str(tmp_path / "base")]) == 0
    base = json.loads((tmp_path / "base" / "evaluation.json").read_text())["runs"][0]["tasks"]
    assert table[0]["tiny-triples"] == pytest.approx(base[1]["main_score"], abs=1e-5)
    assert table[0]["tiny-pairs"] == pytest.approx(base[0]["main_score"], abs=1e-5)


def test_every_task_type_goes_through_the_cli_and_its_cache(tiny_model_dirs, tmp_path):
    """Scores with nested MTEB values (clustering's per-level lists, classification's runs) are stored as JSON."""
    rows = [{"text": f"{label} {i}", "label": label} for label in ("ябълка", "круша") for i in range(8)]
    tasks = [str(write_task(tmp_path / "clu", "clustering", rows)),
             str(write_task(tmp_path / "cls", "classification", rows[::2], train=rows[1::2])),
             str(write_task(tmp_path / "bt", "bitext_mining", [{"sentence1": r["text"], "sentence2": r["label"]} for r in rows]))]
    argv = ["evaluate", "--model", str(tiny_model_dirs["qwen2"]), "--tasks", *tasks, "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--output-dir", str(tmp_path / "one")]) == 0
    assert main([*argv, "--output-dir", str(tmp_path / "two")]) == 0
    one, two = (json.loads((tmp_path / n / "evaluation.json").read_text())["runs"][0]["tasks"] for n in ("one", "two"))
    assert one == two and [t["type"] for t in one] == ["clustering", "classification", "bitext_mining"]
