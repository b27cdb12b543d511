"""llama.cpp export: the merged encoder as one GGUF file written with the `gguf` package, with
`<arch>.attention.causal = false` and the pooling type in the file, in f32, f16 or Q8_0.

Per-family facts are rows of `GGUF_FAMILIES` (cf. llama.cpp's convert_hf_to_gguf.py, whose conventions these
follow): the GGUF architecture, whether q/k rows are permuted (llama.cpp's LLAMA rope pairs neighbouring
dims, Hugging Face's pairs halves), and Gemma's RMSNorm (`1 + weight`). Gemma 3 is written as llama.cpp's
`gemma-embedding` architecture, whose sliding window is symmetric as in transformers' bidirectional one:
transformers attends |i - j| <= W, llama.cpp |i - j| <= n_swa / 2, so n_swa = 2W.

The tokenizer goes in as llama.cpp's `gpt2` (byte-level BPE with GPT-2's or Qwen2's pre-tokenizer) or `llama`
(SentencePiece: a Unigram tokenizer.json, or a BPE one with byte fallback); any other is refused.

Pooling: llama.cpp's MEAN averages every token of the input, BOS and instruction included. bg2vec's default
(`skip_instruction`) leaves both out: such a file still carries MEAN for llama-server, and the card says how to
get bg2vec's vector exactly (pooling NONE, then average the text's tokens, as llama.cpp's gritlm example does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..encoding.encoder import Bg2Vec
from ..errors import ConfigError
from ..models.backbone import merged_state_dict

GGUF_TYPES = ("f32", "f16", "q8_0")
# bg2vec pooling → llama.cpp pooling type name (gguf.PoolingType); llama.cpp has no weighted mean.
GGUF_POOLING = {"mean": "MEAN", "last_token": "LAST", "eos_token": "LAST", "bos_token": "CLS"}


@dataclass(frozen=True)
class GgufFamily:
    """How one Hugging Face model type is written for llama.cpp."""

    arch: str  # gguf.MODEL_ARCH member name
    permute_qk: bool = False  # LLAMA-arch rope: q/k rows reordered from halves to pairs
    norm_shift: float = 0.0  # added to every *norm.weight (Gemma's RMSNorm multiplies by 1 + weight)
    notes: str = ""


GGUF_FAMILIES: dict[str, GgufFamily] = {
    "llama": GgufFamily("LLAMA", permute_qk=True),
    "mistral": GgufFamily("LLAMA", permute_qk=True, notes="llama.cpp runs Mistral as LLAMA (no sliding window)."),
    "qwen2": GgufFamily("QWEN2"),
    "gemma3_text": GgufFamily("GEMMA_EMBEDDING", norm_shift=1.0, notes="Symmetric sliding window, as EmbeddingGemma."),
}


def gguf_file_name(encoder: Bg2Vec, kind: str) -> str:
    return f"{Path(str(encoder.name_or_path)).name or 'model'}-{kind}.gguf"


def check_gguf(encoder: Bg2Vec, kinds: list[str]) -> None:
    """ConfigError for what llama.cpp cannot represent: the architecture, pooling, tokenizer, rope scaling."""
    config = encoder.model.config
    if config.model_type not in GGUF_FAMILIES:
        raise ConfigError("--to", "gguf", "a model of a family llama.cpp runs bidirectionally: " + ", ".join(GGUF_FAMILIES),
                          fix=f"model_type {config.model_type!r} is not written by bg2vec's GGUF export; use --to onnx")
    for kind in kinds:
        if kind not in GGUF_TYPES:
            raise ConfigError("--gguf-type", kind, "one of " + ", ".join(GGUF_TYPES))
    if encoder.settings.pooling_mode not in GGUF_POOLING:
        raise ConfigError("pooling_mode", encoder.settings.pooling_mode, "one of " + ", ".join(GGUF_POOLING) + " for llama.cpp",
                          fix="llama.cpp has no weighted mean pooling; use --to onnx")
    scaling = getattr(config, "rope_scaling", None)
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise ConfigError("rope_scaling", scaling, "no rope scaling for bg2vec's GGUF export", fix="use --to onnx")
    if config.model_type == "gemma3_text":
        head_dim = config.head_dim
        if getattr(config, "query_pre_attn_scalar", head_dim) != head_dim:
            raise ConfigError("query_pre_attn_scalar", config.query_pre_attn_scalar, f"the head dim {head_dim}",
                              fix="llama.cpp scales Gemma 3 attention by 1/sqrt(head_dim); use --to onnx")
    tokenizer_metadata(encoder.tokenizer, _vocab_rows(encoder))  # raises for a tokenizer GGUF cannot hold


def write_gguf(encoder: Bg2Vec, path: Path, kinds: list[str]) -> list[str]:
    """One .gguf per kind (f32, f16, q8_0) into `path`; returns the file names."""
    import gguf

    config = encoder.model.config
    family = GGUF_FAMILIES[config.model_type]
    arch = gguf.MODEL_ARCH[family.arch]
    tensors = _gguf_tensors(encoder, family, arch)
    tokenizer = tokenizer_metadata(encoder.tokenizer, _vocab_rows(encoder))
    names = []
    for kind in kinds:
        name = gguf_file_name(encoder, kind)
        writer = gguf.GGUFWriter(str(path / name), gguf.MODEL_ARCH_NAMES[arch])
        _write_hparams(writer, encoder, family, kind)
        _write_tokenizer(writer, tokenizer)
        for tensor_name, data in tensors:
            _add_tensor(writer, tensor_name, data, kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        names.append(name)
    return names


def _write_hparams(writer: Any, encoder: Bg2Vec, family: GgufFamily, kind: str) -> None:
    import gguf

    config = encoder.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(Path(str(encoder.name_or_path)).name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(_vocab_rows(encoder))
    rope = _rope_thetas(config)
    writer.add_rope_freq_base(rope.get("full_attention", rope.get("default", 10_000.0)))
    if family.arch == "LLAMA":
        writer.add_rope_dimension_count(head_dim)
    if family.arch == "GEMMA_EMBEDDING":
        layer_types = list(getattr(config, "layer_types", None) or [])
        writer.add_sliding_window(2 * config.sliding_window)  # llama.cpp's symmetric window is ±n_swa/2
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
        writer.add_rope_freq_base_swa(rope.get("sliding_attention", 10_000.0))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType[GGUF_POOLING[encoder.settings.pooling_mode]])
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_type[kind])


def _vocab_rows(encoder: Bg2Vec) -> int:
    return encoder.model.get_input_embeddings().weight.shape[0]


def _rope_thetas(config: Any) -> dict[str, float]:
    """rope_theta per layer type ("default" for one theta), from transformers 5's rope_parameters."""
    params = getattr(config, "rope_parameters", None) or {}
    if "rope_theta" in params:
        return {"default": float(params["rope_theta"])}
    thetas = {name: float(p["rope_theta"]) for name, p in params.items() if isinstance(p, dict) and "rope_theta" in p}
    return thetas or {"default": float(getattr(config, "rope_theta", 10_000.0))}


def _gguf_tensors(encoder: Bg2Vec, family: GgufFamily, arch: Any) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every decoder weight, adapters merged, in llama.cpp's conventions."""
    import gguf

    config = encoder.model.config
    state = merged_state_dict(encoder.model)
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    out = []
    for name, tensor in state.items():
        if name.startswith("lm_head") or "rotary_emb" in name:
            continue  # an encoder needs no LM head
        data = tensor.detach().to(torch.float32)
        if family.permute_qk and name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif family.permute_qk and name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        if family.norm_shift and name.endswith("norm.weight"):
            data = data + family.norm_shift
        gguf_name = name_map.get_name(name if name.startswith("model.") else "model." + name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError("--to", "gguf", f"weights llama.cpp's {family.arch} knows; {name!r} has no GGUF name",
                              fix="use --to onnx")
        out.append((gguf_name, data.numpy()))
    return out


def _permute(weights: torch.Tensor, heads: int) -> torch.Tensor:
    """(heads·d, H) rows from Hugging Face's rotate-half order to llama.cpp's interleaved pairs."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _add_tensor(writer: Any, name: str, data: np.ndarray, kind: str) -> None:
    import gguf

    if data.ndim == 1 or kind == "f32" or name == "token_embd.weight" and kind == "q8_0" and data.shape[1] % 32:
        writer.add_tensor(name, data.astype(np.float32))  # norms and biases stay f32, as in llama.cpp's files
    elif kind == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    elif data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
        writer.add_tensor(name, data.astype(np.float16))  # rows not a whole number of Q8_0 blocks
    else:
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)


# --- tokenizer --------------------------------------------------------------------------------------------

def tokenizer_metadata(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """The tokenizer as llama.cpp's `gpt2` or `llama` vocabulary of `vocab_size` entries (the embedding's rows:
    a token past them cannot be embedded anyway), or ConfigError naming what it cannot hold."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    added = {token["id"]: token for token in spec.get("added_tokens", [])}
    special_ids = {i for i, token in added.items() if token.get("special")}
    tokens, types, scores = [], [], []
    pre = _byte_level_pre(spec) if model["type"] == "BPE" else None
    if pre is not None:
        by_id = {i: t for t, i in model["vocab"].items()}
        by_id.update({i: token["content"] for i, token in added.items()})
        for i in range(vocab_size):
            tokens.append(by_id.get(i, f"[PAD{i}]"))
            types.append(3 if i in special_ids else 4 if i in added else 1 if i in by_id else 5)  # control, user, normal, unused
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        meta = {"model": "gpt2", "pre": pre, "merges": merges}
    elif model["type"] == "Unigram":
        pieces = model["vocab"][:vocab_size] + [[f"[PAD{i}]", -1e9] for i in range(len(model["vocab"]), vocab_size)]
        for i, (piece, score) in enumerate(pieces):
            tokens.append(piece)
            scores.append(float(score))
            types.append(3 if i in special_ids else 4 if i in added else 6 if piece.startswith("<0x") else 1)
        meta = {"model": "llama", "scores": scores, "space_prefix": _prepends_space(spec)}
    elif model["type"] == "BPE" and model.get("byte_fallback"):
        by_id = {i: t for t, i in model["vocab"].items()}
        by_id.update({i: token["content"] for i, token in added.items()})
        # llama.cpp's SentencePiece merges the adjacent pair whose result scores highest: a merge's rank as a
        # negative score gives Hugging Face's BPE order; pieces no merge makes (characters, bytes) score 0.
        ranks: dict[str, int] = {}
        for rank, merge in enumerate(model.get("merges", [])):
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            ranks.setdefault(left + right, rank)
        for i in range(vocab_size):
            piece = by_id.get(i, f"[PAD{i}]")
            tokens.append(piece)
            scores.append(-float(ranks[piece]) if piece in ranks else 0.0 if len(piece) == 1 else -1e9)
            types.append(3 if i in special_ids else 4 if i in added else 6 if piece.startswith("<0x") and len(piece) == 6 else 1)
        meta = {"model": "llama", "scores": scores, "space_prefix": _prepends_space(spec)}
    else:
        raise ConfigError("tokenizer", model["type"], "a byte-level BPE tokenizer with GPT-2's pre-tokenizer, or a "
                          "SentencePiece one (Unigram, or BPE with byte fallback), for GGUF",
                          fix="convert with llama.cpp's convert_hf_to_gguf.py and set <arch>.attention.causal false, or use --to onnx")
    meta.update(tokens=tokens, types=types, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                unk=tokenizer.unk_token_id, add_bos=tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id])
    return meta


# Byte-level pre-tokenizer regexes (as in tokenizer.json) → llama.cpp's name for the same split.
PRE_TOKENIZERS = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}


def _byte_level_pre(spec: dict[str, Any]) -> str | None:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json: a lone ByteLevel with its own (GPT-2)
    regex is `gpt-2`; a Split by a regex of PRE_TOKENIZERS, then ByteLevel without regex, is that row."""
    pre = spec.get("pre_tokenizer") or {}
    normalizer = (spec.get("normalizer") or {}).get("type")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and normalizer is None:
        return "gpt-2"
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(parts) == 2 and parts[0].get("type") == "Split" and parts[1].get("type") == "ByteLevel" \
            and not parts[1].get("use_regex", True) and normalizer in (None, "NFC"):
        return PRE_TOKENIZERS.get(parts[0].get("pattern", {}).get("Regex"))
    return None


def _prepends_space(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts "▁" before a text (Llama 2, Mistral) or not (Gemma): llama.cpp's
    add_space_prefix, which it otherwise assumes true."""
    steps = [spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}]
    steps += [*steps[0].get("normalizers", []), *steps[1].get("pretokenizers", [])]
    return any(step.get("type") == "Prepend" or step.get("prepend_scheme") in ("always", "first") for step in steps)


def _write_tokenizer(writer: Any, meta: dict[str, Any]) -> None:
    writer.add_tokenizer_model(meta["model"])
    if "space_prefix" in meta:
        writer.add_add_space_prefix(meta["space_prefix"])
    if "pre" in meta:
        writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["types"])
    if "scores" in meta:
        writer.add_token_scores(meta["scores"])
    if "merges" in meta:
        writer.add_token_merges(meta["merges"])
    for key, value in (("bos", meta["bos"]), ("eos", meta["eos"]), ("unk", meta["unk"])):
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(value)
    writer.add_add_bos_token(bool(meta["add_bos"]))
    writer.add_add_eos_token(False)


def gguf_card(encoder: Bg2Vec, table: str, files: list[str], exact_pooling: bool) -> str:
    first = files[0]
    mode = GGUF_POOLING[encoder.settings.pooling_mode].lower()
    caveat = "" if exact_pooling else f"""
**Pooling.** This file asks llama.cpp for `{mode}` pooling over every token of the input, BOS and any
instruction included; bg2vec pools only the text's own tokens. For bg2vec's exact vector, run with pooling
NONE and average the text's token vectors (llama.cpp's gritlm example does this):

```python
from llama_cpp import Llama, LLAMA_POOLING_TYPE_NONE
llm = Llama("{first}", embedding=True, pooling_type=LLAMA_POOLING_TYPE_NONE)
tokens = llm.embed("Намери подобни изречения: Пловдив е стар град.")   # one vector per token
text = tokens[-n:]   # n = the text's own tokens (tokenize it alone, without BOS); average them
```
"""
    return f"""---
library_name: gguf
pipeline_tag: feature-extraction
tags: [bg2vec, llm2vec, gguf, llama.cpp, text-embeddings]
---

# {Path(str(encoder.name_or_path)).name} for llama.cpp (bg2vec)

{", ".join(f"`{f}`" for f in files)}: the merged encoder with `attention.causal = false` and `pooling_type = {mode}`
in the file, so llama.cpp attends both ways and pools without any flag.

```bash
llama-server -m {first} --embeddings          # POST /v1/embeddings
llama-embedding -m {first} -p "София е столицата на България."
```

```python
from llama_cpp import Llama
llm = Llama("{first}", embedding=True)
vector = llm.embed("София е столицата на България.")
```
{caveat}
{table}
"""
