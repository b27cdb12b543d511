"""The `bg2vec mine-negatives` config: (query, positive) rows in, rows with hard negatives out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .fields import TORCH_DTYPES, check_choice, setting


@dataclass
class MineNegativesConfig:
    """Hard-negative mining (`bg2vec mine-negatives`): an encoder ranks the pool, the closest non-positives are kept.

    The mining numbers are checked by `encoding.mining.MiningSettings`, which `mining()` builds.
    """

    model_name_or_path: str = setting("The encoder that ranks the candidates (any model reference).", "")
    adapter: str | None = setting("A PEFT adapter on top of the model.", None)
    input: str = setting(".jsonl of {query, positive[, instruction]} rows, or an E5 folder.", "")
    output: str = setting(".jsonl of {query, positive, negative: [...]} rows.", "")
    pool: str | None = setting("More candidate texts: a .jsonl whose positives join the pool.", None)
    negatives: int = setting("Hard negatives per row.", 1)
    top_k: int = setting("Candidates looked at per query.", 50)
    skip_top: int = setting("Ranks skipped before taking negatives.", 0)
    margin: float = setting("Skip candidates within this of the positive's cosine.", 0.0)
    max_score_ratio: float = setting("Skip candidates above this x the positive's cosine (1 or more: off).", 0.95)
    batch_size: int = setting("Texts per forward pass.", 32)
    chunk_size: int = setting("Queries scored at a time.", 1024)
    overwrite: bool = setting("Replace an existing output.", False)
    torch_dtype: str = setting("auto, float32, bfloat16 or float16.", "auto")
    trust_remote_code: bool = setting("Run Python code that comes with the model (only for a model you trust).", False)

    def __post_init__(self) -> None:
        for name, flag in (("model_name_or_path", "--model"), ("input", "--input"), ("output", "--output")):
            if not getattr(self, name):
                raise ConfigError(name, "", "a path or model reference", fix=f"pass {flag}")
        check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)

    def mining(self) -> dict[str, Any]:
        """The keyword arguments of `MiningSettings`."""
        names = ("negatives", "top_k", "skip_top", "margin", "max_score_ratio", "batch_size", "chunk_size")
        return {name: getattr(self, name) for name in names}
