"""What every engine's workers need to embed rows: the resolved model plan and how to encode, in one picklable
value, and the one function that turns a batch of rows into vectors (the same for the local and Ray engines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encoding.encoder import Bg2Vec
from ..models.layouts import ModelPlan
from .sources import RowBatch


@dataclass(frozen=True)
class EncodeJob:
    """A resolved model and how to encode with it; shipped as is to processes and Ray actors."""

    plan: ModelPlan
    pooling_mode: str | None  # None: as saved
    max_length: int | None  # None: as saved
    torch_dtype: str
    instruction: str | None  # for rows without their own
    dim: int | None
    normalize: bool
    batch_size: int
    max_batch_tokens: int | None

    def load(self) -> Bg2Vec:
        """The encoder, loaded once per worker from the plan resolved once by the driver."""
        return Bg2Vec.from_plan(self.plan, pooling_mode=self.pooling_mode, max_length=self.max_length, torch_dtype=self.torch_dtype)


def sentences_of(batch: RowBatch, instruction: str | None) -> list[Any]:
    """Texts, or [instruction, text] pairs where a row (or `--instruction`) gives an instruction."""
    instructions = batch.instructions or [None] * len(batch)
    return [[own or instruction, text] if (own or instruction) else text for own, text in zip(instructions, batch.texts)]


def embed_rows(encoder: Bg2Vec, job: EncodeJob, sentences: list[Any], device: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """((N, D) float32 embeddings, (N,) tokens the model saw per row) for `sentences`, in their order, in
    length-sorted batches under the job's row cap and token budget; `device`: None (where the model is) or a
    list of devices (a worker process each)."""
    tokens = np.array(encoder.count_tokens(sentences), dtype=np.int64)  # (N,)
    embeddings = encoder.encode(
        sentences, batch_size=job.batch_size, max_batch_tokens=job.max_batch_tokens, show_progress_bar=False,
        normalize_embeddings=job.normalize, dim=job.dim, device=device,
    )  # (N, D)
    return embeddings, tokens
