"""Attention with dropout that keeps no probabilities (CPU training): sdpa's results, its gradients for the
drawn masks, and nothing of size (B, heads, T, S) kept for the backward pass."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

import bg2vec.models.lean_attention as lean_attention
from bg2vec.models.dropout_masks import keep_scale
from bg2vec.models.lean_attention import LEAN_SDPA, _DroppedAttention, use_lean_attention
from bg2vec.objectives.simcse import set_attention_dropout
from conftest import ATTENTION_GRID


def inputs(batch=5, heads=4, kv_heads=2, length=6, dim=8, dtype=torch.float64):
    torch.manual_seed(0)
    q = torch.randn(batch, heads, length, dim, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype, requires_grad=True) for _ in range(2))
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool)
    mask[1, :, :, :2] = False  # a left-padded row: its first two keys are padding
    return q, k, v, mask


def test_without_dropout_it_is_sdpa_with_padding_and_grouped_heads():
    q, k, v, mask = inputs()
    ours = _DroppedAttention.apply(q, k, v, mask, 0.3, 0.0)
    theirs = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask, scale=0.3)
    assert torch.allclose(ours, theirs, atol=1e-12)
    fully_masked = mask.clone()
    fully_masked[0, :, 2] = False  # a row that sees nothing: zeros, as sdpa gives
    assert _DroppedAttention.apply(q, k, v, fully_masked, 0.3, 0.0)[0, :, 2].abs().max() == 0


def test_gradients_in_blocks_with_dropout(monkeypatch):
    monkeypatch.setattr(lean_attention, "_CHUNK_ELEMENTS", 2 * 4 * 6 * 6)  # blocks of 2 batch rows: 3 blocks
    q, k, v, mask = inputs()

    def attention(q, k, v):
        torch.manual_seed(5)  # the same seed for every evaluation, so the same masks
        return _DroppedAttention.apply(q, k, v, mask, 0.3, 0.4)

    assert torch.autograd.gradcheck(attention, (q, k, v))


def test_with_dropout_it_is_the_eager_formula_for_the_masks_it_drew(monkeypatch):
    monkeypatch.setattr(lean_attention, "_CHUNK_ELEMENTS", 2 * 4 * 6 * 6)
    drawn = []
    original = lean_attention.keep_mask
    monkeypatch.setattr(lean_attention, "keep_mask", lambda *a: drawn.append(original(*a)) or drawn[-1])
    q, k, v, mask = inputs()
    out = _DroppedAttention.apply(q, k, v, mask, 0.3, 0.4)
    keep = torch.cat(drawn).flatten(1, 2)  # (B, heads, T, S): the blocks' masks
    assert len(drawn) == 3 and 0.2 < 1 - keep.mean() < 0.6
    scores = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) * 0.3
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    expected = (probs * keep * keep_scale(0.4)) @ v.repeat_interleave(2, 1)
    assert torch.allclose(out, expected, atol=1e-12)


def test_causal_without_a_mask_is_sdpa_causal():
    q, k, v, _ = inputs()
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 2
    torch.manual_seed(1)
    ours, _ = lean_attention.lean_sdpa_forward(module, q, k, v, None, dropout=1e-9, scaling=0.3)  # rounds to no drop
    theirs = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True, scale=0.3)
    assert torch.allclose(ours, theirs.transpose(1, 2), atol=1e-12)


@pytest.fixture
def pair(tiny_model_dirs):
    """(sdpa, lean) copies of the tiny Mistral, attention dropout 0.3, train mode."""
    models = []
    for _ in range(2):
        model = AutoModel.from_pretrained(tiny_model_dirs["mistral"], dtype=torch.float32, attn_implementation="sdpa")
        set_attention_dropout(model, 0.3)
        models.append(model.train())
    assert use_lean_attention(models[1]) and models[1].config._attn_implementation == LEAN_SDPA
    return models


def test_a_model_gives_sdpa_results_in_eval_and_keeps_no_probabilities_in_training(pair, tmp_path):
    sdpa, lean = pair
    ids = torch.randint(5, 100, (3, 12))  # T = 12: not the head size (16)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.no_grad():
        assert torch.equal(sdpa.eval()(input_ids=ids, attention_mask=mask).last_hidden_state,
                           lean.eval()(input_ids=ids, attention_mask=mask).last_hidden_state)
    sdpa.train(), lean.train()

    def kept_probabilities(model):  # float tensors (..., T, S) that autograd keeps
        found = []

        def pack(tensor):
            if tensor.is_floating_point() and tensor.dim() > 2 and tuple(tensor.shape[-2:]) == (12, 12):
                found.append(tuple(tensor.shape))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=mask)
        return found

    assert len(kept_probabilities(sdpa)) >= 3 * sdpa.config.num_hidden_layers  # softmax, mask, dropped: per layer
    assert kept_probabilities(lean) == []
    torch.manual_seed(4)
    first = lean(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.manual_seed(4)
    again = lean(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(first, again)
    first.pow(2).mean().backward()
    assert all(p.grad is not None for n, p in lean.named_parameters() if "q_proj" in n)
    lean.config.save_pretrained(tmp_path)
    assert LEAN_SDPA not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_only_sdpa_models_switch(tiny_model_dirs):
    eager = AutoModel.from_pretrained(tiny_model_dirs["mistral"], attn_implementation="eager")
    assert not use_lean_attention(eager) and eager.config._attn_implementation == "eager"


@pytest.mark.parametrize("arch", [arch for arch, impl in ATTENTION_GRID if impl == "sdpa"])
def test_every_family_trains_through_it_and_evaluates_as_sdpa(tiny_model_dirs, arch):
    models = []
    for _ in range(2):
        model = AutoModel.from_pretrained(tiny_model_dirs[arch], dtype=torch.float32, attn_implementation="sdpa")
        set_attention_dropout(model, 0.3)
        models.append(model)
    sdpa, lean = models
    assert use_lean_attention(lean)
    ids = torch.randint(5, 100, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        assert torch.equal(sdpa.eval()(input_ids=ids, attention_mask=mask).last_hidden_state,
                           lean.eval()(input_ids=ids, attention_mask=mask).last_hidden_state)
    lean.train()
    outputs = []
    for _ in range(2):
        torch.manual_seed(9)
        outputs.append(lean(input_ids=ids, attention_mask=mask).last_hidden_state)
    assert torch.equal(outputs[0], outputs[1]) and outputs[0].isfinite().all()
    outputs[0].pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for n, p in lean.named_parameters() if "q_proj.weight" in n)
