"""The one check that every embedding leaving the encoder is a finite number.

A model whose weights hold NaN (a diverged run saved by an older bg2vec, a file damaged on disk) or that overflows
in float16 gives NaN rows; cosines of NaN rank arbitrarily, so `evaluate` would report a plausible score and
`mine-negatives` plausible "hard negatives". `encode` refuses them instead, and so does everything built on it
(encode files, evaluate, mine-negatives, the server).
"""

from __future__ import annotations

import torch

from ..errors import NonFiniteEmbeddings


def check_finite(embeddings: torch.Tensor, model_name: str = "the model") -> torch.Tensor:
    """`embeddings` (N, H) unchanged if every value is finite, else `NonFiniteEmbeddings` naming how many rows."""
    bad = ~torch.isfinite(embeddings).all(dim=-1)  # (N,)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise NonFiniteEmbeddings(
            f"{model_name} gave NaN or infinite embeddings for {int(bad.sum())} of {len(bad)} texts (first: text {first}); "
            "its weights are non-finite or overflow in this dtype: retrain it, or pass --torch-dtype float32"
        )
    return embeddings
