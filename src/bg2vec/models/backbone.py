"""The one loader: a `ModelPlan` (models/layouts.py) becomes a decoder with its adapters, and its tokenizer.

Order, as in llm2vec's `from_pretrained`: load the base weights; grow the vocabulary if an MNTP run added a
mask token; apply each adapter of the chain and merge it (an adapter inside the base folder first); apply the
last adapter, merged only with `merge_peft`; switch attention to bidirectional and check it by running the
model. MNTP training (with the LM head), SimCSE training and the encoder all load through `load_model`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from ..errors import ConfigError, first_line
from .adapters import quiet_renames
from .bidirectional import enable_bidirectional, set_causal
from .layouts import ModelPlan, resolve_model

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}


def load_model(
    plan: ModelPlan,
    merge_peft: bool = False,
    bidirectional: bool = True,
    with_lm_head: bool = False,
    torch_dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
    model_config: PretrainedConfig | None = None,
    **model_kwargs: Any,
) -> PreTrainedModel | nn.Module:
    """The model `plan` describes: the decoder (a `PeftModel` while the last adapter is kept unmerged), or
    with `with_lm_head` the causal LM around it (every adapter merged). `model_kwargs` go to transformers.
    With `device`, the weights move there right after loading, so adapters merge and the bidirectional check
    runs there (on a GPU, milliseconds; FlashAttention-2 kernels run only there). `model_config`: the base's
    config as `read_model_config` gave it (a run reads config.json once), else read here.

    >>> decoder = load_model(resolve_model("outputs/simcse"), torch_dtype="bfloat16")
    """
    auto_class = AutoModelForCausalLM if with_lm_head else AutoModel
    weights = plan.weights
    model_kwargs.setdefault("trust_remote_code", False)  # never transformers' None, which asks on stdin
    dtype = _dtype(torch_dtype)  # a bad dtype is the dtype's error, not the model's
    try:
        config = model_config or AutoConfig.from_pretrained(weights, **_config_kwargs(model_kwargs))
        with _lm_head_expected(auto_class, config, with_lm_head):
            model = auto_class.from_pretrained(
                weights, config=config, dtype=dtype, attn_implementation=attn_implementation, **model_kwargs
            )
    except TypeError as exc:  # an unknown keyword reaches the model's __init__
        raise ConfigError(
            "model_kwargs", sorted(model_kwargs), "keyword arguments transformers' from_pretrained accepts", fix=str(exc)
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        check_custom_code(exc, plan)
        raise ConfigError(
            "model_name_or_path", plan.reference, "a decoder-only model transformers can load", fix=first_line(exc)
        ) from None
    except Exception as exc:
        check_damaged_file(exc, "model_name_or_path", plan.reference, weights)
        raise
    model.config.use_cache = False  # an encoder never decodes: no KV cache in any forward
    if device is not None and "device_map" not in model_kwargs:
        model.to(device)
    if plan.vocab_size:
        grow_vocabulary(model, plan.vocab_size)
    decoder = model.get_decoder() if with_lm_head else model
    for adapter in plan.merged:
        decoder = _apply_adapter(decoder, adapter, plan).merge_and_unload()
    if plan.kept is not None:
        decoder = _apply_adapter(decoder, plan.kept, plan)
        if merge_peft or with_lm_head:
            decoder = decoder.merge_and_unload()
    if bidirectional:
        enable_bidirectional(decoder)
    else:
        set_causal(decoder, True)
    if with_lm_head:
        model.set_decoder(decoder)
        return model
    return decoder


def load_decoder(
    base_model_name_or_path: str,
    peft_model_name_or_path: str | None = None,
    merge_peft: bool = False,
    enable_bidirectional_attention: bool = True,
    torch_dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    **model_kwargs: Any,
) -> tuple[nn.Module, Any]:
    """(decoder, tokenizer) for a reference of any layout and an optional adapter on top, as llm2vec loads.

    >>> decoder, tokenizer = load_decoder("INSAIT-Institute/BgGPT-7B-Instruct-v0.2", "mboyanov/bggpt-mntp", merge_peft=True)
    """
    plan = resolve_model(base_model_name_or_path, peft_model_name_or_path)
    decoder = load_model(
        plan, merge_peft, enable_bidirectional_attention, False, torch_dtype, attn_implementation, **model_kwargs
    )
    return decoder, load_tokenizer(plan)


def grow_vocabulary(model: PreTrainedModel, vocab_size: int) -> None:
    """Add embedding rows up to `vocab_size` (a new mask token), each set to the mean of the existing rows.

    The same rows at training and at every later load, so a saved run needs no copy of them. They are not
    trained: the mask token appears only in MNTP inputs, never in a text the encoder embeds.
    """
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    tables = [model.get_input_embeddings()]
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and output.weight is not tables[0].weight:
        tables.append(output)
    with torch.no_grad():
        for table in tables:
            table.weight[old:] = table.weight[:old].mean(dim=0, keepdim=True)  # (new, H) <- (1, H)


def _apply_adapter(decoder: nn.Module, adapter: str, plan: ModelPlan) -> nn.Module:
    from peft import PeftModel

    try:
        with quiet_renames():
            return PeftModel.from_pretrained(decoder, adapter)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as exc:
        check_damaged_file(exc, "peft_model_name_or_path", adapter, adapter)
        raise ConfigError(
            "peft_model_name_or_path",
            adapter,
            f"an adapter for {plan.base_reference or plan.weights!r}",
            fix=f"PEFT could not apply it: {first_line(exc)[:200]}",
        ) from None
    except Exception as exc:  # safetensors' own error type
        check_damaged_file(exc, "peft_model_name_or_path", adapter, adapter)
        raise


@contextmanager
def _lm_head_expected(auto_class: type, config: Any, with_lm_head: bool) -> Iterator[None]:
    """Loading the bare decoder from a causal LM's weights leaves its `lm_head.*` unused, as it should: say so to
    transformers, so it prints no load report for them (any other unexpected or missing key is still reported)."""
    model_class = auto_class._model_mapping.get(type(config), None) if not with_lm_head else None
    if model_class is None:
        yield
        return
    saved = model_class.__dict__.get("_keys_to_ignore_on_load_unexpected", _UNSET)
    model_class._keys_to_ignore_on_load_unexpected = set(model_class._keys_to_ignore_on_load_unexpected or ()) | {
        r"^lm_head\."
    }
    try:
        yield
    finally:
        if saved is _UNSET:
            del model_class._keys_to_ignore_on_load_unexpected
        else:
            model_class._keys_to_ignore_on_load_unexpected = saved


_UNSET = object()


def check_damaged_file(exc: BaseException, setting: str, reference: str, folder: str) -> None:
    """Raise a `ConfigError` if `exc` is safetensors refusing a file (truncated by a copy or a full disk)."""
    pickle_refused = type(exc).__name__ == "UnpicklingError" or "Weights only load failed" in str(exc)
    if type(exc).__name__ == "SafetensorError" or "incomplete metadata" in str(exc) or pickle_refused:
        raise ConfigError(
            setting, reference, "a model whose weight files are whole",
            fix=f"a weights file in {folder} is truncated, damaged or not weights ({first_line(exc)[:160]}): copy or "
            "download it again",
        ) from None


def check_custom_code(exc: BaseException, plan: ModelPlan) -> None:
    """Raise a `ConfigError` naming `trust_remote_code` if `exc` is transformers refusing a model's own Python
    code (a config with `auto_map`). bg2vec always passes an explicit `trust_remote_code` (False unless set), so
    transformers never stops to ask on the terminal, and a folder's code runs only when the user said so."""
    if "trust_remote_code" in str(exc):
        raise ConfigError(
            "trust_remote_code", False, "true to run the Python code that comes with the model",
            fix=f"{plan.reference} needs its own modelling code; only if you trust it, set trust_remote_code true "
            "(--trust-remote-code on the command line)",
        ) from None


def _config_kwargs(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: model_kwargs[k] for k in ("cache_dir", "trust_remote_code", "revision") if k in model_kwargs}


def _dtype(torch_dtype: str | torch.dtype) -> str | torch.dtype:
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype not in DTYPES:
        raise ConfigError("torch_dtype", torch_dtype, "one of " + ", ".join(DTYPES) + " or a torch.dtype")
    return DTYPES[torch_dtype]


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



def load_tokenizer(model: str | ModelPlan, cache_dir: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a model reference (any layout) or plan: the outermost folder that saved one, else the base's."""
    plan = model if isinstance(model, ModelPlan) else resolve_model(model)
    try:
        return AutoTokenizer.from_pretrained(
            plan.tokenizer, cache_dir=cache_dir, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        check_custom_code(exc, plan)
        raise ConfigError(
            "model_name_or_path", plan.reference, "a model with a loadable tokenizer", fix=first_line(exc)
        ) from None


def read_model_config(plan: ModelPlan, cache_dir: str | None = None, trust_remote_code: bool = False) -> PretrainedConfig:
    """The base weights' config.json, read once per run and handed to `check_causal_lm`, `position_limit` and
    `load_model`."""
    try:
        return AutoConfig.from_pretrained(plan.weights, cache_dir=cache_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        check_custom_code(exc, plan)
        raise ConfigError("model_name_or_path", plan.reference, "a model with a config.json", fix=first_line(exc)) from None


def check_causal_lm(model_config: PretrainedConfig, reference: str) -> None:
    """Fail fast (before data processing) unless the base is a decoder transformers loads as a causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(model_config, "auto_map", None):
        raise ConfigError(
            "model_name_or_path",
            reference,
            f"a decoder-only causal LM, not model_type '{model_config.model_type}'",
            fix="use a decoder such as Mistral, Llama, Qwen2 or Gemma 3",
        )


def position_limit(model_config: PretrainedConfig) -> int | None:
    """The longest input the model's positions allow (`max_position_embeddings`), or None if it sets none."""
    return getattr(model_config.get_text_config(), "max_position_embeddings", None)
