"""Dropout masks from 16-bit lanes of 64-bit random words, drawn again from their seed."""

from __future__ import annotations

import pytest
import torch

from bg2vec.models.dropout_masks import keep_mask, keep_scale, new_seed, quantized


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_the_drop_rate_is_p_and_every_lane_is_fair(p):
    keep = keep_mask((1000, 1024), p, seed=7, device=torch.device("cpu"))  # 1,024,000 elements
    assert keep.dtype == torch.float32 and set(keep.unique().tolist()) <= {0.0, 1.0}
    sigma = (p * (1 - p) / keep.numel()) ** 0.5
    assert abs((1 - keep.mean().item()) - p) < 5 * sigma
    lanes = keep.view(-1, 4).mean(0)  # the four elements taken from one random word
    assert ((1 - lanes) - p).abs().max().item() < 5 * sigma * 2
    neighbours = torch.corrcoef(torch.stack([keep.flatten()[:-1], keep.flatten()[1:]]))[0, 1]
    assert abs(neighbours.item()) < 0.01


def test_the_same_seed_gives_the_same_mask_and_seeds_follow_torch_manual_seed():
    shape, cpu = (3, 5, 7), torch.device("cpu")
    assert torch.equal(keep_mask(shape, 0.3, 11, cpu), keep_mask(shape, 0.3, 11, cpu))
    assert not torch.equal(keep_mask(shape, 0.3, 11, cpu), keep_mask(shape, 0.3, 12, cpu))
    torch.manual_seed(0)
    first = [new_seed() for _ in range(3)]
    torch.manual_seed(0)
    assert [new_seed() for _ in range(3)] == first and len(set(first)) == 3


def test_quantized_rate_scale_and_edges():
    assert quantized(0.05) == 3277 / 65536 and abs(quantized(0.05) - 0.05) < 1 / 65536
    assert keep_scale(0.05) == 1 / (1 - 3277 / 65536)  # the expectation is exactly the input's
    cpu = torch.device("cpu")
    assert torch.equal(keep_mask((4, 4), 0.0, 1, cpu), torch.ones(4, 4))
    assert torch.equal(keep_mask((4, 4), 1.0, 1, cpu), torch.zeros(4, 4)) and keep_scale(1.0) == 0.0
    half = keep_mask((2, 3), 0.5, 1, cpu, torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half.float(), keep_mask((2, 3), 0.5, 1, cpu))
