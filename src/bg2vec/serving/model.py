"""What the server asks of the encoder: inputs built as `encode` builds them, and embeddings of a merged batch.

Only the encoder's public calls are used (`build_inputs`, `embed_inputs`); the server never changes the model's
mode or device. Token-id inputs are the text those ids decode to, so a token-id input's vector is
`encode([tokenizer.decode(ids)])` and every instruction, cut and pooling rule stays the encoder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..encoding.encoder import Bg2Vec
from ..encoding.inputs import ModelInput
from .schemas import ApiError, TextOrIds


@dataclass(frozen=True)
class Instructions:
    """The instructions that `input_type` names: None sends the text alone."""

    query: str | None = None
    document: str | None = None

    def for_type(self, input_type: str | None) -> str | None:
        return {"query": self.query, "document": self.document}.get(input_type or "")


class ServedModel:
    """An encoder as the server sees it: a name, its sizes and limits, inputs, and embeddings. With several
    devices, `replicas` are copies of `encoder` on the others (`embed_inputs(..., worker=i)` picks one)."""

    def __init__(self, encoder: Bg2Vec, name: str, truncate: bool, instructions: Instructions,
                 replicas: list[Bg2Vec] | None = None) -> None:
        self.encoder = encoder
        self.workers = [encoder, *(replicas or [])]
        self.name = name
        self.truncate = truncate
        self.instructions = instructions
        self.vocab_size, self.dimensions = encoder.vocab_size, encoder.dimension  # the same for every backend
        self.text_limit = encoder.settings.doc_max_length  # tokens of a text that encode keeps whole

    def sentences(self, inputs: list[TextOrIds], instruction: str | None) -> list[Any]:
        """Texts (token ids decoded) paired with the instruction; too-long inputs cut or refused (`truncate`)."""
        tokenizer = self.encoder.tokenizer
        texts = []
        for i, item in enumerate(inputs):
            if isinstance(item, list):
                if max(item) >= self.vocab_size:
                    raise ApiError(400, f"'input[{i}]' has token id {max(item)}; the model's vocabulary has "
                                   f"{self.vocab_size} ids", f"input[{i}]", "invalid_value")
                item = tokenizer.decode(item[: self.text_limit] if self.truncate else item)
            texts.append(item)
        if not self.truncate:
            counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            for i, count in enumerate(counts):
                if count > self.text_limit:
                    raise ApiError(400, f"'input[{i}]' has {count} tokens; this model takes at most {self.text_limit} "
                                   "per input (the server cuts longer inputs when started with --truncate)",
                                   f"input[{i}]", "context_length_exceeded")
        return [[instruction, text] for text in texts] if instruction else texts

    def build_inputs(self, sentences: list[Any]) -> list[ModelInput]:
        """Tokenized inputs, as `encode` builds them (`len(item.input_ids)` is what the model sees)."""
        return self.encoder.build_inputs(sentences)

    def embed_inputs(self, inputs: list[ModelInput], batch_size: int, max_batch_tokens: int, worker: int = 0) -> torch.Tensor:
        """(N, H) float32 CPU embeddings of `inputs` in their order, in length-sorted batches, by one worker."""
        return self.workers[worker].embed_inputs(inputs, batch_size, max_batch_tokens)

    def description(self) -> dict[str, Any]:
        """The model's description for /v1/models and the page: base, stages, pooling, dims."""
        plan = self.encoder.plan
        settings = self.encoder.settings
        base = (plan.base_reference or plan.weights) if plan is not None else self.encoder.name_or_path
        return {
            "base_model": base,
            "stages": [base, *plan.adapters] if plan is not None else [base],  # the base, then each adapter applied
            "pooling_mode": settings.pooling_mode,
            "dimensions": self.dimensions,
            "devices": [str(worker.device) for worker in self.workers],
            "matryoshka_dims": settings.matryoshka_dims,
            "max_input_tokens": self.text_limit,
            "max_length": settings.max_length,
            "query_instruction": self.instructions.query,
            "document_instruction": self.instructions.document,
        }
