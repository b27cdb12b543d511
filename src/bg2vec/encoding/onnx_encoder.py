"""`OnnxEncoder`: a folder written by `bg2vec export --to onnx`, run with ONNX Runtime behind the encoder API
(`encode`, `build_inputs`, `count_tokens`, `embed_inputs`), so `bg2vec serve --backend onnx` and library code
use it like `Bg2Vec`. Inputs are built by bg2vec's own code (`InputBuilder`, `collate`), so instructions,
truncation and pooling spans are the same as in torch; only the forward pass runs in ONNX Runtime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..models.saved_outputs import EXPORT_RECORD
from .batching import plan_batches
from .choices import ONNX_VARIANTS
from .encoder import EncoderSettings
from .inputs import InputBuilder, ModelInput, chat_format_for, collate, eos_text_for, with_encoder_padding

# The files of a `bg2vec export --to onnx` folder (written by exports/onnx.py, read here).
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "pooling_mask")

VARIANTS = dict(zip(ONNX_VARIANTS, (FP32_FILE, INT8_FILE)))


class OnnxEncoder:
    """An exported ONNX folder as an encoder.

    >>> encoder = OnnxEncoder("outputs/bg2vec-onnx", variant="int8", threads=2)
    >>> encoder.encode(["София е столицата на България."]).shape
    (1, 640)
    """

    def __init__(self, folder: str | Path, variant: str = "fp32", threads: int | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        if variant not in VARIANTS:
            raise ConfigError("variant", variant, "one of " + ", ".join(VARIANTS))
        if not (folder / VARIANTS[variant]).is_file():
            raise ConfigError("model", str(folder), f"a folder written by `bg2vec export --to onnx` (with {VARIANTS[variant]})")
        record = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
        saved = json.loads((folder / "bg2vec_config.json").read_text(encoding="utf-8"))
        self.settings = EncoderSettings(
            pooling_mode=record["pooling_mode"], max_length=record["max_length"], doc_max_length=saved["doc_max_length"],
            skip_instruction=record["skip_instruction"], matryoshka_dims=record.get("matryoshka_dims"),
        )
        self.name_or_path = str(folder)
        self.variant = variant
        self.dimension = int(record["embedding_dimension"])
        self.tokenizer = with_encoder_padding(AutoTokenizer.from_pretrained(folder), owned=True)
        self.vocab_size = len(self.tokenizer)  # ids a request may send (the graph's rows may be more)
        self.device = torch.device("cpu")  # ONNX Runtime's CPU provider
        self.plan = None  # an export folder is its own merged model
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        self.session = ort.InferenceSession(str(folder / VARIANTS[variant]), options, providers=["CPUExecutionProvider"])
        eos_text = None
        if self.settings.pooling_mode == "eos_token":
            model_type = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"]
            eos_text = eos_text_for(model_type, self.tokenizer, len(self.tokenizer))
        chat = chat_format_for([saved.get("base_model_name_or_path")])
        self._builder = InputBuilder(self.tokenizer, self.settings.max_length, self.settings.doc_max_length, eos_text, chat)

    def build_inputs(self, sentences: list[Any]) -> list[ModelInput]:
        """Tokenized sentences (texts or [instruction, text] pairs), as `Bg2Vec.build_inputs` makes them."""
        return self._builder(sentences)

    def count_tokens(self, sentences: list[Any]) -> list[int]:
        return [len(item.input_ids) for item in self.build_inputs(sentences)]

    def embed_inputs(self, inputs: list[ModelInput], batch_size: int = 32, max_batch_tokens: int | None = None) -> torch.Tensor:
        """(N, H) float32 CPU embeddings of `inputs` in input order, batches sorted by length."""
        batches = plan_batches([len(item.input_ids) for item in inputs], batch_size, max_batch_tokens)
        out = np.empty((len(inputs), self.dimension), dtype=np.float32)
        for batch in batches:
            features = collate([inputs[i] for i in batch], self.tokenizer.pad_token_id, self.settings.skip_instruction)
            if self.settings.pooling_mode == "bos_token":
                features["pooling_mask"] = _first_bos(features, self.tokenizer.bos_token_id)
            feed = {name: features[name].numpy() for name in INPUT_NAMES}
            out[batch] = self.session.run(["sentence_embedding"], feed)[0]  # (B, H)
        return torch.from_numpy(out)

    def encode(self, sentences: list[Any], batch_size: int = 32, normalize_embeddings: bool = False, dim: int | None = None,
               max_batch_tokens: int | None = None, **ignored: Any) -> np.ndarray:
        """(N, H) float32 numpy embeddings, like `Bg2Vec.encode` (`device`, `show_progress_bar` are ignored)."""
        unknown = set(ignored) - {"device", "show_progress_bar", "convert_to_numpy"}
        if unknown:
            raise ConfigError("encode", sorted(unknown), "batch_size, normalize_embeddings, dim, max_batch_tokens")
        embeddings = self.embed_inputs(self.build_inputs(sentences), batch_size, max_batch_tokens).numpy()
        if dim is not None:
            if not isinstance(dim, int) or not 1 <= dim <= self.dimension:
                raise ConfigError("dim", dim, f"a whole number from 1 to the embedding size {self.dimension}")
            embeddings = embeddings[:, :dim]
        if normalize_embeddings:
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings


def _first_bos(features: dict[str, torch.Tensor], bos_token_id: int) -> torch.Tensor:
    """(B, T) one-hot mask at each row's first attended BOS: the graph's mean over it is the BOS state."""
    is_bos = (features["input_ids"] == bos_token_id) & features["attention_mask"].bool()  # (B, T)
    if not is_bos.any(dim=1).all():
        raise ConfigError("pooling_mode", "bos_token", "a tokenizer that puts BOS first", fix="re-export with mean pooling")
    first = is_bos.long().argmax(dim=1)  # (B,)
    return torch.nn.functional.one_hot(first, is_bos.shape[1]).long()
