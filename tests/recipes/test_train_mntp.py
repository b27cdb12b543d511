"""End-to-end Bi-MNTP runs on a tiny Llama: outputs, save → load identity, resume identity, LM head."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from bg2vec.config import MNTPConfig
from bg2vec.objectives.mntp import LM_HEAD_FILE, MNTPModel, load_lm_head
from bg2vec.recipes.mntp import run_mntp


def tiny_run(model_dir, corpus_files, output_dir, **overrides):
    values = dict(
        model_name_or_path=str(model_dir),
        train_file=str(corpus_files["train"]),
        validation_file=str(corpus_files["validation"]),
        output_dir=str(output_dir),
        max_seq_length=32,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=6,
        eval_steps=3,
        save_steps=3,
        logging_steps=1,
        learning_rate=1e-3,
        data_collator_type="all_mask",
        mlm_probability=0.5,
        lora_r=4,
        seed=7,
    )
    values.update(overrides)
    return MNTPConfig(**values)


@pytest.fixture(scope="module")
def finished_run(tiny_model_dirs, corpus_files, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("mntp") / "out"
    result = run_mntp(tiny_run(tiny_model_dirs["llama"], corpus_files, output_dir), log=lambda *_: None)
    return result


def test_output_folder_describes_itself(finished_run):
    out = finished_run.output_dir
    files = {p.name for p in Path(out).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "bg2vec_config.json",
            "metrics.json", "mntp_curves.png", "tokenizer.json"} <= files
    assert LM_HEAD_FILE not in files, "a frozen LM head is not saved"
    assert AutoConfig.from_pretrained(out).is_causal is False
    description = json.loads((Path(out) / "bg2vec_config.json").read_text())
    assert description["bidirectional"] is True and description["mask_token"] == "_"
    assert description["stage"] == "mntp" and description["format_version"] == 1
    keys = load_file(str(Path(out) / "adapter_model.safetensors")).keys()
    assert "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys, "llm2vec's key layout"
    assert not any("lm_head" in k for k in keys)
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    assert [row["Step"] for row in metrics["table"]] == [0, 3, 6]
    assert {"eval_loss", "eval_accuracy", "eval_perplexity"} <= set(metrics["final"])
    assert "Accuracy" in finished_run.table and "Validation Loss" in finished_run.table


def test_save_then_load_gives_identical_outputs(finished_run, tiny_model_dirs):
    ids = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 50, 51, 52, 53, 54]])
    mask = torch.ones_like(ids)
    trained = finished_run.model.eval()
    with torch.no_grad():
        expected = trained.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    config = AutoConfig.from_pretrained(finished_run.output_dir)  # is_causal False travels with config.json
    # The folder holds no base weights: load them from the base model, then the adapter on top.
    base = AutoModel.from_pretrained(tiny_model_dirs["llama"], config=config, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, finished_run.output_dir).eval()
    with torch.no_grad():
        got = reloaded(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(expected, got, atol=1e-6)
    with torch.no_grad(), reloaded.disable_adapter():
        untrained = reloaded(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(expected, untrained, atol=1e-4), "training changed the adapter"


def test_resume_equals_an_uninterrupted_run(tiny_model_dirs, corpus_files, tmp_path):
    whole = run_mntp(tiny_run(tiny_model_dirs["llama"], corpus_files, tmp_path / "whole"), log=lambda *_: None)
    interrupted_config = tiny_run(tiny_model_dirs["llama"], corpus_files, tmp_path / "parts", stop_after_n_steps=3)
    run_mntp(interrupted_config, log=lambda *_: None)
    interrupted_config.stop_after_n_steps = None
    resumed = run_mntp(interrupted_config, resume=True, log=lambda *_: None)
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert resumed.final["eval_loss"] == pytest.approx(whole.final["eval_loss"], abs=1e-5)


def test_trained_lm_head_is_saved_and_reloaded(tiny_model_dirs, corpus_files, tmp_path):
    result = run_mntp(
        tiny_run(tiny_model_dirs["llama"], corpus_files, tmp_path / "head", train_lm_head=True, max_steps=2),
        log=lambda *_: None,
    )
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"], dtype=torch.float32)
    head = original.get_output_embeddings()
    before = head.weight.detach().clone()
    assert load_lm_head(head, result.output_dir)
    assert not torch.allclose(before, head.weight), "the head was trained"
    assert torch.allclose(head.weight, result.model.lm_head.weight.detach())


def test_mistral_7b_shape_trainable_parameter_line():
    """The seed's summary: 41,943,040 LoRA parameters at r=16 for Mistral-7B (LM head frozen)."""
    from transformers import MistralConfig

    from bg2vec.models.lora import add_lora, trainable_parameters_line

    config = MistralConfig()  # Mistral-7B's shape: 32 layers, hidden 4096, 8 KV heads, MLP 14336
    with torch.device("meta"):
        causal_lm = AutoModelForCausalLM.from_config(config)
    decoder = add_lora(causal_lm.get_decoder(), r=16, alpha=32, dropout=0.05)
    causal_lm.get_output_embeddings().requires_grad_(False)
    line = trainable_parameters_line(MNTPModel(decoder, causal_lm.get_output_embeddings()))
    assert line.startswith("trainable params: 41,943,040 || all params: 7,283,675,136 || trainable%: 0.5")
