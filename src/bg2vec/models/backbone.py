"""Load a decoder (no LM head) with the adapters earlier steps trained, as llm2vec's `from_pretrained` does.

Order, as in llm2vec: (1) if the base folder itself holds an adapter (a bg2vec/llm2vec MNTP output, or
McGill's `*-mntp` repos), load the weights of the model that adapter was trained on, apply it and merge it;
(2) then apply `peft_model_name_or_path` on top, merged if `merge_peft`; (3) switch attention to
bidirectional and check it. Used by the SimCSE recipe and the encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .bidirectional import enable_bidirectional, set_causal
from ..errors import ConfigError, first_line
from .references import resolve_model_reference

ADAPTER_CONFIG_FILE = "adapter_config.json"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}


def adapter_base(adapter_path: str) -> str | None:
    """The `base_model_name_or_path` an adapter folder records, or None if it is not a local adapter."""
    config_file = Path(adapter_path) / ADAPTER_CONFIG_FILE
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")


def load_decoder(
    base_model_name_or_path: str,
    peft_model_name_or_path: str | None = None,
    merge_peft: bool = False,
    enable_bidirectional_attention: bool = True,
    torch_dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel | nn.Module, Any]:
    """(decoder, tokenizer): the inner decoder with adapters applied as the module docstring says.

    >>> decoder, tokenizer = load_decoder("INSAIT-Institute/BgGPT-7B-Instruct-v0.2", "mboyanov/bggpt-mntp", merge_peft=True)
    """
    from peft import PeftModel

    base_path = resolve_model_reference(base_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    config = AutoConfig.from_pretrained(base_path)
    weights_from = base_path
    embedded_adapter = adapter_base(base_path) if Path(base_path).is_dir() else None
    if embedded_adapter is not None and not _has_weights(base_path):
        weights_from = resolve_model_reference(embedded_adapter)
    try:
        decoder = AutoModel.from_pretrained(
            weights_from, config=config, dtype=_dtype(torch_dtype), attn_implementation=attn_implementation, **model_kwargs
        )
    except TypeError as exc:  # an unknown keyword reaches the model's __init__
        raise ConfigError(
            "model_kwargs", sorted(model_kwargs), "keyword arguments transformers' from_pretrained accepts", fix=str(exc)
        ) from None
    if embedded_adapter is not None:
        decoder = PeftModel.from_pretrained(decoder, base_path).merge_and_unload()
    if peft_model_name_or_path is not None:
        adapter_path = resolve_adapter_reference(peft_model_name_or_path)
        try:
            decoder = PeftModel.from_pretrained(decoder, adapter_path)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ConfigError(
                "peft_model_name_or_path",
                peft_model_name_or_path,
                f"an adapter trained on {base_model_name_or_path}",
                fix=f"it was trained on {adapter_base(adapter_path) or 'another model'}: "
                f"{str(exc).strip().splitlines()[0][:200]}",
            ) from None
        if merge_peft:
            decoder = decoder.merge_and_unload()
    if enable_bidirectional_attention:
        enable_bidirectional(decoder)
    else:
        set_causal(decoder, True)
    return decoder, tokenizer


def resolve_adapter_reference(reference: str) -> str:
    """A local adapter folder (checked) or a Hub id, unchanged."""
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / ADAPTER_CONFIG_FILE).is_file():
            raise ConfigError("peft_model_name_or_path", reference, "a folder with adapter_config.json")
        return str(path.resolve())
    if reference.startswith(("/", "./", "../", "~")):
        raise ConfigError("peft_model_name_or_path", reference, "an existing adapter folder or a Hub id")
    return reference


def _dtype(torch_dtype: str | torch.dtype) -> str | torch.dtype:
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype not in DTYPES:
        raise ConfigError("torch_dtype", torch_dtype, "one of " + ", ".join(DTYPES) + " or a torch.dtype")
    return DTYPES[torch_dtype]


def _has_weights(folder: str) -> bool:
    return any(Path(folder).glob("model*.safetensors")) or any(Path(folder).glob("pytorch_model*.bin"))


def merged_state_dict(decoder: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of `decoder` with its active LoRA adapters merged, under the plain model's key names;
    the model itself is left unchanged (unlike `merge_and_unload`), so an encoder can be saved merged and
    keep encoding with its adapter.

    >>> decoder.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(decoder))
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not isinstance(decoder, PeftModel):
        return decoder.state_dict()
    base = decoder.get_base_model()
    state = {key.replace(".base_layer.", "."): value for key, value in base.state_dict().items() if ".lora_" not in key}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            state[f"{name}.weight"] = (weight + delta).to(weight.dtype)
    return state


def load_tokenizer(model_reference: str, cache_dir: str | None = None, trust_remote_code: bool = False):
    """The model's tokenizer, from any reference `resolve_model_reference` understands."""
    path = resolve_model_reference(model_reference)
    try:
        return AutoTokenizer.from_pretrained(path, cache_dir=cache_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            "model_name_or_path", model_reference, "a model with a loadable tokenizer", fix=first_line(exc)
        ) from None


def check_causal_lm(model_reference: str, cache_dir: str | None = None, trust_remote_code: bool = False) -> None:
    """Fail fast (before data processing) if the reference is not a decoder transformers can load as a causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = resolve_model_reference(model_reference)
    try:
        config = AutoConfig.from_pretrained(path, cache_dir=cache_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError("model_name_or_path", model_reference, "a model with a config.json", fix=first_line(exc)) from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "auto_map", None):
        raise ConfigError(
            "model_name_or_path",
            model_reference,
            f"a decoder-only causal LM, not model_type '{config.model_type}'",
            fix="use a decoder such as Mistral, Llama, Qwen2 or Gemma 3",
        )


def load_causal_lm(
    model_reference: str,
    torch_dtype: str = "auto",
    attn_implementation: str | None = None,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A decoder with its LM head, in `torch_dtype`, from a Hub id, folder, .gguf file or pypi: alias."""
    path = resolve_model_reference(model_reference)
    try:
        return AutoModelForCausalLM.from_pretrained(
            path,
            dtype=DTYPES[torch_dtype],
            attn_implementation=attn_implementation,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            "model_name_or_path", model_reference, "a decoder-only causal LM transformers can load", fix=first_line(exc)
        ) from None
