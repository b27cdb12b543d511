"""`bg2vec supervised` (issue 12): llm2vec's supervised config as is, training on an E5-layout folder on top of an
MNTP output, the output loading alone and encoding exactly as the training model embedded, held-out retrieval
before and after, gradient caching equal to plain back-propagation with hard negatives, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bg2vec import Bg2Vec
from bg2vec.cli import main
from bg2vec.config import MNTPConfig, SupervisedConfig, config_from_dict
from bg2vec.recipes.mntp import run_mntp
from bg2vec.recipes.supervised import run_supervised

from conftest import REPO

# llm2vec's train_configs/supervised/Mistral.json, verbatim.
LLM2VEC_MISTRAL_SUPERVISED = {
    "model_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
    "peft_model_name_or_path": "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp",
    "bidirectional": True, "pooling_mode": "mean", "dataset_name": "E5", "dataset_file_path": "cache/echo-data",
    "remove_unused_columns": False, "learning_rate": 2e-4, "num_train_epochs": 3, "warmup_steps": 300,
    "per_device_train_batch_size": 64, "per_device_eval_batch_size": 64, "gradient_accumulation_steps": 1,
    "do_train": True, "disable_tqdm": False, "max_seq_length": 512, "overwrite_output_dir": True,
    "output_dir": "output/supervised/Mistral-7B-Instruct-v0.2", "logging_steps": 50, "save_steps": 200,
    "save_only_model": True, "stop_after_n_steps": 1000, "lora_r": 16, "gradient_checkpointing": True,
    "torch_dtype": "bfloat16", "attn_implementation": "flash_attention_2", "seed": 42,
}
FRUIT = "ябълка круша слива дюля череша вишна праскова кайсия смокиня грозде".split()


def quiet(*args, **kwargs):
    pass


def test_llm2vecs_supervised_config_parses_as_is():
    config = config_from_dict(SupervisedConfig, LLM2VEC_MISTRAL_SUPERVISED)
    assert config.dataset_name == "E5" and config.stop_after_n_steps == 1000
    assert config.extra_training_args == {"remove_unused_columns": False, "disable_tqdm": False, "save_only_model": True}


@pytest.fixture(scope="module")
def inputs(tiny_model_dirs, corpus_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("supervised")
    run_mntp(MNTPConfig(model_name_or_path=str(tiny_model_dirs["mistral"]), train_file=str(corpus_files["train"]),
                        output_dir=str(root / "mntp"), max_seq_length=32, max_steps=2, do_eval=False, lora_r=4,
                        per_device_train_batch_size=4, save_steps=1000), log=quiet)
    e5 = root / "echo-data"
    e5.mkdir()
    for name, template in (("fever", "Твърдение {i}: {a}"), ("quora_duplicates", "Въпрос {i} за {a}?")):
        rows = []
        for i in range(24):
            a, b = FRUIT[i % 10], FRUIT[(i + 3) % 10]
            rows.append({"query": template.format(i=i, a=a), "positive": f"{a} е плод номер {i}.", "negative": f"{b} е плод номер {i}."})
        (e5 / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"base": tiny_model_dirs["mistral"], "mntp": root / "mntp", "e5": e5}


def supervised_config(inputs, output_dir, **changes) -> SupervisedConfig:
    values = dict(
        model_name_or_path=str(inputs["base"]), peft_model_name_or_path=str(inputs["mntp"]), dataset_name="E5",
        dataset_file_path=str(inputs["e5"]), output_dir=str(output_dir), max_seq_length=32, max_steps=4, eval_steps=2,
        save_steps=1000, per_device_train_batch_size=4, per_device_eval_batch_size=8, lora_r=4, learning_rate=1e-3,
        loss_scale=20.0, validation_split_percentage=25, seed=1,
    )
    return SupervisedConfig(**{**values, **changes})


def test_trains_on_e5_data_and_the_output_loads_alone_encoding_as_training_did(inputs, tmp_path):
    out = tmp_path / "out"
    result = run_supervised(supervised_config(inputs, out), log=quiet)
    assert [row["Step"] for row in result.rows] == [0, 2, 4]
    losses = [row["Validation Loss"] for row in result.rows]  # (accuracy@1 over 12 held-out rows moves by 1/12 steps)
    assert losses[2] < losses[1] < losses[0] and all(0 <= row["Accuracy@1"] <= 1 for row in result.rows)
    description = json.loads((out / "bg2vec_config.json").read_text())
    assert description["stage"] == "supervised" and description["mntp_adapter"].endswith("mntp")

    # the folder alone gives the encoder; its embedding of an instructed query is what training computed
    # (the same cut as training: max_seq_length 32, where the tiny test tokenizer spends ~2 tokens a letter)
    encoder = Bg2Vec.from_pretrained(str(out), max_length=32, doc_max_length=32)
    instruction = "Given a claim, retrieve documents that support or refute the claim; "
    pair = [instruction, "Твърдение 1: ябълка"]
    from bg2vec.data.triples import Triple
    from bg2vec.recipes.supervised_trainer import TripleCollator

    features = TripleCollator(encoder)([Triple(pair[1], "x", (), instruction)])
    model = result.model.eval()
    with torch.no_grad():
        trained = model(**{k: features[k] for k in ("input_ids", "attention_mask", "pooling_mask", "position_ids")})[:1]
    encoded = encoder.encode_tensor([pair])
    assert torch.allclose(trained, encoded, atol=1e-5)


def test_gradient_caching_with_hard_negatives_trains_the_same_adapter(inputs, tmp_path):
    no_dropout = dict(do_eval=False, max_steps=2, lora_dropout=0.0)  # chunks draw other masks than the whole batch
    run_supervised(supervised_config(inputs, tmp_path / "plain", **no_dropout), log=quiet)
    run_supervised(supervised_config(inputs, tmp_path / "cached", mini_batch_size=3, **no_dropout), log=quiet)
    a, b = (load_file(str(tmp_path / n / "adapter_model.safetensors")) for n in ("plain", "cached"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_cli_and_bad_input(inputs, tmp_path, capsys):
    config = tmp_path / "run.json"
    values = {"model_name_or_path": str(inputs["base"]), "peft_model_name_or_path": str(inputs["mntp"]),
              "dataset_file_path": str(inputs["e5"]), "output_dir": str(tmp_path / "out"), "max_seq_length": 32,
              "max_steps": 1, "per_device_train_batch_size": 64, "do_eval": False}
    config.write_text(json.dumps(values))
    assert main(["supervised", str(config)]) == 2
    assert "per_device_train_batch_size" in capsys.readouterr().err.strip().splitlines()[-1]
    config.write_text(json.dumps({**values, "dataset_file_path": str(tmp_path / "none")}))
    assert main(["supervised", str(config)]) == 2
    assert "dataset_file_path" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
    config.write_text(json.dumps({**values, "per_device_train_batch_size": 4, "max_steps": 2}))
    assert main(["supervised", str(config)]) == 0
    assert "saved adapter" in capsys.readouterr().out


def test_the_demo_preset_parses_and_reads_the_shipped_set():
    from pathlib import Path

    from bg2vec.config import load_config
    from bg2vec.data.triples import read_triples

    root = REPO
    config = load_config(SupervisedConfig, root / "configs" / "demo-supervised.json")
    assert config.peft_model_name_or_path == "outputs/demo-mntp"
    train = read_triples(root / config.train_file)
    assert len(train) == 1200 and all(t.negatives and t.instruction for t in train.datasets["train"])
