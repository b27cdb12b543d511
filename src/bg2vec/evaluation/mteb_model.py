"""A bg2vec encoder as an MTEB 2.x model (`EncoderProtocol`), so `mteb.evaluate` runs it.

Instructions follow MTEB's llm2vec wrapper (mteb/models/model_implementations/llm2vec_models.py), so scores are
comparable with the llm2vec rows of the leaderboard: each task's instruction, ending in ":", is paired with
every text, and bg2vec leaves it out of the pooling.

    import mteb
    from bg2vec.evaluation.mteb_model import Bg2VecMTEB

    model = Bg2VecMTEB("outputs/simcse", torch_dtype="bfloat16")
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["STS22"], languages=["bul"]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta

from .._version import __version__
from ..encoding.encoder import Bg2Vec
from ..models.layouts import ModelPlan


CHUNK_TEXTS = 4096  # texts tokenized and encoded at a time: memory for a chunk, plus the (N, H) embeddings


def llm2vec_instruction(instruction: str) -> str:
    """MTEB's llm2vec convention: a non-empty instruction ends with ":" (a final "." is replaced)."""
    if instruction and not instruction.endswith(":"):
        return instruction.strip(".") + ":"
    return instruction


def mteb_model_meta(encoder: Bg2Vec, name: str | None = None, revision: str | None = None) -> ModelMeta:
    """MTEB's description of `encoder`. `name` must look like "org/model"; by default "bg2vec/<base name>".

    >>> mteb_model_meta(Bg2Vec.from_pretrained("outputs/simcse")).embed_dim
    4096
    """
    base = Path(encoder.name_or_path or "encoder").name
    parameters = sum(p.numel() for p in encoder.model.parameters())
    return ModelMeta(
        loader=None,
        name=name or f"bg2vec/{base}",
        revision=revision or f"bg2vec-{__version__}",
        release_date=None,
        languages=None,
        n_parameters=parameters,
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in encoder.model.parameters()) / 2**20, 1),
        max_tokens=encoder.settings.max_length,
        embed_dim=encoder.model.get_input_embeddings().weight.shape[1],
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        similarity_fn_name="cosine",
        use_instructions=True,
        training_datasets=None,
        adapted_from=encoder.name_or_path,
        modalities=["text"],
    )


class Bg2VecMTEB(AbsEncoder):
    """`mteb.evaluate`-ready wrapper: give a `Bg2Vec`, a resolved `ModelPlan` (loaded with `Bg2Vec.from_plan`),
    or what `Bg2Vec.from_pretrained` takes."""

    def __init__(
        self,
        model_name: str | ModelPlan | Bg2Vec,
        revision: str | None = None,
        *,
        device: str | list[str] | None = None,
        name: str | None = None,
        prompts_dict: dict[str, str] | None = None,
        use_instructions: bool = True,
        **from_pretrained_kwargs: Any,
    ) -> None:
        if isinstance(model_name, Bg2Vec):
            self.model = model_name
        else:
            if isinstance(device, str):  # one device: load there (several: a worker process each, started by encode)
                from_pretrained_kwargs.setdefault("device_map", device)
            if isinstance(model_name, ModelPlan):
                self.model = Bg2Vec.from_plan(model_name, **from_pretrained_kwargs)
            else:
                self.model = Bg2Vec.from_pretrained(model_name, **from_pretrained_kwargs)
        self.device = device
        self.prompts_dict = prompts_dict  # task name / task type / prompt type → instruction, as in MTEB
        self.use_instructions = use_instructions  # False: every text alone (Bg2Vec's evaluation)
        self.batch_size: int | None = None  # lowered for good after an out-of-memory error
        self.mteb_model_meta = mteb_model_meta(self.model, name=name, revision=revision)

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """(N, H) embeddings of the texts of an MTEB DataLoader, each with the task's instruction (unless
        `use_instructions` is off), encoded a chunk of batches at a time; an out-of-memory error halves the
        batch size and retries, so big tasks fit whatever batch size was asked for."""
        instruction = llm2vec_instruction(self.get_instruction(task_metadata, prompt_type)) if self.use_instructions else ""
        self.batch_size = self.batch_size or kwargs.get("batch_size", 32)
        pieces, chunk = [], []
        for batch in inputs:
            chunk += [[instruction, text] if instruction else text for text in batch["text"]]
            if len(chunk) >= CHUNK_TEXTS:
                pieces.append(self._encode_adapting(chunk))
                chunk = []
        if chunk or not pieces:
            pieces.append(self._encode_adapting(chunk))
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def _encode_adapting(self, sentences: list[Any]) -> np.ndarray:
        import torch

        while True:
            try:
                return self.model.encode(sentences, batch_size=self.batch_size, show_progress_bar=False, device=self.device)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
