"""The `bg2vec encode-corpus` config: files, folders or globs of texts → a folder of Parquet shards + manifest."""

from __future__ import annotations

from dataclasses import dataclass

from ..corpus.choices import DTYPES, ENGINES
from ..encoding.choices import POOLING_MODES
from ..errors import ConfigError
from .fields import TORCH_DTYPES, check_choice, check_positive, setting


@dataclass
class EncodeCorpusConfig:
    """Corpus encoding (`bg2vec encode-corpus`): files, folders or globs of texts → a folder of embedding shards."""

    inputs: list[str] = setting("Files, folders (every file in them) or globs of .txt/.jsonl/.csv/.tsv/.parquet, compressed or not.",
                              default_factory=list)
    output: str = setting("The output folder: shard-NNNNN.parquet files and manifest.json; a re-run resumes it.", "")
    model_name_or_path: str = setting("The model: Hub id, folder (bg2vec/llm2vec output), .gguf file or pypi: alias.", "")
    adapter: str | None = setting("A PEFT adapter applied on top (llm2vec's peft_model_name_or_path).", None)
    # --- reading ---
    text_column: str = setting("The field or column holding the text (.jsonl, .csv/.tsv, .parquet).", "text")
    id_column: str | None = setting("The field or column holding each row's unique id; None: the row number across the inputs, from 0.", None)
    instruction_column: str | None = setting("A field or column holding each row's instruction (empty: --instruction, if given).", None)
    instruction: str | None = setting("The instruction paired with every text without its own (attends, is not pooled).", None)
    # --- vectors ---
    dtype: str = setting("Stored as float32, float16, int8 (with a scale per row) or binary (sign bits, packed).", "float32")
    dim: int | None = setting("Keep the first DIM values (a Matryoshka prefix), then normalize if asked; None: all.", None)
    normalize: bool = setting("L2-normalize the embeddings (after --dim).", False)
    pooling_mode: str | None = setting("mean, weighted_mean, eos_token, last_token or bos_token; None: as saved, else mean.", None)
    max_length: int | None = setting("Tokens per input; None: as saved, else 512.", None)
    torch_dtype: str = setting("Weights dtype: auto, float32, bfloat16 or float16.", "auto")
    # --- execution ---
    shard_rows: int = setting("Rows per output shard: the unit of resuming (a killed run redoes at most one per worker).", 10_000)
    batch_size: int = setting("Texts per forward pass at most.", 32)
    max_batch_tokens: int | None = setting("Padded tokens per forward pass at most (rows x longest); None: no limit.", 16_384)
    engine: str = setting("local (this machine: a worker process per --device) or ray (a Ray Data actor pool).", "local")
    device: str | None = setting("local engine: cpu, cuda, cuda:1..., or several (cuda:0,cuda:1); None: cuda if available.", None)
    workers: int = setting("ray engine: model actors (each loads the model once).", 1)
    gpus_per_worker: float = setting("ray engine: GPUs per actor (0: CPU actors).", 0.0)
    cpus_per_worker: float = setting("ray engine: CPUs per actor (its torch threads).", 1.0)
    ray_address: str | None = setting("ray engine: the cluster to join (host:port, ray://host:port or auto); None: "
                                    "$RAY_ADDRESS, else a local cluster started for the run.", None)
    overwrite: bool = setting("Start over: remove the folder's shards and manifest instead of resuming.", False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs", self.inputs, "at least one file, folder or glob")
        for name, flag in (("output", "--output"), ("model_name_or_path", "--model")):
            if not getattr(self, name):
                raise ConfigError(name, "", "a path or model reference", fix=f"pass {flag}")
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("engine", self.engine, ENGINES)
        check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)
        if self.pooling_mode is not None:
            check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        for name in ("shard_rows", "batch_size", "workers"):
            check_positive(name, getattr(self, name))
        for name in ("dim", "max_length", "max_batch_tokens"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        for name in ("gpus_per_worker", "cpus_per_worker"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), "a number >= 0")
        if self.instruction is not None and not self.instruction.strip():
            raise ConfigError("instruction", self.instruction, "a non-empty instruction, or none")
