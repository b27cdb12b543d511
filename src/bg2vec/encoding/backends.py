"""Which engine runs an encoder: torch (`Bg2Vec`) or ONNX Runtime (`OnnxEncoder`, a `bg2vec export --to onnx`
folder). Both answer `encode`, `build_inputs`, `count_tokens` and `embed_inputs`, so a server or a script
takes either."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .choices import BACKENDS
from .encoder import Bg2Vec


def load_encoder(reference: str, backend: str = "torch", adapter: str | None = None, **options: Any) -> Any:
    """An encoder-like object (`encode`, `build_inputs`, `embed_inputs`) for `backend`: "torch" loads `Bg2Vec`,
    "onnx" runs a folder from `bg2vec export --to onnx` (`variant="int8"` for the quantized model).

    >>> encoder = load_encoder("outputs/demo-onnx", backend="onnx", variant="int8")
    """
    if backend == "torch":
        return Bg2Vec.from_pretrained(reference, adapter, **options)
    if backend == "onnx":
        if adapter is not None:
            raise ConfigError("--adapter", adapter, "no adapter for the onnx backend (the export merged it)")
        from .onnx_encoder import OnnxEncoder

        return OnnxEncoder(reference, **options)
    raise ConfigError("--backend", backend, "one of " + ", ".join(BACKENDS))
