"""How embeddings are stored: float32, float16, int8 with a scale per row, or binary (one sign bit per value).

| dtype | `embedding` column | to get floats back |
| --- | --- | --- |
| float32 | fixed_size_list<float32>[D] | as is |
| float16 | fixed_size_list<float16>[D] | as is (about 3 significant digits) |
| int8 | fixed_size_list<int8>[D] and a `scale` float32 column | embedding * scale (scale = max abs / 127) |
| binary | fixed_size_list<uint8>[ceil(D / 8)] | sign bits, packed big-endian (numpy.packbits), for Hamming search |

The int8 scale is per row, so a shard needs nothing from any other (no corpus-wide calibration pass), and
cosine similarity, which ignores a row's scale, can use the int8 values directly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .choices import DTYPES

INT8_LEVELS = 127


def stored_width(dtype: str, dims: int) -> int:
    """Values per row in the `embedding` column: `dims`, or bytes of packed bits for binary."""
    return (dims + 7) // 8 if dtype == "binary" else dims


def to_columns(embeddings: np.ndarray, dtype: str) -> dict[str, pa.Array]:
    """The `embedding` column (and `scale` for int8) of (N, D) float32 `embeddings` stored as `dtype`."""
    if dtype == "float32":
        values = embeddings.astype(np.float32, copy=False)  # (N, D)
        return {"embedding": _fixed_size(values)}
    if dtype == "float16":
        return {"embedding": _fixed_size(embeddings.astype(np.float16))}  # (N, D)
    if dtype == "int8":
        peak = np.abs(embeddings).max(axis=1)  # (N,)
        scale = np.where(peak > 0, peak / INT8_LEVELS, 1.0).astype(np.float32)  # (N,)
        quantized = np.clip(np.rint(embeddings / scale[:, None]), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)  # (N, D)
        return {"embedding": _fixed_size(quantized), "scale": pa.array(scale)}
    if dtype == "binary":
        return {"embedding": _fixed_size(np.packbits(embeddings > 0, axis=1))}  # (N, ceil(D / 8)) uint8
    raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(DTYPES)}")


def _fixed_size(matrix: np.ndarray) -> pa.FixedSizeListArray:
    rows, width = matrix.shape
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))  # (N * width,)
    return pa.FixedSizeListArray.from_arrays(flat, width)
