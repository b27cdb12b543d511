"""Length-sorted batches: a row cap, a token budget, and no batch padded to one long text."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bg2vec import Bg2Vec
from bg2vec.encoding.batching import MAX_PADDING, SMALL_WASTE, plan_batches
from bg2vec.errors import ConfigError


def padded(lengths, batch):
    return len(batch) * max(lengths[i] for i in batch)


@pytest.mark.parametrize("seed", range(5))
def test_every_text_once_longest_first_within_limits(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(1, 30), rng.randint(100, 512)]) for _ in range(300)]
    batches = plan_batches(lengths, batch_size=16, max_batch_tokens=2048)
    assert sorted(i for b in batches for i in b) == list(range(300))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) == 1 or padded(lengths, batch) <= 2048
        waste = padded(lengths, batch) - sum(lengths[i] for i in batch)
        assert waste <= SMALL_WASTE or waste <= MAX_PADDING * padded(lengths, batch)


def test_one_long_text_gets_a_batch_of_its_own():
    lengths = [512] + [40] * 31
    assert plan_batches(lengths, batch_size=32) == [[0], list(range(1, 32))]
    # Fixed batches of 32 would pad 31 texts to 512 tokens: 16,384 padded tokens for 1,752 real ones.
    assert sum(padded(lengths, b) for b in plan_batches(lengths, 32)) == 512 + 31 * 40


def test_short_texts_fill_whole_batches():
    lengths = [10, 9, 8, 7, 6, 5, 4, 3] * 8
    assert [len(b) for b in plan_batches(lengths, batch_size=32)] == [32, 32]


def test_token_budget_caps_rows_times_longest():
    assert [len(b) for b in plan_batches([100] * 10, batch_size=32, max_batch_tokens=300)] == [3, 3, 3, 1]
    assert plan_batches([1000], batch_size=4, max_batch_tokens=10) == [[0]]  # a text longer than the budget runs alone


@pytest.mark.parametrize("name, value", [("batch_size", 0), ("batch_size", True), ("max_batch_tokens", 0), ("max_batch_tokens", 2.5)])
def test_bad_limits_are_config_errors(name, value):
    kwargs = {"batch_size": 8, name: value}
    with pytest.raises(ConfigError, match=name):
        plan_batches([5, 6], **kwargs)


def test_token_budget_does_not_change_embeddings(tiny_model_dirs):
    encoder = Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float32")
    texts = ["кратко", "A much longer sentence with many more words than the others have, " * 6, "средно дълго изречение", "x"]
    np.testing.assert_allclose(encoder.encode(texts, batch_size=4), encoder.encode(texts, batch_size=4, max_batch_tokens=8), atol=1e-5)
