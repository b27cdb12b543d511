"""ONNX Runtime export: the merged bidirectional decoder and its pooling as one graph, fp32, and an int8 copy
(dynamic quantization of the linear layers, onnxruntime.quantization).

Graph inputs: `input_ids`, `attention_mask` and `pooling_mask` (B, T) int64, left-padded as `collate` builds
them (position ids are computed inside the graph from the attention mask, counting from each row's first
token, as bg2vec does); outputs `last_hidden_state` (B, T, H) and `sentence_embedding` (B, H) float32. The
pooling mask is an input, so an instruction stays out of the pooling exactly as in bg2vec: `OnnxEncoder`
(`onnx_encoder.py`) builds it with bg2vec's own input code.

The graph is traced (torch.onnx's TorchScript exporter) on a padded batch of two, so the padding-mask path of
the bidirectional attention is the one recorded; attention is whatever `config.is_causal: false` made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..encoding.encoder import Bg2Vec
from ..encoding.pooling import pool
from ..errors import ConfigError
from ..encoding.onnx_encoder import FP32_FILE, INPUT_NAMES, INT8_FILE

OUTPUT_NAMES = ("last_hidden_state", "sentence_embedding")
OPSET = 18
# bos_token pooling is a one-hot pooling mask (built by OnnxEncoder) averaged: the graph needs three modes only.
GRAPH_POOLING = {"mean": "mean", "bos_token": "mean", "weighted_mean": "weighted_mean", "last_token": "last_token",
                 "eos_token": "last_token"}


class PooledDecoder(nn.Module):
    """The decoder + pooling as one module with plain tensor inputs, the shape ONNX export needs."""

    def __init__(self, model: nn.Module, pooling_mode: str) -> None:
        super().__init__()
        self.model = model
        self.pooling_mode = GRAPH_POOLING[pooling_mode]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T): 0 at each row's first token
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state.float()  # (B, T, H)
        return hidden, pool(self.pooling_mode, hidden, pooling_mask)  # (B, T, H), (B, H)


def check_onnx(encoder: Bg2Vec) -> None:
    """ConfigError if the encoder cannot be one ONNX graph (llm2vec's chat wrapping is input text, and fine)."""
    dtype = next(encoder.model.parameters()).dtype
    if dtype != torch.float32:
        raise ConfigError("torch_dtype", str(dtype), "float32 weights for the ONNX export", fix="load the model with torch_dtype float32")
    if encoder.settings.pooling_mode not in GRAPH_POOLING:
        raise ConfigError("pooling_mode", encoder.settings.pooling_mode, "one of " + ", ".join(GRAPH_POOLING))
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ConfigError("--to", "onnx", "the onnx and onnxruntime packages", fix="pip install 'bg2vec[export]'") from error


def write_onnx(encoder: Bg2Vec, path: Path, quantize: bool = True) -> list[str]:
    """Write model.onnx (fp32) and, with `quantize`, model_int8.onnx into `path`; returns the file names."""
    sample = encoder.tokenize(["Пример за текст, по-дълъг от другия.", "Short text."])  # a padded batch of two
    module = PooledDecoder(encoder.model, encoder.settings.pooling_mode).eval()
    dynamic = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, "last_hidden_state")}
    dynamic["sentence_embedding"] = {0: "batch"}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            module, tuple(sample[name] for name in INPUT_NAMES), str(path / FP32_FILE),
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
            opset_version=OPSET, dynamo=False,
        )
    files = [FP32_FILE]
    if quantize:
        quantize_int8(path / FP32_FILE, path / INT8_FILE)
        files.append(INT8_FILE)
    return files


def quantize_int8(source: Path, target: Path) -> None:
    """int8 weights for MatMul/Gemm, activations quantized per batch at run time (no calibration data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def onnx_card(encoder: Bg2Vec, table: str, files: list[str]) -> str:
    int8 = f" and `{INT8_FILE}` (int8 weights, dynamic quantization)" if INT8_FILE in files else ""
    return f"""---
library_name: onnx
pipeline_tag: feature-extraction
tags: [bg2vec, llm2vec, onnx, text-embeddings]
---

# {Path(str(encoder.name_or_path)).name} for ONNX Runtime (bg2vec)

`{FP32_FILE}` (fp32){int8}: the merged bidirectional decoder with its pooling in one graph.
Inputs `input_ids`, `attention_mask`, `pooling_mask` (batch × tokens, int64, padded on the left); outputs
`sentence_embedding` (batch × dim) and `last_hidden_state`. The pooling mask marks the text's own tokens, so an
instruction attends but is not pooled, exactly as in bg2vec.

```python
from bg2vec.exports import load_encoder

encoder = load_encoder("path/to/this/folder", backend="onnx")          # or variant="int8"
embeddings = encoder.encode(["София е столицата на България.", ["Намери подобни изречения:", "Пловдив е стар град."]])
```

```bash
bg2vec serve --model path/to/this/folder --backend onnx
```

{table}

Without bg2vec: tokenize with the tokenizer in this folder (padding on the left), set `pooling_mask` to 1 on
the text's tokens (all tokens but BOS and the instruction) and read `sentence_embedding`.
"""
