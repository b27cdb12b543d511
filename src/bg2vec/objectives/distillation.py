"""Distillation from stored teacher vectors: the student's in-batch similarities pulled toward the teacher's.

The loss is the mean squared error between the two (B, B) cosine-similarity matrices of a batch,

    L = mean_ij (cos(s_i, s_j) - cos(t_i, t_j))^2,

a relational (similarity-matrix) distillation rather than a regression of the vectors themselves: it compares
only how the texts of a batch relate to each other, so the teacher's dimension T need not equal the student's H
(a 384-dimension e5 can teach a 640-dimension Gemma) and no projection head has to be trained and thrown away.
MSE rather than a KL over softmaxed scores: it needs no temperature of its own and weighs every pair alike.

The teacher file is aligned with the training texts: row i is the vector of the i-th text of the training file
(`.npy` of shape (N, T), e.g. from `bg2vec encode`), or a parquet file with an `id` column (that row number) and
an `embedding` column of lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError


def similarity_matrix_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """student (B, H), teacher (B, T) → the MSE of their (B, B) cosine-similarity matrices (a scalar)."""
    s = F.normalize(student.float(), dim=-1)  # (B, H)
    t = F.normalize(teacher.float(), dim=-1)  # (B, T)
    return ((s @ s.T - t @ t.T) ** 2).mean()  # (B, B) → ()


def read_teacher_embeddings(path: str, rows: int, setting: str = "teacher_embeddings") -> np.ndarray:
    """(rows, T) float32 teacher vectors, in training-file order; a wrong row count, bad ids or NaN is one line."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(setting, path, "an existing .npy or .parquet file", fix="check the path")
    if file.suffix == ".npy":
        vectors = np.load(file, allow_pickle=False)
    elif file.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(file)
        if not {"id", "embedding"} <= set(table.column_names):
            raise DataError(f"{path}: a teacher parquet needs columns id and embedding, not {', '.join(table.column_names)}")
        ids = np.asarray(table.column("id").to_pylist())
        if sorted(ids.tolist()) != list(range(len(ids))):
            raise DataError(f"{path}: ids must be the training texts' row numbers 0..{len(ids) - 1}, each once")
        vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)[np.argsort(ids)]
    else:
        raise ConfigError(setting, path, "a .npy or .parquet file")
    if vectors.ndim != 2 or vectors.shape[0] != rows:
        raise DataError(f"{path}: {vectors.shape[0] if vectors.ndim else 0} teacher rows for {rows} training texts; "
                        "encode the training file itself, one vector per line")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise DataError(f"{path}: row {bad[0]} holds NaN or infinity ({len(bad)} rows in all); re-encode those texts")
    return vectors.astype(np.float32)
