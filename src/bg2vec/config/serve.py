"""The `bg2vec serve` config: an OpenAI-compatible embeddings server over one encoder."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..encoding.choices import BACKENDS, ONNX_VARIANTS, POOLING_MODES
from ..errors import ConfigError
from .fields import TORCH_DTYPES, check_choice, check_positive, setting

SERVE_LOG_LEVELS = ("debug", "info", "warning", "error")
API_KEY_ENV = "BG2VEC_API_KEY"  # read when api_key is not given, so the key stays out of shell history


@dataclass
class ServeConfig:
    """The embeddings server (`bg2vec serve`): OpenAI's /v1/embeddings, /v1/rerank, a page, metrics."""

    model_name_or_path: str = setting("The encoder: Hub id, folder (bg2vec/llm2vec output), .gguf or pypi: alias.", "")
    adapter: str | None = setting("A PEFT adapter on top of the model (llm2vec's peft_model_name_or_path).", None)
    served_model_name: str | None = setting("The name clients send as `model` (default: the --model reference).", None)
    host: str = setting("Address to listen on; 0.0.0.0 exposes the server to the network.", "127.0.0.1")
    port: int = setting("TCP port to listen on.", 8080)
    device: str | None = setting(
        "cpu, cuda, cuda:1..., or several (cuda:0,cuda:1: a model copy and a thread each, behind one queue); "
        "default: where the model loads (cuda if available).", None)
    api_key: str | None = setting(f"Require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set, else open).", None)
    backend: str = setting("torch, or onnx: ONNX Runtime on a `bg2vec export --to onnx` folder (CPU).", "torch")
    onnx_variant: str = setting("With --backend onnx: fp32, or int8 (the dynamically quantized model).", "fp32")
    torch_dtype: str = setting("auto, bfloat16, float16 or float32.", "auto")
    pooling_mode: str | None = setting("Pooling, overriding the saved one.", None)
    max_length: int | None = setting("Tokens of model input, overriding the saved one.", None)
    query_instruction: str | None = setting("Instruction for input_type=query and rerank queries (left out of pooling).", None)
    document_instruction: str | None = setting("Instruction for input_type=document and rerank documents.", None)
    truncate: bool = setting("Cut inputs longer than the model takes (as encode does) instead of refusing them (400).", False)
    max_inputs: int = setting("Inputs per request.", 2048)
    max_request_tokens: int = setting("Tokens per request, counted as the model counts them.", 300_000)
    max_body_bytes: int = setting("Bytes of a request body.", 2_000_000)
    max_batch_tokens: int = setting("Tokens per batching step (TEI's default); cut into padded forward passes.", 16384)
    batch_size: int = setting("Rows per forward pass.", 128)
    max_wait_ms: float = setting("How long the first queued input waits for others to join its batch.", 5.0)
    max_queued_requests: int = setting("Requests waiting or running before new ones get 429 + Retry-After.", 512)
    max_queued_tokens: int = setting("Tokens waiting or running before new requests get 429 + Retry-After.", 1_000_000)
    log_level: str = setting("debug, info, warning or error (one line per request at info; never texts or keys).", "info")

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path", "", "a model reference", fix="pass --model REF")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", self.port, "0 to 65535 (0: any free port)")
        check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("onnx_variant", self.onnx_variant, ONNX_VARIANTS)
        if self.backend == "onnx" and (self.adapter or self.device or self.pooling_mode or self.max_length):
            raise ConfigError("backend", "onnx", "an exported folder served as it was exported",
                              fix="drop --adapter/--device/--pooling-mode/--max-length (export with them instead)")
        check_choice("log_level", self.log_level, SERVE_LOG_LEVELS)
        if self.pooling_mode is not None:
            check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        for name in ("max_inputs", "max_request_tokens", "max_body_bytes", "max_batch_tokens", "batch_size",
                     "max_queued_requests", "max_queued_tokens"):
            check_positive(name, getattr(self, name))
        if self.max_length is not None:
            check_positive("max_length", self.max_length)
        if not self.max_wait_ms >= 0:
            raise ConfigError("max_wait_ms", self.max_wait_ms, "0 or more milliseconds")
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key", "(empty)", "a non-empty key", fix=f"pass --api-key KEY or set ${API_KEY_ENV}")

    def devices(self) -> list[str] | None:
        """`cuda:0,cuda:1` → ["cuda:0", "cuda:1"]; None: where the model loads."""
        if self.device is None:
            return None
        return [d.strip() for d in self.device.split(",") if d.strip()] or None
