"""`bg2vec merge`: two tiny SimCSE adapters averaged or slerped into an output that loads alone; the merged weight
update is the hand-computed combination of the adapters' updates; adapters of another base, stage or rank are
refused in one line with nothing written."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from bg2vec import Bg2Vec
from bg2vec.cli import main
from bg2vec.config import MNTPConfig, SimCSEConfig
from bg2vec.models.merging import coefficients
from bg2vec.recipes.mntp import run_mntp
from bg2vec.recipes.simcse import run_simcse


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs, corpus_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("merge")
    base = str(tiny_model_dirs["llama"])
    run_mntp(MNTPConfig(model_name_or_path=base, train_file=str(corpus_files["train"]), output_dir=str(folder / "mntp"),
                        max_seq_length=16, per_device_train_batch_size=4, max_steps=1, do_eval=False, lora_r=4,
                        data_collator_type="all_mask", mlm_probability=0.5), log=quiet)
    made = {}
    for name, seed, rank in (("a", 1, 4), ("b", 2, 4), ("r8", 3, 8)):
        run_simcse(SimCSEConfig(model_name_or_path=base, peft_model_name_or_path=str(folder / "mntp"),
                                train_file=str(corpus_files["train"]), output_dir=str(folder / name), max_seq_length=16,
                                per_device_train_batch_size=4, max_steps=2, lora_r=rank, save_steps=100, seed=seed,
                                learning_rate=5e-2), log=quiet)
        made[name] = folder / name
    return {"base": base, "folder": folder, **made}


def weights_of(folder) -> dict[str, torch.Tensor]:
    """The encoder's weights with every adapter merged in (what the folder alone loads)."""
    model = Bg2Vec.from_pretrained(str(folder), torch_dtype="float32").model
    model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model  # the last adapter is kept apart
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_average_is_the_mean_of_the_updates_and_loads_alone(adapters, tmp_path):
    out = tmp_path / "soup"
    assert main(["merge", "--model", adapters["base"], "--adapters", str(adapters["a"]), str(adapters["b"]),
                 "--output", str(out)]) == 0
    moved = tmp_path / "moved"  # with its recorded references, the folder loads from anywhere
    shutil.copytree(out, moved)
    merged, a, b = weights_of(moved), weights_of(adapters["a"]), weights_of(adapters["b"])
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed, "the two adapters differ"
    for key in a:  # W0 + s·(B_a A_a + B_b A_b) / 2 = (W_a + W_b) / 2, exactly (up to float error)
        torch.testing.assert_close(merged[key], (a[key] + b[key]) / 2, atol=1e-5, rtol=1e-5)
    described = json.loads((out / "bg2vec_config.json").read_text())
    assert described["merged_from"]["method"] == "average" and len(described["merged_from"]["adapters"]) == 2
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8


def test_slerp_coefficients_by_hand():
    # two orthogonal updates of equal length: halfway along the arc, sin(pi/4) / sin(pi/2) = 1/sqrt(2) each
    c = coefficients([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], "slerp")
    assert c == pytest.approx([1 / math.sqrt(2)] * 2)
    # parallel updates: the average
    assert coefficients([torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])], "slerp") == pytest.approx([0.5, 0.5])
    assert coefficients([torch.ones(3)] * 3, "average") == pytest.approx([1 / 3] * 3)


def test_slerp_merge_loads(adapters, tmp_path):
    out = tmp_path / "slerp"
    assert main(["merge", "--model", adapters["base"], "--adapters", str(adapters["a"]), str(adapters["b"]),
                 "--output", str(out), "--method", "slerp"]) == 0
    coefficients_used = json.loads((out / "bg2vec_config.json").read_text())["merged_from"]["coefficients"]
    assert all(sum(c) >= 1.0 - 1e-9 for c in coefficients_used.values())  # on the arc: at least the chord's weights
    assert Bg2Vec.from_pretrained(str(out), torch_dtype="float32").encode(["a text"]).shape[0] == 1


def test_adapters_of_another_rank_or_base_are_refused(adapters, tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        ([adapters["base"], str(adapters["a"]), str(adapters["r8"])], ("--adapters", "r 4", "r 8", str(adapters["r8"]))),
        ([str(tiny_model_dirs["mistral"]), str(adapters["a"]), str(adapters["b"])], ("--adapters", "base", str(adapters["a"]))),
        ([adapters["base"], str(adapters["a"]), str(adapters["folder"] / "mntp")], ("--adapters", "simcse")),
    ]
    for (model, *folders), words in cases:
        assert main(["merge", "--model", model, "--adapters", *folders, "--output", str(out)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert all(word in line for word in words), line
        assert not out.exists()


def test_greedy_selection_keeps_an_adapter_only_if_the_score_does_not_drop(adapters, tmp_path):
    from test_evaluate import write_task

    from bg2vec.evaluation.mteb_model import Bg2VecMTEB
    from bg2vec.evaluation.runner import score_task
    from bg2vec.evaluation.local_tasks import load_local_task
    from bg2vec.models.layouts import resolve_model

    words = "ябълка круша слива дюля череша вишна праскова кайсия".split()
    task = write_task(tmp_path / "triples", "hard_triples", [
        {"anchor": words[i], "positive": f"{words[i]} {words[(i + 1) % 8]}", "negative": words[(i + 4) % 8]} for i in range(8)])
    out = tmp_path / "greedy"
    assert main(["merge", "--model", adapters["base"], "--adapters", str(adapters["a"]), str(adapters["b"]),
                 "--output", str(out), "--select-by", str(task)]) == 0
    merged = json.loads((out / "bg2vec_config.json").read_text())["merged_from"]
    selection = merged["selection"]
    alone = selection["alone"]
    best_first = max(alone, key=alone.get)
    assert merged["adapters"][0] == best_first
    (tried,) = selection["tried"]
    assert tried["kept"] == (tried["score"] >= alone[best_first])
    assert len(merged["adapters"]) == (2 if tried["kept"] else 1)
    # the recorded score is the output's own score on the task
    score = score_task(Bg2VecMTEB(resolve_model(str(out)), use_instructions=False), load_local_task(task)).main_score
    assert score == pytest.approx(selection["score"], abs=1e-5)
