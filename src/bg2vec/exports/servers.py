"""Folders for GPU servers that read a Hugging Face model folder: text-embeddings-inference (TEI) and vLLM.

Both read the attention switch from config.json (`common.runtime_flags`: `use_bidirectional_attention` for
TEI's Mistral/Llama/Qwen3/Gemma 3, `is_causal: false` for Qwen2) and the pooling from sentence-transformers'
`1_Pooling/config.json`. vLLM runs Llama and Mistral bidirectionally only as its `LlamaBidirectionalModel`
architecture, which takes the pooling from config.json's `pooling` ("avg", "cls", "last"): that is written
into config.json, so no `--hf-overrides` is needed.

Neither server can leave tokens out of the pooling: BOS and any instruction are pooled. The card and the
command's summary say so; `bg2vec export`'s parity figure measures it on the torch side (`parity.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..encoding.encoder import Bg2Vec
from ..errors import ConfigError
from .common import hidden_size, runtime_flags, save_hf_folder, write_json

SERVER_POOLING = {"mean": "mean", "last_token": "lasttoken", "bos_token": "cls"}  # sentence-transformers names
VLLM_POOLING = {"mean": "avg", "last_token": "last", "bos_token": "cls"}
# vLLM: model types it runs bidirectionally under another architecture name (written into config.json).
VLLM_ARCHITECTURES = {"llama": "LlamaBidirectionalModel", "mistral": "LlamaBidirectionalModel",
                      "gemma3_text": "Gemma3TextModel", "qwen2": "Qwen2Model", "qwen3": "Qwen3Model"}
TEI_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")


def check_server(encoder: Bg2Vec, target: str) -> None:
    model_type = encoder.model.config.model_type
    families = TEI_FAMILIES if target == "tei" else tuple(VLLM_ARCHITECTURES)
    if model_type not in families:
        raise ConfigError("--to", target, f"a model of a family {target} runs bidirectionally: " + ", ".join(families),
                          fix=f"model_type {model_type!r} would run causal there; use --to onnx or sentence-transformers")
    if encoder.settings.pooling_mode not in SERVER_POOLING:
        raise ConfigError("pooling_mode", encoder.settings.pooling_mode, "one of " + ", ".join(SERVER_POOLING) + f" for {target}",
                          fix=f"{target} has no {encoder.settings.pooling_mode} pooling")


def write_server_folder(encoder: Bg2Vec, path: Path, target: str) -> None:
    """The merged model with the switches and pooling `target` reads."""
    model_type = encoder.model.config.model_type
    flags: dict[str, Any] = runtime_flags(encoder.model.config)
    if target == "vllm":
        flags["architectures"] = [VLLM_ARCHITECTURES[model_type]]
        flags["pooling"] = VLLM_POOLING[encoder.settings.pooling_mode]
    save_hf_folder(encoder, path, flags)
    mode = SERVER_POOLING[encoder.settings.pooling_mode]
    write_json(path / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ])
    write_json(path / "1_Pooling" / "config.json", {"embedding_dimension": hidden_size(encoder), "pooling_mode": mode, "include_prompt": True})
    write_json(path / "sentence_bert_config.json", {"max_seq_length": encoder.settings.max_length, "do_lower_case": False})


def server_card(encoder: Bg2Vec, target: str, table: str) -> str:
    name = Path(str(encoder.name_or_path)).name
    if target == "tei":
        run = """```bash
docker run --gpus all -p 8080:80 -v $PWD:/data ghcr.io/huggingface/text-embeddings-inference:latest \\
    --model-id /data/THIS_FOLDER
curl 127.0.0.1:8080/embed -X POST -H 'Content-Type: application/json' -d '{"inputs": "София е столицата на България."}'
```"""
        reads = "`use_bidirectional_attention: true` (Qwen2: `is_causal: false`) and `1_Pooling/config.json`"
    else:
        run = f"""```bash
vllm serve path/to/this/folder --runner pooling
```

```python
from vllm import LLM
llm = LLM("path/to/this/folder", runner="pooling")
vectors = [o.outputs.embedding for o in llm.embed(["София е столицата на България."])]
```

config.json already carries `architectures: ["{VLLM_ARCHITECTURES[encoder.model.config.model_type]}"]` and `pooling`; for the
unexported model the same is `--hf-overrides '{{"architectures": ["{VLLM_ARCHITECTURES[encoder.model.config.model_type]}"], "pooling": "{VLLM_POOLING[encoder.settings.pooling_mode]}"}}'`."""
        reads = "the architecture and `pooling` in config.json (and `is_causal: false`)"
    return f"""---
library_name: transformers
pipeline_tag: feature-extraction
tags: [bg2vec, llm2vec, {target}, text-embeddings]
---

# {name} for {"text-embeddings-inference" if target == "tei" else "vLLM"} (bg2vec)

The merged bidirectional encoder; {target} reads {reads}.

{run}

**Status: written, not yet run** (needs a GPU; `benchmarks/gpu_check.py` runs the parity set through it when
one is lent).

**Instructions and BOS are pooled here.** {target} averages every token it is given; bg2vec leaves BOS and the
instruction out. Send `instruction + " " + text` as the input to use an instruction, and expect vectors close
to, not equal to, bg2vec's (the export's summary gives the cosine on the parity set).

{table}
"""
