"""`bg2vec export`: one encoder, a folder for each runtime (sentence-transformers, ONNX Runtime, llama.cpp,
TEI, vLLM), each carrying the switches its runtime reads, the pooling, the Matryoshka dims, the instructions
and a card saying how to load and serve it there. `load_encoder` runs a folder behind the encoder API.

    bg2vec export --model outputs/demo-simcse --to onnx --output outputs/demo-onnx
    >>> export_model(Bg2Vec.from_pretrained("outputs/demo-simcse", torch_dtype="float32"), "gguf", "outputs/demo-gguf")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..encoding.backends import BACKENDS, load_encoder
from ..encoding.encoder import Bg2Vec
from ..errors import ConfigError
from .common import check_output, instruction_prompts, runtime_flags, settings_table, staged, write_json, write_record

TARGETS = ("sentence-transformers", "onnx", "gguf", "tei", "vllm")


@dataclass
class ExportResult:
    """What an export wrote and what the summary line should say."""

    path: Path
    files: list[str]
    notes: list[str] = field(default_factory=list)


def check_target(encoder: Bg2Vec, target: str, gguf_types: list[str] | None = None) -> None:
    """ConfigError (before anything is written) if `target` is unknown or cannot represent `encoder`."""
    if target not in TARGETS:
        raise ConfigError("--to", target, "one of " + ", ".join(TARGETS))
    if target == "sentence-transformers":
        from ..encoding.export import sentence_transformers_pooling

        sentence_transformers_pooling(encoder)
    elif target == "onnx":
        from .onnx import check_onnx

        check_onnx(encoder)
    elif target == "gguf":
        from .gguf import check_gguf

        check_gguf(encoder, gguf_types or ["f32"])
    else:
        from .servers import check_server

        check_server(encoder, target)


def export_model(
    encoder: Bg2Vec,
    target: str,
    output: str | Path,
    prompts: dict[str, str] | None = None,
    truncate_dim: int | None = None,
    gguf_types: list[str] | None = None,
    quantize: bool = True,
    overwrite: bool = False,
    sources: dict[str, str | None] | None = None,
) -> ExportResult:
    """Write `encoder` as a folder `target` reads (all or nothing) and return what was written.

    `prompts` (name → instruction) are the instructions the model is used with; `truncate_dim` a Matryoshka
    dim the sentence-transformers folder returns; `gguf_types` some of f32, f16, q8_0; `quantize` adds the
    int8 ONNX model. `sources` (setting → local path) are folders the output must not be inside.
    """
    out = check_output(output, sources or {}, overwrite)
    check_target(encoder, target, gguf_types)
    if truncate_dim is not None:
        encoder._checked_dim(truncate_dim)
    prompts = dict(prompts or {})
    notes: list[str] = []
    table = settings_table(encoder, prompts)
    with staged(out) as work:
        if target == "sentence-transformers":
            from ..encoding.export import export_sentence_transformers

            export_sentence_transformers(encoder, work, instruction_prompts(prompts), truncate_dim)
            files = ["model.safetensors", "modules.json"]
            runtime = {"reads": "config.json is_causal false; modules.json; prompts with include_prompt false"}
            pooled = False
        elif target == "onnx":
            from .onnx import onnx_card, write_onnx

            files = write_onnx(encoder, work, quantize)
            encoder.model.config.to_json_file(str(work / "config.json"))
            encoder.tokenizer.save_pretrained(work)
            write_json(work / "bg2vec_config.json", encoder.description())
            (work / "README.md").write_text(onnx_card(encoder, table, files), encoding="utf-8")
            runtime = {"inputs": ["input_ids", "attention_mask", "pooling_mask"], "outputs": ["sentence_embedding", "last_hidden_state"],
                       "padding_side": "left", "files": files}
            pooled = False
        elif target == "gguf":
            from .gguf import GGUF_POOLING, gguf_card, write_gguf

            files = write_gguf(encoder, work, gguf_types or ["f32", "f16", "q8_0"])
            settings = encoder.settings
            exact = settings.pooling_mode in ("last_token", "bos_token") or (settings.pooling_mode == "mean" and not settings.skip_instruction)
            if not exact:
                notes.append(f"llama.cpp's {GGUF_POOLING[settings.pooling_mode]} pooling includes BOS and instructions; "
                             "for bg2vec's exact vector use pooling NONE and average the text's tokens (see README.md)")
            (work / "README.md").write_text(gguf_card(encoder, table, files, exact), encoding="utf-8")
            runtime = {"attention.causal": False, "pooling_type": GGUF_POOLING[settings.pooling_mode], "files": files}
            pooled = True
        else:
            from .servers import server_card, write_server_folder

            write_server_folder(encoder, work, target)
            (work / "README.md").write_text(server_card(encoder, target, table), encoding="utf-8")
            files = ["config.json", "model.safetensors", "1_Pooling/config.json"]
            runtime = {"config.json": runtime_flags(encoder.model.config), "status": "written, not yet run"}
            pooled = True
            notes.append(f"{target} pools every token, BOS and instructions included; written, not yet run (needs a GPU)")
        if pooled and encoder.settings.skip_instruction:
            from .parity import all_tokens_pooled_cosine

            figure = all_tokens_pooled_cosine(encoder)
            runtime["parity_all_tokens_pooled_min_cosine"] = round(figure, 5)
            notes.append(f"pooling every token gives cosine >= {figure:.4f} with bg2vec on the parity set")
        write_record(work, encoder, target, runtime, prompts, pooled, notes)
    return ExportResult(out, files, notes)


__all__ = ["TARGETS", "BACKENDS", "ExportResult", "check_target", "export_model", "load_encoder"]
