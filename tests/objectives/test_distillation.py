"""Distillation from stored teacher vectors (`teacher_embeddings` in simcse): the similarity-matrix MSE against a
hand computation, teacher rows reaching the batch by training-file row, and one-line refusals of a bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bg2vec.cli import main
from bg2vec.objectives.distillation import read_teacher_embeddings, similarity_matrix_mse

from conftest import CORPUS


def test_similarity_matrix_mse_by_hand():
    # student rows at 0° and 90° (cos 0), teacher rows at 0° and 60° in 3-d (cos 0.5): the off-diagonal entries
    # differ by 0.5, the diagonal by 0: MSE = 2 * 0.25 / 4 = 0.125, whatever the dimensions
    student = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.5, 3 ** 0.5 / 2, 0.0]])
    assert similarity_matrix_mse(student, teacher).item() == pytest.approx(0.125)
    assert similarity_matrix_mse(teacher, 5 * teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_files_are_read_in_row_order_and_checked(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.save(tmp_path / "t.npy", vectors)
    np.testing.assert_array_equal(read_teacher_embeddings(str(tmp_path / "t.npy"), 3), vectors)
    pq.write_table(pa.table({"id": [2, 0, 1], "embedding": [vectors[2].tolist(), vectors[0].tolist(), vectors[1].tolist()]}),
                   tmp_path / "t.parquet")
    np.testing.assert_array_equal(read_teacher_embeddings(str(tmp_path / "t.parquet"), 3), vectors)


@pytest.fixture(scope="module")
def simcse_config(tiny_model_dirs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    texts = folder / "train.txt"
    texts.write_text("\n".join(CORPUS[:8]) + "\n", encoding="utf-8")
    values = dict(model_name_or_path=str(tiny_model_dirs["llama"]), train_file=str(texts), max_seq_length=16,
                  per_device_train_batch_size=4, max_steps=2, lora_r=4, save_steps=100, do_eval=False, seed=5,
                  learning_rate=1e-3)
    return folder, values, len(CORPUS[:8])


def run(folder, values, name, **extra):
    config = folder / f"{name}.json"
    config.write_text(json.dumps({**values, "output_dir": str(folder / name), **extra}))
    return main(["simcse", str(config)])


def test_the_teacher_term_reaches_training(simcse_config, monkeypatch):
    folder, values, rows = simcse_config
    teacher = np.random.default_rng(0).normal(size=(rows, 3)).astype(np.float32)
    np.save(folder / "teacher.npy", teacher)
    seen = []
    import bg2vec.recipes.simcse_trainer as trainer_module

    real = trainer_module.similarity_matrix_mse
    monkeypatch.setattr(trainer_module, "similarity_matrix_mse", lambda s, t: seen.append(t.clone()) or real(s, t))
    assert run(folder, values, "with", teacher_embeddings=str(folder / "teacher.npy"), teacher_weight=2.0) == 0
    assert len(seen) == 2 and all(t.shape == (4, 3) for t in seen)
    lines = (folder / "train.txt").read_text(encoding="utf-8").splitlines()
    for batch in seen:  # each row is a teacher row of the training file (the batch order is shuffled)
        for vector in batch.numpy():
            assert any(np.allclose(vector, teacher[i]) for i in range(len(lines)))


@pytest.mark.parametrize("problem,words", [
    ("short", ("teacher rows", "training texts")),
    ("nan", ("row 1", "NaN")),
])
def test_bad_teacher_files_are_one_line(simcse_config, capsys, problem, words):
    folder, values, rows = simcse_config
    teacher = np.ones((rows - 1 if problem == "short" else rows, 3), dtype=np.float32)
    if problem == "nan":
        teacher[1, 2] = np.nan
    np.save(folder / f"{problem}.npy", teacher)
    assert run(folder, values, f"bad-{problem}", teacher_embeddings=str(folder / f"{problem}.npy")) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert all(word in line for word in words), line
    assert not (folder / f"bad-{problem}").exists()


def test_supervised_batches_carry_the_teacher_rows_of_their_queries(tiny_model_dirs, tmp_path, monkeypatch):
    rows = [{"query": f"въпрос {i}", "positive": f"отговор {i}", "negative": f"друго {i}"} for i in range(8)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    teacher = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    np.save(tmp_path / "teacher.npy", teacher)
    import bg2vec.recipes.supervised_trainer as trainer_module

    seen = []
    real_call = trainer_module.TripleCollator.__call__

    def call(self, triples):
        features = real_call(self, triples)
        seen.append(([t.row for t in triples], features["teacher"].clone()))
        return features

    monkeypatch.setattr(trainer_module.TripleCollator, "__call__", call)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(dict(model_name_or_path=str(tiny_model_dirs["llama"]), train_file=str(data),
                                      output_dir=str(tmp_path / "out"), max_seq_length=16, per_device_train_batch_size=2,
                                      max_steps=2, lora_r=4, save_steps=100, do_eval=False,
                                      teacher_embeddings=str(tmp_path / "teacher.npy"), teacher_weight=0.5)))
    assert main(["supervised", str(config)]) == 0
    assert seen
    for numbers, vectors in seen:  # row i of the file ↔ teacher row i
        np.testing.assert_array_equal(vectors.numpy(), teacher[numbers])
        assert all(rows[i]["query"] for i in numbers)
    short = tmp_path / "short.npy"
    np.save(short, teacher[:7])
    config.write_text(json.dumps({**json.loads(config.read_text()), "teacher_embeddings": str(short), "output_dir": str(tmp_path / "bad")}))
    assert main(["supervised", str(config)]) == 2
    assert not (tmp_path / "bad").exists()
