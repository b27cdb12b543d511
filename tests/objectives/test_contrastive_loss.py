"""InfoNCE with hard negatives (issue 12's loss): llm2vec's own HardNegativeNLLLoss run side by side, and the
options beyond it (duplicate positives, the symmetric term, weighted hard negatives) against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from bg2vec.objectives.contrastive import info_nce_loss, simcse_loss

from llm2vec_side import run_llm2vec

LLM2VEC_LOSS = """
import json, sys, torch
from llm2vec.loss.HardNegativeNLLLoss import HardNegativeNLLLoss
data = torch.load(sys.argv[1])
loss = HardNegativeNLLLoss(scale=data["scale"])
with_negatives = loss(data["q"], data["p"], data["n"]).item()
without = loss(data["q"], data["p"]).item()
open(sys.argv[2], "w").write(json.dumps({"with_negatives": with_negatives, "without": without}))
"""


def test_equals_llm2vecs_hard_negative_loss(tmp_path):
    torch.manual_seed(0)
    q, p, n = torch.randn(6, 16), torch.randn(6, 16), torch.randn(9, 16)
    torch.save({"q": q, "p": p, "n": n, "scale": 20.0}, tmp_path / "reps.pt")
    run_llm2vec(LLM2VEC_LOSS, str(tmp_path / "reps.pt"), str(tmp_path / "theirs.json"))
    theirs = json.loads((tmp_path / "theirs.json").read_text())
    assert info_nce_loss(q, p, 20.0, negatives=n).item() == pytest.approx(theirs["with_negatives"], abs=1e-5)
    assert info_nce_loss(q, p, 20.0).item() == pytest.approx(theirs["without"], abs=1e-5)


def cosines(x, y):
    return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


def test_a_duplicate_positive_is_not_a_negative():
    torch.manual_seed(1)
    q, p = torch.randn(3, 8), torch.randn(3, 8)
    p[2] = p[0]  # rows 0 and 2 share their positive text
    ids = torch.tensor([7, 8, 7])
    logits = cosines(q, p) * 20
    expected = []
    for i, keep in enumerate(([0, 1], [0, 1, 2], [1, 2])):  # row i's own column and the real negatives
        row = logits[i, keep]
        expected.append(-(logits[i, i] - torch.logsumexp(row, 0)))
    assert torch.allclose(info_nce_loss(q, p, 20.0, positive_ids=ids), torch.stack(expected).mean(), atol=1e-5)


def test_symmetric_term_and_weighted_hard_negatives_by_hand():
    torch.manual_seed(2)
    q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(2, 8)
    forward = F.cross_entropy(cosines(q, p) * 10, torch.arange(4))
    backward = F.cross_entropy(cosines(p, q) * 10, torch.arange(4))
    assert torch.allclose(info_nce_loss(q, p, 10.0, symmetric=True), (forward + backward) / 2, atol=1e-6)

    weighted = torch.cat([cosines(q, p) * 10, cosines(q, n) * 10 + math.log(3.0)], dim=1)
    assert torch.allclose(info_nce_loss(q, p, 10.0, negatives=n, hard_negative_weight=3.0),
                          F.cross_entropy(weighted, torch.arange(4)), atol=1e-6)
    assert torch.allclose(info_nce_loss(q, p, 10.0, negatives=n, hard_negative_weight=1.0),
                          info_nce_loss(q, p, 10.0, negatives=n), atol=1e-6)


def test_one_process_simcse_loss_passes_the_options_through():
    torch.manual_seed(3)
    q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(simcse_loss(q, p, 20.0, negatives=n, symmetric=True),
                          info_nce_loss(q, p, 20.0, negatives=n, symmetric=True))
