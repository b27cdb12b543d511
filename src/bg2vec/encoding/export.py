"""Export a Bg2Vec encoder as a sentence-transformers model: `SentenceTransformer(folder)` loads it with only
sentence-transformers' own modules and gives bg2vec's embeddings.

What carries each part of the encoder, with no code of ours:

- bidirectional attention: config.json's `is_causal: false`, which transformers 5 reads on every forward;
- adapters: merged into the saved weights;
- pad token: the saved tokenizer. It pads on the right, whichever side the encoder's pads (Bg2Vec's: the left):
  each text then has the positions bg2vec gives it, from 0 at its first token, and every sentence-transformers
  version pools it right (older ones take `cls` at position 0 and count `lasttoken` and `weightedmean` as if
  padded on the right);
- pooling: sentence-transformers' `Pooling`. llm2vec pools mean over the text's tokens without BOS; a
  `WordWeights` module that gives the BOS token weight 0 does exactly that (Pooling then divides by the
  weights' sum, the number of text tokens);
- prompts: `config_sentence_transformers.json`; a model card README says how to use the folder.

Settings that sentence-transformers cannot express are refused (`ConfigError`), never exported approximately:
`eos_token` pooling (llm2vec appends EOS text to each input), `weighted_mean` over the text without BOS
(its weights would start at BOS), and llm2vec's chat wrapping.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .encoder import Bg2Vec, save_merged_model
from ..errors import ConfigError
from ..models.portable_files import portable_tokenizer_files
from ..models.saved_outputs import write_description

ST_POOLING = {"mean": "mean", "weighted_mean": "weightedmean", "last_token": "lasttoken", "bos_token": "cls"}


def export_sentence_transformers(
    encoder: Bg2Vec, output_path: str | Path, prompts: dict[str, str] | None = None, truncate_dim: int | None = None
) -> Path:
    """Write `encoder` as a sentence-transformers folder and return its path. `prompts` (name → text, e.g.
    {"query": "Retrieve passages that answer the question: "}) become the model's named prompts; `truncate_dim`
    (a Matryoshka dim) makes sentence-transformers return that prefix of every embedding.

    >>> export_sentence_transformers(encoder, "outputs/bg2vec-st")
    >>> SentenceTransformer("outputs/bg2vec-st").encode(["София е столицата на България."])
    """
    pooling_mode, exclude_bos = sentence_transformers_pooling(encoder)
    path = Path(output_path)
    path.mkdir(parents=True, exist_ok=True)
    save_merged_model(encoder.model, path)
    _save_right_padded(encoder.tokenizer, path)
    write_description(path, {**encoder.description(), "stage": "export"})

    hidden = encoder.model.get_input_embeddings().weight.shape[1]
    modules = [_module(0, "", "Transformer")]
    if exclude_bos:
        modules.append(_module(1, "1_WordWeights", "WordWeights"))
        _write_word_weights(path / "1_WordWeights", encoder)
    modules.append(_module(len(modules), f"{len(modules)}_Pooling", "Pooling"))
    # A prompt is an instruction: left out of the pooling, as bg2vec leaves it (sentence-transformers masks the
    # prompt's token count from the start, BOS included).
    include_prompt = not (prompts and encoder.settings.skip_instruction)
    pooling_config = {"embedding_dimension": hidden, "pooling_mode": pooling_mode, "include_prompt": include_prompt}
    _write_json(path / modules[-1]["path"] / "config.json", pooling_config)
    _write_json(path / "modules.json", modules)
    _write_json(path / "sentence_bert_config.json", {"max_seq_length": encoder.settings.max_length, "do_lower_case": False})
    _write_json(path / "config_sentence_transformers.json", {
        "__version__": _versions(),
        "model_type": "SentenceTransformer",
        "prompts": prompts or {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        **({"truncate_dim": encoder._checked_dim(truncate_dim)} if truncate_dim is not None else {}),
    })
    (path / "README.md").write_text(model_card(encoder, pooling_mode, exclude_bos, prompts or {}), encoding="utf-8")
    return path


def sentence_transformers_pooling(encoder: Bg2Vec) -> tuple[str, bool]:
    """(sentence-transformers pooling mode, whether BOS must be weighted out), or ConfigError if the
    encoder's settings have no exact sentence-transformers equivalent."""
    settings = encoder.settings
    if encoder.chat_format is not None:
        raise ConfigError(
            "chat_format", encoder.name_or_path, "a model without llm2vec's chat wrapping for a sentence-transformers export",
            fix="sentence-transformers cannot wrap each text; encode with bg2vec",
        )
    if settings.pooling_mode not in ST_POOLING:
        raise ConfigError(
            "pooling_mode", settings.pooling_mode, "one of " + ", ".join(ST_POOLING) + " for a sentence-transformers export",
            fix="sentence-transformers cannot append llm2vec's EOS text to each input; export with last_token pooling",
        )
    starts_with_bos = encoder.tokenizer("a")["input_ids"][:1] == [encoder.tokenizer.bos_token_id]
    if settings.pooling_mode == "bos_token" and not starts_with_bos:
        raise ConfigError("pooling_mode", "bos_token", "a tokenizer that puts BOS first", fix="use mean pooling")
    exclude_bos = settings.skip_instruction and starts_with_bos and settings.pooling_mode in ("mean", "weighted_mean")
    if exclude_bos and settings.pooling_mode == "weighted_mean":
        raise ConfigError(
            "pooling_mode", "weighted_mean", "mean, last_token or bos_token when skip_instruction leaves BOS out",
            fix="sentence-transformers' weights would count from BOS; export with skip_instruction false or mean pooling",
        )
    return ST_POOLING[settings.pooling_mode], exclude_bos


def model_card(encoder: Bg2Vec, pooling_mode: str, exclude_bos: bool, prompts: dict[str, str]) -> str:
    """The README of an exported folder: what the model is, how to use it, and where it equals bg2vec."""
    settings = encoder.settings
    base = encoder.name_or_path or "unknown"
    pooled = "the text's tokens (BOS weighted 0 by WordWeights)" if exclude_bos else "all tokens of the input"
    causal = getattr(encoder.model.config, "is_causal", True)
    attention = "causal" if causal else "bidirectional (`is_causal: false` in config.json)"
    prompt_lines = "\n".join(f"| `{name}` | `{text}` |" for name, text in prompts.items()) or "| (none) | |"
    codes = encoder.description().get("language") or ()
    language = "".join(["language:\n", *(f"- {code}\n" for code in codes)]) if codes else ""
    return f"""---
{language}library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- feature-extraction
- bg2vec
- llm2vec
base_model: {base}
---

# {Path(base).name} as a text encoder (bg2vec / LLM2Vec)

A decoder-only LLM turned into a text encoder the LLM2Vec way (arXiv 2404.05961): bidirectional attention,
then adapters trained with Bi-MNTP and SimCSE, merged into these weights. Exported by bg2vec
{encoder.description()["bg2vec_version"]}; sentence-transformers loads it with its own modules only.

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/this/folder")
embeddings = model.encode(["София е столицата на България.", "Пловдив е един от най-старите градове в Европа."])
```

or, with instructions excluded from pooling as in llm2vec:

```python
from bg2vec import Bg2Vec

encoder = Bg2Vec.from_pretrained("path/to/this/folder")
embeddings = encoder.encode([["Retrieve semantically similar text:", "София е столицата на България."]])
```

| setting | value |
| --- | --- |
| base model | `{base}` |
| attention | {attention} |
| pooling | `{settings.pooling_mode}` over {pooled} (sentence-transformers `{pooling_mode}`) |
| max_length | {settings.max_length} tokens |
| similarity | cosine |

Prompts (`model.encode(texts, prompt_name=...)`):

| name | text |
| --- | --- |
{prompt_lines}

## Same embeddings as bg2vec, and where they differ

For plain texts of at most {settings.doc_max_length} tokens, `SentenceTransformer.encode` gives bg2vec's
(and llm2vec's) embeddings to float tolerance. Three differences: a prompt is left out of the pooling by its
token count alone (a token that merges across the prompt's end may be counted differently); a longer text is truncated at {settings.max_length} tokens
here, while bg2vec first cuts it to {settings.doc_max_length} tokens at a word boundary; and the empty string
embeds as zeros here, as its BOS state in bg2vec.
"""


def _module(idx: int, path: str, name: str) -> dict[str, Any]:
    # The `sentence_transformers.models.*` names resolve in every sentence-transformers version since 2.x.
    return {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{name}"}


def _save_right_padded(tokenizer: Any, path: Path) -> None:
    """Save a copy of `tokenizer` that pads and truncates on the right when loaded; the encoder's keeps its sides."""
    tokenizer = copy.deepcopy(tokenizer)
    for name in ("padding_side", "truncation_side"):
        setattr(tokenizer, name, "right")
        tokenizer.init_kwargs[name] = "right"  # save_pretrained writes only the settings the tokenizer was made with
    tokenizer.save_pretrained(path)
    portable_tokenizer_files(path)


def _write_word_weights(folder: Path, encoder: Bg2Vec) -> None:
    """WordWeights keyed by token id (as strings, so no token text can collide): BOS 0, everything else 1."""
    size = max(len(encoder.tokenizer), encoder.model.get_input_embeddings().weight.shape[0])
    weights = torch.ones(size, 1)  # (V, 1)
    weights[encoder.tokenizer.bos_token_id] = 0.0
    _write_json(folder / "config.json", {
        "vocab": [str(i) for i in range(size)],
        "word_weights": {str(encoder.tokenizer.bos_token_id): 0.0},
        "unknown_word_weight": 1.0,
    })
    save_file({"emb_layer.weight": weights}, str(folder / "model.safetensors"))


def _write_json(file: Path, data: Any) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def _versions() -> dict[str, str]:
    import transformers

    versions = {"transformers": transformers.__version__, "pytorch": torch.__version__}
    try:
        import sentence_transformers

        versions["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    return versions
