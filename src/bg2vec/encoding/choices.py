"""What encoding settings may be, as plain data (no torch): pooling modes and Matryoshka dims.

Config imports these to check a setting before anything heavy loads; `pooling` and `encoder` implement them.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

POOLING_MODES = ("mean", "weighted_mean", "eos_token", "last_token", "bos_token")
BACKENDS = ("torch", "onnx")  # what runs the forward pass: transformers, or ONNX Runtime on an exported folder
ONNX_VARIANTS = ("fp32", "int8")  # the two models of a `bg2vec export --to onnx` folder


def check_dims(dims: Any, setting: str = "matryoshka_dims") -> list[int]:
    """Matryoshka dims: distinct positive whole numbers."""
    if not isinstance(dims, (list, tuple)) or not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims) \
            or len(set(dims)) != len(dims):
        raise ConfigError(setting, dims, "a list of distinct positive whole numbers, e.g. [768, 512, 256, 128, 64]")
    return list(dims)
