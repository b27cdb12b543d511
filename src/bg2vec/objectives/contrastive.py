"""The contrastive objective: InfoNCE over in-batch (and hard) negatives, gathered over processes, with
Matryoshka prefixes; and the figures that say what embeddings look like (alignment, uniformity, Spearman).

Shared by SimCSE (two dropout views of one text, objectives/simcse.py) and supervised training (query,
positive, hard negatives). Several processes (torchrun / accelerate): embeddings are gathered **with
gradients** (`processes.all_gather_with_gradient`), so the negatives are the global batch and the loss equals
the single-process loss on that batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..processes import all_gather_with_gradient


def info_nce_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    scale: float = 20.0,
    negatives: torch.Tensor | None = None,
    symmetric: bool = False,
    hard_negative_weight: float = 0.0,
    positive_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE over in-batch (and hard) negatives: SimCSE's loss, llm2vec's HardNegativeNLLLoss, and
    sentence-transformers' MultipleNegativesRankingLoss.

    anchors (N, H), positives (N, H), negatives (M, H) or None → a scalar. Row i of `anchors` must pick row i of
    `positives` among every positive and every negative: cross-entropy over cosine similarities times `scale`
    (= 1/temperature; 20 ↔ τ = 0.05, SimCSE's and llm2vec's choice). Options beyond llm2vec's loss:
    - `positive_ids` (N,): rows with the same id hold the same positive text; they are never each other's negative;
    - `symmetric`: add the reverse term (each positive picks its anchor among all anchors), averaged with it;
    - `hard_negative_weight` w > 0: add log(w) to the logits of the hard negatives (`negatives`), weighting them.

    >>> info_nce_loss(torch.eye(2), torch.eye(2))  # log(1 + e^-20): each anchor is far closest to its positive
    """
    if anchors.shape != positives.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} must have one shape")
    queries = F.normalize(anchors.float(), dim=-1)  # (N, H)
    documents = F.normalize(positives.float(), dim=-1)  # (N, H)
    n = queries.shape[0]
    scores = queries @ documents.T * scale  # (N, N): the diagonal holds the positive pairs
    if positive_ids is not None:  # the same positive elsewhere in the batch is not a negative
        same = positive_ids[:, None] == positive_ids[None, :]  # (N, N)
        scores = scores.masked_fill(same & ~torch.eye(n, dtype=torch.bool, device=scores.device), float("-inf"))
    if negatives is not None and negatives.shape[0] > 0:
        hard = queries @ F.normalize(negatives.float(), dim=-1).T * scale  # (N, M)
        if hard_negative_weight > 0:
            hard = hard + math.log(hard_negative_weight)
        scores = torch.cat([scores, hard], dim=1)  # (N, N + M)
    targets = torch.arange(n, device=scores.device)  # (N,)
    loss = F.cross_entropy(scores, targets)
    if symmetric:  # each positive picks its own anchor among all anchors
        reverse = documents @ queries.T * scale  # (N, N)
        if positive_ids is not None:
            reverse = reverse.masked_fill(same & ~torch.eye(n, dtype=torch.bool, device=reverse.device), float("-inf"))
        loss = (loss + F.cross_entropy(reverse, targets)) / 2
    return loss


def simcse_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    scale: float,
    across_processes: bool = True,
    negatives: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """`info_nce_loss` over the global batch: under several processes every process's texts (hard negatives
    included) are negatives, gathered with their gradients.

    anchors, positives (n_r, H), negatives (m_r, H) on this process → the same scalar on every process.
    `across_processes=False` keeps each process to its own texts (for processes that do not train one model
    together). `options` go to `info_nce_loss` (`symmetric`, `hard_negative_weight`, `positive_ids`, gathered too),
    or with `matryoshka_dims` (and `matryoshka_weights`) to `matryoshka_loss`.
    """
    dims, weights = options.pop("matryoshka_dims", None), options.pop("matryoshka_weights", None)
    if across_processes:
        if options.get("positive_ids") is not None:
            options["positive_ids"] = all_gather_with_gradient(options["positive_ids"])
        negatives = all_gather_with_gradient(negatives) if negatives is not None else None
        anchors, positives = all_gather_with_gradient(anchors), all_gather_with_gradient(positives)
    if dims:
        return matryoshka_loss(anchors, positives, scale, dims, weights, negatives, **options)
    return info_nce_loss(anchors, positives, scale, negatives, **options)


def matryoshka_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    scale: float,
    dims: list[int],
    weights: list[float] | None = None,
    negatives: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """Σ_d w_d · info_nce_loss on the first d values of every embedding (sentence-transformers' MatryoshkaLoss):
    each prefix is trained to work alone. anchors, positives (N, H), negatives (M, H); weights default to 1."""
    weights = weights or [1.0] * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} matryoshka_weights for {len(dims)} matryoshka_dims")
    return sum(
        weight * info_nce_loss(anchors[:, :d], positives[:, :d], scale,
                               negatives[:, :d] if negatives is not None else None, **options)
        for d, weight in zip(dims, weights)
    )


def check_matryoshka(dims: list[int] | None, decoder: nn.Module) -> None:
    """Every Matryoshka dim must fit in the model's embedding."""
    hidden = decoder.get_input_embeddings().weight.shape[1]
    if dims and max(dims) > hidden:
        raise ConfigError("matryoshka_dims", dims, f"dims of at most the model's embedding size {hidden}")


# --- what the embeddings look like (Wang & Isola 2020, arXiv 2005.10242) ---------------------------------------


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """Mean ||x_i - y_i||^alpha of L2-normalised positive pairs: lower = positives closer (0 = identical)."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)  # (N, H) each
    return (x - y).norm(dim=1).pow(alpha).mean().item()


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||x_i - x_j||^2) over pairs i < j of L2-normalised embeddings: lower = more evenly spread
    over the sphere (about -4 for well-spread vectors, 0 when everything collapses to one point)."""
    x = F.normalize(x.float(), dim=-1)  # (N, H)
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log().item()  # pdist: (N*(N-1)/2,)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (ties get their average rank), as STS benchmarks report it."""
    return torch.corrcoef(torch.stack([_ranks(a.double()), _ranks(b.double())]))[0, 1].item()


def _ranks(values: torch.Tensor) -> torch.Tensor:
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=values.dtype)
    for value in values.unique():  # average the ranks of ties
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
