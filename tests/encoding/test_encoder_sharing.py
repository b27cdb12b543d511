"""The encoder core others build on (issue 18): a picklable plan loaded without resolving again, one return type,
an inference path that leaves the model's mode and device alone (threads share one encoder), public token counts,
batch invariance of `embed_inputs`, the caller's tokenizer untouched, and one embedding step for training and encode."""

from __future__ import annotations

import pickle
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

import bg2vec.models.layouts as layouts
from bg2vec import Bg2Vec
from bg2vec.errors import ConfigError
from bg2vec.models.layouts import resolve_model
from bg2vec.objectives.simcse import SimCSEModel

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "София е столицата на България.",
    "A sentence encoder maps text to a vector, and longer texts are padded less.",
    "Езикът е български.",
]


def varied_texts(n: int, seed: int) -> list[str]:
    """`n` texts of 1 to ~40 words, different for each seed."""
    words = " ".join(TEXTS).split()
    generator = np.random.default_rng(seed)
    return [" ".join(generator.choice(words, size=int(generator.integers(1, 40)))) for _ in range(n)]


@pytest.fixture(scope="module")
def encoder(tiny_model_dirs) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float32")


@contextmanager
def frozen_mode_and_device(model: torch.nn.Module):
    """Any call of model.train/eval/to (on the outer model) fails the test while inside."""

    def refuse(*args, **kwargs):
        raise AssertionError("encode changed the model's mode or device")

    for name in ("train", "eval", "to"):
        object.__setattr__(model, name, refuse)
    try:
        yield
    finally:
        for name in ("train", "eval", "to"):
            del model.__dict__[name]


def test_a_plan_pickles_and_loads_without_resolving_again(tiny_model_dirs, encoder, monkeypatch):
    plan = resolve_model(str(tiny_model_dirs["mistral"]))
    shipped = pickle.loads(pickle.dumps(plan))  # what a worker process or actor receives
    assert shipped == plan
    monkeypatch.setattr(layouts, "_plan", lambda *a, **k: pytest.fail("from_plan resolved the model again"))
    loaded = Bg2Vec.from_plan(shipped, torch_dtype="float32")
    assert loaded.plan == plan and loaded.name_or_path == encoder.name_or_path
    np.testing.assert_allclose(loaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-6)
    with pytest.raises(ConfigError, match="from_pretrained"):
        Bg2Vec.from_plan(str(tiny_model_dirs["mistral"]))


def test_threads_sharing_one_encoder_each_get_what_a_lone_call_gives(encoder):
    jobs = [varied_texts(n, seed) for seed, n in enumerate([1, 3, 7, 12, 5, 20])]
    jobs.append([["Retrieve similar sentences:", t] for t in varied_texts(6, 99)])
    alone = [encoder.encode(texts, batch_size=4) for texts in jobs]
    got: dict[int, list[np.ndarray]] = {i: [] for i in range(len(jobs))}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def caller(i: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                got[i].append(encoder.encode(jobs[i], batch_size=4))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    device = encoder.device
    with frozen_mode_and_device(encoder.model):
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for i, expected in enumerate(alone):
        for result in got[i]:
            np.testing.assert_allclose(result, expected, atol=1e-6, err_msg=f"caller {i} saw another's work")
    assert not any(module.training for module in encoder.model.modules()) and encoder.device == device


def test_training_mode_and_another_device_are_errors_that_say_what_to_do(encoder):
    encoder.model.train()
    try:
        with pytest.raises(ConfigError, match=r"encoder\.eval\(\)"):
            encoder.encode(TEXTS)
        assert encoder.model.training, "the error leaves the mode as the caller set it"
    finally:
        encoder.eval()
    with pytest.raises(ConfigError, match=r"encoder\.to\('meta'\)"):  # a device this machine has, not the model's
        encoder.encode(TEXTS, device="meta")
    with pytest.raises(ConfigError, match="device"):  # one this machine lacks (no CUDA here), or not the model's
        encoder.encode(TEXTS, device="cuda:7")
    assert encoder.encode(TEXTS[:1], device="cpu").shape == (1, 64)  # the model's own device is fine
    assert encoder.encode(TEXTS[:1], device=["cpu"]).shape == (1, 64)


def test_count_tokens_is_what_the_model_sees(encoder, tiny_model_dirs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["mistral"])
    assert encoder.count_tokens(TEXTS) == [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    inputs = encoder.build_inputs(TEXTS + [["Retrieve similar sentences:", TEXTS[0]]])
    assert [item.input_ids for item in inputs[:4]] == [tokenizer(t)["input_ids"] for t in TEXTS]
    pair = inputs[4]
    assert pair.input_ids == tokenizer("Retrieve similar sentences: " + TEXTS[0])["input_ids"]
    assert pair.text_tokens == len(tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"])
    long = " ".join(TEXTS * 10)
    cut = Bg2Vec(encoder.model, encoder.tokenizer, encoder.settings.__class__(max_length=16))
    assert cut.count_tokens([long, "a"]) == [16, len(tokenizer("a")["input_ids"])]  # after truncation


def test_embed_inputs_of_merged_callers_equals_each_alone(encoder):
    """A server merges several requests into one `embed_inputs` call: nobody's vectors may depend on the others'."""
    one = encoder.build_inputs(["Пловдив е един от най-старите градове в Европа."])
    others = encoder.build_inputs(varied_texts(63, seed=7))
    merged = encoder.embed_inputs(one + others)  # (64, H)
    assert isinstance(merged, torch.Tensor) and merged.dtype == torch.float32 and merged.shape == (64, 64)
    torch.testing.assert_close(merged[:1], encoder.embed_inputs(one), atol=1e-5, rtol=0)
    torch.testing.assert_close(merged[1:], encoder.embed_inputs(others, batch_size=5), atol=1e-5, rtol=0)
    torch.testing.assert_close(merged, encoder.embed_inputs(one + others, batch_size=64, max_batch_tokens=200), atol=1e-5, rtol=0)
    assert encoder.embed_inputs([]).shape == (0, 64)
    torch.testing.assert_close(encoder.encode_tensor(TEXTS), encoder.embed_inputs(encoder.build_inputs(TEXTS)), atol=0, rtol=0)


def test_the_callers_tokenizer_is_not_changed(encoder, tiny_model_dirs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["mistral"])
    tokenizer.pad_token, tokenizer.padding_side = "<unk>", "right"
    own = Bg2Vec(encoder.model, tokenizer, encoder.settings)
    assert (tokenizer.pad_token, tokenizer.padding_side) == ("<unk>", "right")
    assert (own.tokenizer.pad_token, own.tokenizer.padding_side) == ("</s>", "left")
    np.testing.assert_allclose(own.encode(TEXTS), encoder.encode(TEXTS), atol=1e-6)
    ready = AutoTokenizer.from_pretrained(tiny_model_dirs["mistral"], pad_token="</s>", padding_side="left")
    assert Bg2Vec(encoder.model, ready, encoder.settings).tokenizer is ready  # nothing to change: no copy


@pytest.mark.parametrize("mode", ["mean", "last_token", "bos_token"])
def test_training_and_encode_share_one_embedding_step(encoder, mode):
    """The SimCSE/supervised model's forward gives what encode gives, for the same batch and pooling."""
    pooled = Bg2Vec(encoder.model, encoder.tokenizer, encoder.settings.__class__(pooling_mode=mode))
    batch = pooled.tokenize(TEXTS + [["Retrieve:", TEXTS[1]]])
    training = SimCSEModel(encoder.model, mode, encoder.tokenizer.bos_token_id)
    with torch.no_grad():
        torch.testing.assert_close(training(**batch), pooled.encode_tensor(TEXTS + [["Retrieve:", TEXTS[1]]]),
                                   atol=1e-5, rtol=0)
