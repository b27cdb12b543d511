"""Contamination check: training outputs record the files they trained on (path, size, sha256; SimCSE adds its
MNTP adapter's), and `bg2vec evaluate --contamination` reports per task the share of task texts found in them
(normalized exact match; 13-gram overlap), warns above the threshold, and refuses a model that recorded nothing."""

from __future__ import annotations

import hashlib
import json

import pytest

from bg2vec.cli import main
from bg2vec.config import MNTPConfig, SimCSEConfig
from bg2vec.evaluation.contamination import overlap, training_files
from bg2vec.recipes.mntp import run_mntp
from bg2vec.recipes.simcse import run_simcse

from conftest import CORPUS
from test_evaluate import write_task

LONG = "един два три четири пет шест седем осем девет десет единадесет дванадесет тринадесет четиринадесет"


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, corpus_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("contamination")
    run_mntp(MNTPConfig(model_name_or_path=str(tiny_model_dirs["llama"]), train_file=str(corpus_files["train"]),
                        output_dir=str(folder / "mntp"), max_seq_length=16, per_device_train_batch_size=4, max_steps=1,
                        do_eval=False, lora_r=4, data_collator_type="all_mask", mlm_probability=0.5), log=lambda *_: None)
    texts = folder / "simcse.txt"
    texts.write_text("\n".join([*CORPUS[:4], "  КОТКАТА   спи на дивана.", f"начало {LONG} край"]) + "\n", encoding="utf-8")
    run_simcse(SimCSEConfig(model_name_or_path=str(tiny_model_dirs["llama"]), peft_model_name_or_path=str(folder / "mntp"),
                            train_file=str(texts), output_dir=str(folder / "simcse"), max_seq_length=16,
                            per_device_train_batch_size=4, max_steps=1, lora_r=4, save_steps=100), log=lambda *_: None)
    return {"folder": folder, "texts": texts, "corpus": corpus_files["train"]}


def test_outputs_record_their_training_files_and_the_chain(trained):
    described = json.loads((trained["folder"] / "simcse" / "bg2vec_config.json").read_text())
    data = trained["texts"].read_bytes()
    assert described["training_files"] == [{"path": str(trained["texts"].resolve()), "size": len(data),
                                            "sha256": hashlib.sha256(data).hexdigest()}]
    paths = [r["path"] for r in training_files(str(trained["folder"] / "simcse"))]
    assert paths == [str(trained["texts"].resolve()), str(trained["corpus"].resolve())]  # + the MNTP adapter's


def test_overlap_by_hand():
    training = ["Котката спи на дивана.", f"начало {LONG} край"]
    task = ["котката  спи на ДИВАНА.", "Кучето лае.", LONG, "един два три"]
    found = overlap(task, training)
    # exact: the first text only (case and spaces normalized); the 14-word text is inside a longer line, not equal
    assert found["exact"] == pytest.approx(1 / 4)
    # 13-gram: one text has >= 13 words, and it shares a 13-gram
    assert (found["long_texts"], found["ngram"]) == (1, 1.0)


def test_evaluate_reports_and_warns(trained, tmp_path, capsys):
    rows = [{"anchor": "Котката спи на дивана.", "positive": CORPUS[0], "negative": "нещо съвсем ново"},
            {"anchor": "друго", "positive": LONG, "negative": "трето"}]
    task = write_task(tmp_path / "triples", "hard_triples", rows)
    assert main(["evaluate", "--model", str(trained["folder"] / "simcse"), "--tasks", str(task), "--no-cache",
                 "--contamination", "--output-dir", str(tmp_path / "out")]) == 0
    assert "warning: triples: 33.3% of its texts occur" in capsys.readouterr().out  # 2 of 6 distinct texts
    run = json.loads((tmp_path / "out" / "evaluation.json").read_text())["runs"][0]
    found = run["contamination"]["tasks"]["triples"]
    assert found["exact"] == pytest.approx(2 / 6) and found["ngram"] == 1.0
    assert "33.3% / 100.0%" in (tmp_path / "out" / "evaluation.md").read_text()


def test_no_record_or_a_changed_file_is_one_line(trained, tiny_model_dirs, tmp_path, capsys):
    task = write_task(tmp_path / "triples", "hard_triples", [{"anchor": "a", "positive": "b", "negative": "c"}])
    argv = ["evaluate", "--tasks", str(task), "--no-cache", "--contamination", "--output-dir", str(tmp_path / "out")]
    assert main([*argv, "--model", str(tiny_model_dirs["llama"])]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--contamination" in line and "recorded none" in line
    copy = tmp_path / "simcse"
    import shutil

    shutil.copytree(trained["folder"] / "simcse", copy)
    described = json.loads((copy / "bg2vec_config.json").read_text())
    described["training_files"][0]["sha256"] = "0" * 64
    described["mntp_adapter"] = str(trained["folder"] / "mntp")
    (copy / "bg2vec_config.json").write_text(json.dumps(described))
    assert main([*argv, "--model", str(copy)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--contamination" in line and "sha256" in line
    assert not (tmp_path / "out").exists()
