import pytest
import torch

from bg2vec.errors import ConfigError
from bg2vec.encoding.pooling import pool

HIDDEN = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)  # (B=2, T=4, H=2)
# Row 0: left-padded, pooled positions 2 and 3. Row 1: pooled positions 1, 2, 3 (position 0 is BOS).
MASK = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])


def test_mean_by_hand():
    expected = torch.stack([(HIDDEN[0, 2] + HIDDEN[0, 3]) / 2, (HIDDEN[1, 1] + HIDDEN[1, 2] + HIDDEN[1, 3]) / 3])
    assert torch.allclose(pool("mean", HIDDEN, MASK), expected)


def test_weighted_mean_by_hand():
    row0 = (1 * HIDDEN[0, 2] + 2 * HIDDEN[0, 3]) / 3
    row1 = (1 * HIDDEN[1, 1] + 2 * HIDDEN[1, 2] + 3 * HIDDEN[1, 3]) / 6
    assert torch.allclose(pool("weighted_mean", HIDDEN, MASK), torch.stack([row0, row1]))


@pytest.mark.parametrize("mode", ["eos_token", "last_token"])
def test_last_token_by_hand(mode):
    right_padded = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert torch.equal(pool(mode, HIDDEN, right_padded), torch.stack([HIDDEN[0, 1], HIDDEN[1, 3]]))
    assert torch.equal(pool(mode, HIDDEN, MASK), HIDDEN[:, 3])


def test_bos_token_by_hand():
    ids = torch.tensor([[0, 0, 1, 7], [1, 5, 6, 7]])
    attention = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    got = pool("bos_token", HIDDEN, MASK, input_ids=ids, attention_mask=attention, bos_token_id=1)
    assert torch.equal(got, torch.stack([HIDDEN[0, 2], HIDDEN[1, 0]]))


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="weighted_mean"):
        pool("max", HIDDEN, MASK)
