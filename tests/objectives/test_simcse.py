"""The SimCSE objective and encoder: InfoNCE by hand, embedding geometry, dropout views, padding, the
cross-process gather (2 gloo processes) and gradient caching."""

import math
import os
import tempfile
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bg2vec.models.backbone import load_decoder
from bg2vec.objectives.contrastive import alignment, info_nce_loss, simcse_loss, spearman, uniformity
from bg2vec.objectives.gradient_cache import grad_cache_step, split_rows
from bg2vec.objectives.simcse import SimCSEModel, set_attention_dropout, two_views
from bg2vec.data.texts import SimCSECollator, keep_distinct, tokenize_texts
from bg2vec.models.backbone import load_tokenizer
from bg2vec.models.lora import add_lora

from conftest import ARCHITECTURES, CORPUS


def test_info_nce_loss_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    s, r = 10.0, 1 / math.sqrt(2)  # cosines: a0·p0 = 1, a0·p1 = r, a1·p0 = 0, a1·p1 = r
    row0 = -math.log(math.exp(s * 1) / (math.exp(s * 1) + math.exp(s * r)))
    row1 = -math.log(math.exp(s * r) / (math.exp(s * 0) + math.exp(s * r)))
    assert info_nce_loss(anchors, positives, scale=s).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_alignment_uniformity_spearman_by_hand():
    assert alignment(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 5.0]])) == pytest.approx(2.0)  # |e1 - e2|^2
    assert uniformity(torch.tensor([[2.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)  # log exp(-2 * 4)
    assert spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 40.0, 30.0, 20.0])) == pytest.approx(0.2)  # 1 - 6*8/(4*15)
    # ties get their average rank: [1, 2.5, 2.5, 4] against [1, 2, 3, 4]
    assert spearman(torch.tensor([0.0, 1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(
        0.9486833, rel=1e-6
    )


def tiny_encoder(model_dir, simcse_dropout=0.3, lora_dropout=0.05, pooling_mode="mean", seed=0):
    decoder, _ = load_decoder(str(model_dir), torch_dtype="float32")
    set_attention_dropout(decoder, simcse_dropout)
    torch.manual_seed(seed)
    decoder = add_lora(decoder, r=4, alpha=8, dropout=lora_dropout)
    with torch.no_grad():  # a trained-looking adapter, so every LoRA weight gets a gradient
        for name, param in decoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    tokenizer = load_tokenizer(str(model_dir))
    return SimCSEModel(decoder, pooling_mode, tokenizer.bos_token_id), tokenizer


def batch_of(tokenizer, texts, max_length=32, pooling_mode="mean"):
    tokenized = tokenize_texts(texts, tokenizer, max_length, pooling_mode)
    features = [{"input_ids": i, "pooling_mask": m} for i, m in zip(tokenized["input_ids"], tokenized["pooling_mask"])]
    return SimCSECollator(tokenizer.eos_token_id)(features)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_two_views_differ_with_dropout_and_match_without(tiny_model_dirs, model_type):
    model, tokenizer = tiny_encoder(tiny_model_dirs[model_type], lora_dropout=0.0)  # attention dropout alone
    batch = batch_of(tokenizer, CORPUS[:3])
    model.train()
    first, second = model(**two_views(batch)).chunk(2)
    assert not torch.allclose(first, second, atol=1e-4), "attention dropout must make the views differ"
    model.eval()
    first, second = model(**two_views(batch)).chunk(2)
    assert torch.allclose(first, second, atol=1e-6)
    undropped, _ = tiny_encoder(tiny_model_dirs[model_type], simcse_dropout=0.0, lora_dropout=0.0)
    undropped.train()
    first, second = undropped(**two_views(batch)).chunk(2)
    assert torch.allclose(first, second, atol=1e-6), "without dropout, train mode is deterministic"


def test_only_lora_weights_train(tiny_model_dirs):
    model, _ = tiny_encoder(tiny_model_dirs["llama"])
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


@pytest.mark.parametrize("pooling_mode", ["mean", "weighted_mean", "eos_token", "last_token"])
def test_padding_does_not_change_an_embedding(tiny_model_dirs, pooling_mode):
    model, tokenizer = tiny_encoder(tiny_model_dirs["llama"], pooling_mode=pooling_mode)
    model.eval()
    short, long = CORPUS[4], CORPUS[2] + " " + CORPUS[3]
    with torch.no_grad():
        alone = model(**batch_of(tokenizer, [short], pooling_mode=pooling_mode))[0]
        padded_batch = batch_of(tokenizer, [short, long], pooling_mode=pooling_mode)
        assert padded_batch["attention_mask"][0].sum() < padded_batch["attention_mask"].shape[1], "row 0 is padded"
        padded = model(**padded_batch)[0]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_mean_pooling_covers_the_text_tokens_only(tiny_model_dirs):
    model, tokenizer = tiny_encoder(tiny_model_dirs["llama"])
    model.eval()
    batch = batch_of(tokenizer, [CORPUS[4], CORPUS[2]])
    assert batch["input_ids"][0, 0] == tokenizer.bos_token_id and batch["pooling_mask"][0, 0] == 0, "BOS is not pooled"
    with torch.no_grad():
        hidden = model.decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        n = int(batch["attention_mask"][0].sum())
        expected = hidden[0, 1:n].mean(0)  # (H,): after BOS, before padding
        assert torch.allclose(model(**batch)[0], expected, atol=1e-6)


def test_eos_token_pooling_appends_and_pools_eos(tiny_model_dirs):
    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    tokenized = tokenize_texts([CORPUS[0]], tokenizer, max_length=8, pooling_mode="eos_token")
    ids, mask = tokenized["input_ids"][0], tokenized["pooling_mask"][0]
    assert len(ids) == 8 and ids[-1] == tokenizer.eos_token_id and mask == [0] * 7 + [1]


def test_identical_texts_are_kept_once_and_held_out_texts_seen_in_training_are_dropped(tiny_model_dirs):
    from datasets import Dataset

    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    texts = [CORPUS[0], CORPUS[1], CORPUS[0], CORPUS[2] + " extra words after the cut", CORPUS[2] + " other words"]
    train = Dataset.from_dict(tokenize_texts(texts, tokenizer, max_length=12, pooling_mode="mean"))
    distinct, keys = keep_distinct(train)
    assert len(distinct) == 3, "the repeated text and the text identical after the 12-token cut are dropped"
    held_out = Dataset.from_dict(tokenize_texts([CORPUS[1], CORPUS[5]], tokenizer, max_length=12, pooling_mode="mean"))
    assert len(keep_distinct(held_out, exclude=keys)[0]) == 1


# --- gradient caching -------------------------------------------------------------------------------------------


def lora_gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_grad_cache_equals_plain_backprop_without_dropout(tiny_model_dirs):
    model, tokenizer = tiny_encoder(tiny_model_dirs["llama"], simcse_dropout=0.0, lora_dropout=0.0)
    model.train()
    batch = batch_of(tokenizer, CORPUS[:5])
    plain = simcse_loss(*model(**two_views(batch)).chunk(2), scale=20.0)
    plain.backward()
    expected = lora_gradients(model)
    model.zero_grad()
    cached = grad_cache_step(
        lambda chunk: model(**chunk), split_rows(two_views(batch), 3), lambda e: simcse_loss(e[:5], e[5:], 20.0),
        lambda surrogate: surrogate.backward(),
    )
    assert cached.item() == pytest.approx(plain.item(), rel=1e-6)
    got = lora_gradients(model)
    assert expected.keys() == got.keys() and len(got) > 0
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-7, rtol=1e-4), name


def test_grad_cache_replays_the_same_dropout_masks(tiny_model_dirs):
    model, tokenizer = tiny_encoder(tiny_model_dirs["llama"])
    model.train()
    chunks = split_rows(two_views(batch_of(tokenizer, CORPUS[:5])), 3)

    def loss_of(embeddings):
        return simcse_loss(embeddings[:5], embeddings[5:], 20.0)

    torch.manual_seed(123)  # reference: the same mini-batches, embedded with a graph, same RNG stream
    reference = loss_of(torch.cat([model(**chunk) for chunk in chunks]))
    reference.backward()
    expected = lora_gradients(model)
    model.zero_grad()
    torch.manual_seed(123)
    cached = grad_cache_step(lambda chunk: model(**chunk), chunks, loss_of, lambda surrogate: surrogate.backward())
    assert cached.item() == pytest.approx(reference.item(), rel=1e-6)
    for name, grad in lora_gradients(model).items():
        assert torch.allclose(expected[name], grad, atol=1e-7, rtol=1e-4), name


# --- two processes ----------------------------------------------------------------------------------------------

SIZES = [3, 2]  # texts per process: deliberately unequal


def global_batch():
    generator = torch.Generator().manual_seed(1)
    texts = torch.randn(sum(SIZES), 8, generator=generator)  # (N, 8) stand-ins for tokenized texts
    other_view = texts + 0.3 * torch.randn(sum(SIZES), 8, generator=generator)  # (N, 8) their second views
    return texts, other_view


def small_encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 6))


def _distributed_worker(rank, folder):
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=len(SIZES), timeout=timedelta(seconds=120)
    )
    model = nn.parallel.DistributedDataParallel(small_encoder())
    texts, other_view = global_batch()
    mine = slice(sum(SIZES[:rank]), sum(SIZES[: rank + 1]))
    embeddings = model(torch.cat([texts[mine], other_view[mine]]))  # (2 n_r, 6): one forward, both views
    anchors, positives = embeddings.chunk(2)
    loss = simcse_loss(anchors, positives, scale=20.0)
    loss.backward()  # DDP averages the parameter gradients over the processes
    torch.save({"loss": loss.item(), "grads": [p.grad for p in model.module.parameters()]}, f"{folder}/{rank}.pt")
    # Leave without tearing gloo down: ~ProcessGroupGloo joins its worker thread while holding the GIL that the
    # thread may still need to free a finished work item, which deadlocks now and then (seen here).
    os._exit(0)


def test_gathered_loss_and_gradients_equal_single_process():
    # A private folder, not tmp_path: pytest may prune its old temp folders while the workers still use it.
    with tempfile.TemporaryDirectory() as folder:
        workers = mp.spawn(_distributed_worker, args=(folder,), nprocs=len(SIZES), join=False)
        deadline = time.monotonic() + 240
        while not workers.join(timeout=5):
            if time.monotonic() > deadline:
                for process in workers.processes:
                    process.kill()
                pytest.fail("the distributed workers did not finish within 240 s")
        results = [torch.load(f"{folder}/{rank}.pt") for rank in range(len(SIZES))]
    model = small_encoder()
    texts, other_view = global_batch()
    anchors, positives = model(torch.cat([texts, other_view])).chunk(2)
    loss = info_nce_loss(anchors, positives, scale=20.0)
    loss.backward()
    for result in results:
        assert result["loss"] == pytest.approx(loss.item(), rel=1e-6)
        for single, gathered in zip(model.parameters(), result["grads"]):
            assert torch.allclose(single.grad, gathered, atol=1e-7, rtol=1e-5)


def test_prepared_datasets_of_token_ids_or_texts(tiny_model_dirs, tmp_path):
    from datasets import Dataset, DatasetDict

    from bg2vec.data.blocks import TextSource
    from bg2vec.data.texts import simcse_datasets

    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    blocks = [[bos, 40, 41, 42, 43, eos, bos, 44], [bos, 50, 51, 52, 53, 54, 55, 56], [bos, 40, 41, 42, 43, eos, 98, 97]]
    splits = {"train": blocks, "validation": blocks[1:2]}
    DatasetDict({k: Dataset.from_dict({"input_ids": v}) for k, v in splits.items()}).save_to_disk(tmp_path / "blocks")
    prepared = simcse_datasets(tokenizer, 6, "mean", TextSource(dataset_path=str(tmp_path / "blocks"), validation_split_percentage=1))
    assert list(prepared["train"]["input_ids"]) == [blocks[0][:6], blocks[1][:6]], "cut to 6: the 3rd repeats the 1st"
    assert prepared["train"]["pooling_mask"][0] == [0, 1, 1, 1, 1, 0], "special tokens are not pooled"
    assert len(prepared["validation"]) == 0, "a held-out text seen in training is dropped"
    Dataset.from_dict({"text": CORPUS}).save_to_disk(tmp_path / "texts")
    texts = simcse_datasets(tokenizer, 16, "mean", TextSource(dataset_path=str(tmp_path / "texts"), validation_split_percentage=20))
    assert len(texts["train"]) + len(texts["validation"]) == len(CORPUS) and len(texts["validation"]) == 2
