"""Lean activations (LoRA projections, gated MLPs): peft's and transformers' outputs and gradients for the same
dropout masks, with less kept for the backward pass."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModel

from bg2vec.models.dropout_masks import keep_mask, keep_scale, new_seed
from bg2vec.models.lean_activations import use_lean_activations
from bg2vec.models.lora import add_lora


class SameMaskDropout(torch.nn.Dropout):
    """nn.Dropout drawing its mask as the lean projections do (models/dropout_masks.py), so peft's own forward
    can be compared with theirs, element for element."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * keep_mask(x.shape, self.p, new_seed(), x.device, x.dtype) * keep_scale(self.p)


def pair(tiny_model_dirs, arch, dropout):
    """(peft's model with SameMaskDropout, the same model with lean activations), both in train mode."""
    torch.manual_seed(0)
    peft_model = add_lora(AutoModel.from_pretrained(tiny_model_dirs[arch], dtype=torch.float32), 4, 8, dropout, lean=False)
    for name, parameter in peft_model.named_parameters():  # B starts at zero; make both factors matter
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    lean = copy.deepcopy(peft_model)
    layers = lean.config.num_hidden_layers
    assert use_lean_activations(lean) == (7 * layers, layers, lean.config._attn_implementation == "bg2vec_sdpa")
    for module in peft_model.modules():
        for name, drop in list(getattr(module, "lora_dropout", {}).items()):
            if isinstance(drop, torch.nn.Dropout):
                module.lora_dropout[name] = SameMaskDropout(drop.p)
    return peft_model.train(), lean.train()


def run(model, ids, seed):
    torch.manual_seed(seed)
    hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    loss = (hidden ** 2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return hidden.detach(), grads, torch.rand(1)  # the next draw: the same if both drew the same numbers


@pytest.mark.parametrize("arch", ["mistral", "gemma3_text"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_same_outputs_gradients_and_draws_as_peft(tiny_model_dirs, arch, dropout):
    peft_model, lean = pair(tiny_model_dirs, arch, dropout)
    ids = torch.randint(5, 100, (3, 9))
    h1, g1, next1 = run(peft_model, ids, 11)
    h2, g2, next2 = run(lean, ids, 11)
    assert torch.equal(next1, next2)
    assert torch.allclose(h1, h2, atol=1e-5)  # the same sums, added in another order
    assert g1.keys() == g2.keys() and len(g1) == 2 * 7 * peft_model.config.num_hidden_layers
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-6, rtol=1e-4), name


def test_saves_less_for_backward(tiny_model_dirs):
    peft_model, lean = pair(tiny_model_dirs, "mistral", 0.1)
    ids = torch.randint(5, 100, (4, 32))

    def saved_bytes(model):
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids).last_hidden_state.sum()
        return sum(size for ptr, size in storages.items() if ptr not in params)

    assert saved_bytes(lean) < 0.7 * saved_bytes(peft_model)


def test_bf16_autocast_and_eval_mode(tiny_model_dirs):
    peft_model, lean = pair(tiny_model_dirs, "mistral", 0.2)
    ids = torch.randint(5, 100, (2, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h1, g1, _ = run(peft_model, ids, 3)
        h2, g2, _ = run(lean, ids, 3)
    assert torch.allclose(h1.float(), h2.float(), atol=2e-2)
    for name in g1:
        assert g2[name].dtype == torch.float32 and torch.allclose(g1[name], g2[name], atol=1e-3, rtol=5e-2), name
    peft_model.eval(), lean.eval()
    with torch.no_grad():
        assert torch.equal(peft_model(input_ids=ids).last_hidden_state, lean(input_ids=ids).last_hidden_state)


def test_merged_and_disabled_adapters_fall_back_to_peft(tiny_model_dirs):
    peft_model, lean = pair(tiny_model_dirs, "mistral", 0.0)
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad(), lean.disable_adapter(), peft_model.disable_adapter():
        assert torch.equal(peft_model(input_ids=ids).last_hidden_state, lean(input_ids=ids).last_hidden_state)
    expected = peft_model.eval()(input_ids=ids).last_hidden_state
    merged = lean.eval().merge_and_unload()
    assert torch.allclose(merged(input_ids=ids).last_hidden_state, expected, atol=1e-5)


def test_checkpointed_models_keep_their_mlps(tiny_model_dirs):
    decoder = AutoModel.from_pretrained(tiny_model_dirs["mistral"], dtype=torch.float32)
    decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(decoder, 4, 8, 0.0, lean=False)
    assert use_lean_activations(model)[:2] == (7 * model.config.num_hidden_layers, 0)


def test_a_simcse_run_trains_the_same_adapter_with_and_without(tiny_model_dirs, corpus_files, tmp_path):
    """End to end: without dropout the recipe's adapter is the same either way; with dropout (LoRA 0.1,
    attention 0.1, other draws than torch's) a lean run repeats exactly under the same seed."""
    from safetensors.torch import load_file

    from bg2vec.config import SimCSEConfig
    from bg2vec.recipes.simcse import run_simcse

    common = dict(model_name_or_path=str(tiny_model_dirs["llama"]), train_file=str(corpus_files["train"]), max_seq_length=24,
                  per_device_train_batch_size=8, max_steps=2, do_eval=False, save_steps=1000, lora_r=4, learning_rate=1e-2,
                  seed=3)
    runs = {"lean": (True, 0.0), "peft": (False, 0.0), "dropout": (True, 0.1), "dropout-again": (True, 0.1)}
    for name, (lean, dropout) in runs.items():
        run_simcse(SimCSEConfig(**common, output_dir=str(tmp_path / name), lean_activations=lean, simcse_dropout=dropout,
                                lora_dropout=dropout), log=lambda *a, **k: None)
    adapters = {name: load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in runs}
    for first, second in (("lean", "peft"), ("dropout", "dropout-again")):
        a, b = adapters[first], adapters[second]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), (first, second, key)
    assert any(not torch.allclose(adapters["lean"][key], adapters["dropout"][key]) for key in adapters["lean"])
