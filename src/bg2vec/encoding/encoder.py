"""Bg2Vec: a decoder used as a text encoder. `from_pretrained` / `encode` / `save`, llm2vec's API and embeddings
(`from_plan`, `build_inputs`, `count_tokens`, `embed_inputs` and `encode_tensor` beyond it: docs/encoder.md).

    encoder = Bg2Vec.from_pretrained("INSAIT-Institute/BgGPT-7B-Instruct-v0.2", peft_model_name_or_path="mboyanov/bggpt-mntp")
    embeddings = encoder.encode(["София е столицата на България.", ["Намери подобни изречения:", "Пловдив е стар град."]])

The same model, adapter, pooling and inputs give llm2vec 0.2.3's embeddings (`inputs.py` spells out its input
rules). What differs is on purpose: texts are sorted by token count (llm2vec: by characters) and tokenized once;
position ids count from each row's first real token, so padding changes nothing (in llm2vec the RoPE offsets
cancel only up to rounding); pooling runs in float32; attention is bidirectional at every batch size and for
every architecture (`bidirectional.py`); batches are cut by a token budget as well as a row count
(`batching.py`). Several devices are used only when `encode(device=[...])` names them: one worker process per
device, started once and kept for later calls until `stop_pool()` (`devices.py`).
"""

from __future__ import annotations

import sys
import threading
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .model_card import write_model_card
from ..models.adapters import portable_adapter_config
from ..models.portable_files import portable_model_config, portable_tokenizer_files
from ..models.backbone import load_model, load_tokenizer, merged_state_dict
from ..models.layouts import ModelPlan, portable_reference, recorded_reference, resolve_model
from ..models.saved_outputs import describe, write_description
from ..models.bidirectional import is_bidirectional
from ..errors import ConfigError
from .batching import plan_batches
from .devices import DevicePool, checked_device, same_device
from .finite import check_finite
from .embedding import embed_features
from .inputs import ChatFormat, InputBuilder, ModelInput, chat_format_for, collate, eos_text_for, with_encoder_padding
from .choices import POOLING_MODES, check_dims

# Fast tokenizers keep their truncation setting in shared state, changed by calls that truncate: calls from
# several threads at once can fail ("Already borrowed"), so tokenizing takes turns (the model runs in parallel).
_TOKENIZER_LOCK = threading.Lock()
_POOL_LOCK = threading.RLock()  # a worker pool serves one encode call at a time (one queue of batches)


@dataclass(frozen=True)
class EncoderSettings:
    """How texts become embeddings. The defaults are llm2vec's; a saved encoder keeps its own."""

    pooling_mode: str = "mean"  # one of POOLING_MODES
    max_length: int = 512  # tokens of model input (special tokens + instruction + text)
    doc_max_length: int = 400  # a longer text is first cut by whole words to this many tokens
    skip_instruction: bool = True  # pool only the text's own tokens: no BOS, no instruction
    matryoshka_dims: list[int] | None = None  # prefixes trained to stand alone (encode(dim=D) keeps the first D)

    def __post_init__(self) -> None:
        if self.pooling_mode not in POOLING_MODES:
            raise ConfigError("pooling_mode", self.pooling_mode, "one of " + ", ".join(POOLING_MODES))
        for name in ("max_length", "doc_max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, value, "a positive whole number of tokens")
        if not isinstance(self.skip_instruction, bool):
            raise ConfigError("skip_instruction", self.skip_instruction, "true or false")
        if self.matryoshka_dims is not None:
            check_dims(self.matryoshka_dims)

    def within(self, positions: int | None) -> EncoderSettings:
        """These settings with max_length (and doc_max_length) capped at a model's `positions`
        (max_position_embeddings; None: no limit). Loading and in-training scoring both cap this way."""
        if positions is None or self.max_length <= positions:
            return self
        return replace(self, max_length=positions, doc_max_length=min(self.doc_max_length, positions))


def settings_for(plan: ModelPlan, pooling_mode: str | None = None, max_length: int | None = None,
                 doc_max_length: int | None = None, skip_instruction: bool | None = None) -> EncoderSettings:
    """The settings `from_plan` encodes with (before the model's position limit): those given, else the plan's
    saved ones, else the defaults. Known without loading the model (what a corpus manifest records)."""
    saved = {k: v for k, v in plan.settings.items() if k != "bidirectional"}
    explicit = dict(pooling_mode=pooling_mode, max_length=max_length, doc_max_length=doc_max_length, skip_instruction=skip_instruction)
    return EncoderSettings(**{**saved, **{k: v for k, v in explicit.items() if v is not None}})


class Bg2Vec(nn.Module):
    """A decoder (bidirectional, adapters applied) + tokenizer + pooling: text in, one vector per text out.

    Safe to share between threads: encoding reads the model and never changes its mode or device. The
    constructor puts the model in eval mode; whoever trains it switches modes around encoding themselves.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        settings: EncoderSettings | None = None,
        name_or_path: str | None = None,
        chat_format: ChatFormat | None = None,
        plan: ModelPlan | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = with_encoder_padding(tokenizer)
        self.settings = settings or EncoderSettings()
        self.name_or_path = name_or_path or getattr(model.config, "name_or_path", None)
        self.chat_format = chat_format
        self.plan = plan  # how it was loaded: `save` records the model under an unmerged adapter
        self._pool: DevicePool | None = None  # worker processes of `encode(device=[...])`

    @classmethod
    def from_pretrained(
        cls,
        base_model_name_or_path: str,
        peft_model_name_or_path: str | None = None,
        merge_peft: bool = False,
        enable_bidirectional: bool | None = None,
        pooling_mode: str | None = None,
        max_length: int | None = None,
        doc_max_length: int | None = None,
        skip_instruction: bool | None = None,
        **model_kwargs: Any,
    ) -> Bg2Vec:
        """Load a model (Hub id, folder, .gguf, `pypi:` alias), optionally with an adapter, as llm2vec does:
        `resolve_model` + `from_plan` (which says what the other arguments do).

        Reads bg2vec and llm2vec outputs alike: a base folder holding an adapter (merged first), an adapter
        folder alone (bg2vec's SimCSE output or an adapter-only `save`: its recorded base is loaded), and
        saved settings (`llm2vec_config.json`, `bg2vec_config.json`; the adapter's win over the base's).

        >>> encoder = Bg2Vec.from_pretrained("outputs/mntp", pooling_mode="mean", torch_dtype="bfloat16")
        """
        plan = resolve_model(base_model_name_or_path, peft_model_name_or_path)
        return cls.from_plan(
            plan, merge_peft, enable_bidirectional, pooling_mode, max_length, doc_max_length, skip_instruction, **model_kwargs
        )

    @classmethod
    def from_plan(
        cls,
        plan: ModelPlan,
        merge_peft: bool = False,
        enable_bidirectional: bool | None = None,
        pooling_mode: str | None = None,
        max_length: int | None = None,
        doc_max_length: int | None = None,
        skip_instruction: bool | None = None,
        **model_kwargs: Any,
    ) -> Bg2Vec:
        """Load the encoder a resolved `ModelPlan` describes, without looking at the reference again: resolve
        once (`resolve_model`), then hand the plan (a small picklable value) to each worker or loader.

        Arguments left at None take the plan's saved value, else `EncoderSettings`' default. `model_kwargs`
        (`torch_dtype`, `attn_implementation`, `device_map`, ...) go to transformers; without a `device_map`
        the model goes to the GPU if there is one. A model's own Python code runs only with
        `trust_remote_code=True` (default False: refused with one error, never a prompt).

        >>> plan = resolve_model("outputs/simcse")
        >>> encoder = Bg2Vec.from_plan(plan, torch_dtype="bfloat16")
        """
        if not isinstance(plan, ModelPlan):
            raise ConfigError("plan", plan, "a ModelPlan (from bg2vec.models.layouts.resolve_model)",
                              fix="for a model reference use Bg2Vec.from_pretrained(reference)")
        bidirectional = plan.settings.get("bidirectional", True) if enable_bidirectional is None else enable_bidirectional
        settings = settings_for(plan, pooling_mode, max_length, doc_max_length, skip_instruction)
        dtype = model_kwargs.pop("torch_dtype", model_kwargs.pop("dtype", "auto"))
        attn_implementation = model_kwargs.pop("attn_implementation", None)
        decoder = load_model(plan, merge_peft, bidirectional, False, dtype, attn_implementation, **model_kwargs)
        positions = getattr(decoder.config, "max_position_embeddings", None)
        if settings.within(positions) != settings:
            warnings.warn(
                f"max_length={settings.max_length} is more than the model's {positions} positions "
                f"(max_position_embeddings); encoding with max_length={positions}", stacklevel=3,
            )
            settings = settings.within(positions)
        if "device_map" not in model_kwargs and torch.cuda.is_available():
            decoder.to("cuda")
        trust = bool(model_kwargs.get("trust_remote_code", False))  # never transformers' None (a prompt on stdin)
        tokenizer = with_encoder_padding(load_tokenizer(plan, trust_remote_code=trust), owned=True)  # loaded here: no copy needed
        name = plan.base_reference or plan.weights
        return cls(decoder, tokenizer, settings, name, chat_format_for(list(plan.names) + [name]), plan)

    # --- encoding ------------------------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        """The embedding size H (a Matryoshka prefix keeps fewer)."""
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def vocab_size(self) -> int:
        """Token ids the model has rows for."""
        return int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings (the first shard under a device_map)."""
        return self.model.get_input_embeddings().weight.device

    def build_inputs(self, sentences: list[Any]) -> list[ModelInput]:
        """One `ModelInput` per sentence (a text or an [instruction, text] pair), in order: the token ids the
        model sees, after the cuts (`len(item.input_ids)` is its token count), and how many of them are the text's.

        >>> [len(item.input_ids) for item in encoder.build_inputs(["Здравей, свят!"])]
        [6]
        """
        eos_text = None
        if self.settings.pooling_mode == "eos_token":
            vocab_size = self.model.get_input_embeddings().weight.shape[0]
            eos_text = eos_text_for(self.model.config.model_type, self.tokenizer, vocab_size)
        with _TOKENIZER_LOCK:
            builder = InputBuilder(self.tokenizer, self.settings.max_length, self.settings.doc_max_length, eos_text, self.chat_format)
            return builder(sentences)

    def count_tokens(self, sentences: list[Any]) -> list[int]:
        """How many tokens the model sees for each sentence (special tokens and instruction included, after the
        cuts): what `encode` costs, and what a server reports as usage.

        >>> encoder.count_tokens(["Здравей, свят!", ["Retrieve passages:", "Пловдив"]])
        [6, 9]
        """
        return [len(item.input_ids) for item in self.build_inputs(sentences)]

    def tokenize(self, sentences: list[Any]) -> dict[str, torch.Tensor]:
        """One padded batch of `sentences` in their order: input_ids, attention_mask, position_ids, pooling_mask."""
        return collate(self.build_inputs(sentences), self.tokenizer.pad_token_id, self.settings.skip_instruction)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, H) float32 embeddings of a `tokenize` batch, with gradients if enabled (for training)."""
        return self._embed(self.model, features)

    def embed_inputs(self, inputs: list[ModelInput], batch_size: int = 32, max_batch_tokens: int | None = None) -> torch.Tensor:
        """(N, H) float32 CPU embeddings of `build_inputs` results, in input order, computed where the model is.

        Inputs are sorted by length and cut into batches of at most `batch_size` rows and `max_batch_tokens`
        padded tokens; an input's embedding does not depend on what else is in the list (up to rounding), so
        inputs of several callers can be merged into one call and split again.

        >>> encoder.embed_inputs(encoder.build_inputs(["a", "b"])).shape
        torch.Size([2, 4096])
        """
        return self._embed_inputs(inputs, batch_size, max_batch_tokens, None, False)

    def encode(
        self,
        sentences: list[Any],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        device: str | torch.device | list[str | torch.device] | None = None,
        dim: int | None = None,
        max_batch_tokens: int | None = None,
    ) -> np.ndarray:
        """(N, H) float32 numpy embeddings of `sentences` (texts or [instruction, text] pairs), in input order:
        `build_inputs` + `embed_inputs`, then the first `dim` values (a Matryoshka prefix) and normalized if asked.

        Batches hold at most `batch_size` texts and, if set, `max_batch_tokens` padded tokens (rows × longest).
        `device`: None (or the model's device) encodes where the model is; a list of devices encodes on all of
        them at once, a worker process each (kept for later calls until `stop_pool()`). To encode on another
        single device, move the encoder first: `encoder.to(device)`. The progress bar shows by default on a
        terminal. `encode_tensor` takes the same arguments and returns a CPU tensor.

        >>> encoder.encode(["Първи текст.", ["Retrieve similar sentences:", "Втори текст."]]).shape
        (2, 4096)
        """
        if dim is not None:
            dim = self._checked_dim(dim)
        inputs = self.build_inputs(sentences)
        embeddings = self._embed_inputs(inputs, batch_size, max_batch_tokens, device, show_progress_bar)  # (N, H)
        if dim is not None:  # a Matryoshka prefix: the first `dim` values (normalized below if asked)
            embeddings = embeddings[:, :dim]
        if normalize_embeddings:
            embeddings = F.normalize(embeddings, dim=-1)
        return embeddings.numpy()

    def encode_tensor(self, sentences: list[Any], **options: Any) -> torch.Tensor:
        """`encode(sentences, **options)` as an (N, H) float32 CPU torch.Tensor (the same memory, not a copy)."""
        return torch.from_numpy(self.encode(sentences, **options))

    def stop_pool(self) -> None:
        """Stop the worker processes of `encode(device=[...])`; the model goes back where it was."""
        with _POOL_LOCK:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.close()

    def _checked_dim(self, dim: int) -> int:
        hidden = self.model.get_input_embeddings().weight.shape[1]
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= hidden:
            raise ConfigError("dim", dim, f"a whole number from 1 to the embedding size {hidden}")
        trained = self.settings.matryoshka_dims
        if trained and dim not in trained and dim != hidden:
            warnings.warn(f"dim={dim} is not one of the trained Matryoshka dims {trained}", stacklevel=4)
        return dim

    def _embed_inputs(
        self, inputs: list[ModelInput], batch_size: int, max_batch_tokens: int | None,
        device: str | torch.device | list[str | torch.device] | None, show: bool | None,
    ) -> torch.Tensor:
        """Embed `inputs` here (the model's device) or on the pool's workers; (N, H) in input order."""
        if self.model.training:
            raise ConfigError(
                "model.training", True, "a model in eval mode (encoding never switches modes, so callers sharing "
                "an encoder cannot see each other's; in training mode dropout makes embeddings random)",
                fix="call encoder.eval() before encoding (and model.train() after, to go on training)",
            )
        devices = self._devices(device)
        batches = plan_batches([len(item.input_ids) for item in inputs], batch_size, max_batch_tokens)
        if not batches:
            return torch.empty((0, self.model.get_input_embeddings().weight.shape[1]))  # (0, H)
        show = show if show is not None else len(batches) > 1 and sys.stderr.isatty()
        features = (
            (b, collate([inputs[i] for i in batch], self.tokenizer.pad_token_id, self.settings.skip_instruction))
            for b, batch in enumerate(batches)
        )
        results: dict[int, torch.Tensor] = {}
        progress = tqdm(total=len(inputs), desc="Encoding", unit="text", disable=not show)
        try:
            if devices is None:
                with torch.inference_mode():
                    for b, batch_features in features:
                        results[b] = self._embed(self.model, {k: v.to(self.device) for k, v in batch_features.items()}).cpu()
                        progress.update(len(batches[b]))
            else:
                with _POOL_LOCK:  # one call at a time feeds the workers' common queue
                    pool = self._started_pool(devices)
                    try:
                        for b, embeddings in pool.embed(features):
                            results[b] = embeddings
                            progress.update(len(batches[b]))
                    except BaseException:
                        self.stop_pool()  # batches may still be in flight: start afresh next time
                        raise
        finally:
            progress.close()
        sorted_embeddings = torch.cat([results[b] for b in range(len(batches))])  # (N, H) in batch order
        embeddings = torch.empty_like(sorted_embeddings)
        embeddings[torch.tensor([i for batch in batches for i in batch])] = sorted_embeddings
        return check_finite(embeddings, str(self.name_or_path or "the model"))  # every caller: encode, server, corpus

    def _devices(self, device: str | torch.device | list[str | torch.device] | None) -> list[torch.device] | None:
        """None to encode in this process (where the model is), else the devices of a worker pool."""
        if device is None:
            return None
        devices = [checked_device(d) for d in (device if isinstance(device, (list, tuple)) else [device])]
        if not devices:
            raise ConfigError("device", device, "a device, a non-empty list of devices, or None")
        if len(devices) > 1:
            return devices
        if not same_device(devices[0], self.device):
            raise ConfigError(
                "device", str(device), f"None or the model's device ({self.device}), or a list of several devices",
                fix=f"move the encoder first: encoder.to({str(devices[0])!r}) (encode never moves the model, so "
                "callers sharing it cannot move it under each other)",
            )
        return None

    def _started_pool(self, devices: list[torch.device]) -> DevicePool:
        if self._pool is None or self._pool.devices != [str(d) for d in devices]:
            self.stop_pool()
            self._pool = DevicePool(self.model, self.settings.pooling_mode, self.tokenizer.bos_token_id, devices)
        return self._pool

    def _embed(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return embed_features(model, features, self.settings.pooling_mode, self.tokenizer.bos_token_id)

    # --- saving --------------------------------------------------------------------------------------------

    def save(self, output_path: str | Path, merge_before_save: bool = False) -> None:
        """Write the encoder so `Bg2Vec.from_pretrained(output_path)` rebuilds it.

        An unmerged adapter is saved alone (with the base recorded in bg2vec_config.json, and no config.json,
        so the folder is never taken for a base with an embedded adapter); otherwise, or with
        `merge_before_save`, the full weights with the adapter merged (the encoder in memory is unchanged).
        The settings go to bg2vec_config.json and to llm2vec_config.json, which llm2vec reads.

        >>> encoder.save("outputs/bg2vec-encoder", merge_before_save=True)
        """
        from peft import PeftModel

        path = Path(output_path)
        path.mkdir(parents=True, exist_ok=True)
        adapter_only = isinstance(self.model, PeftModel) and not merge_before_save
        if adapter_only:
            self.model.save_pretrained(path)
        else:
            save_merged_model(self.model, path)
        self.tokenizer.save_pretrained(path)
        portable_tokenizer_files(path)
        description = self.description(adapter_only, path)
        if adapter_only:
            recorded = recorded_reference(description["base_model_name_or_path"], path)
            portable_adapter_config(path, portable_reference(recorded))  # absolute where local
        write_description(path, description, llm2vec=True)
        write_model_card(path)  # from the file just written

    def description(self, adapter_only: bool = False, output_path: str | Path = ".") -> dict[str, Any]:
        """What bg2vec_config.json says about this encoder: versions, base model, attention, pooling. With
        `adapter_only`, the model under the adapter (as in a SimCSE output: base and MNTP adapter), recorded
        relative to `output_path` where local."""
        model, adapter = (self.plan.under if self.plan and self.plan.under else None) or (self.name_or_path, None)
        if not adapter_only:
            model, adapter = self.name_or_path, None
        return describe(
            "encoder",
            base_model_name_or_path=portable_reference(model, output_path) if model else None,
            mntp_adapter=portable_reference(adapter, output_path) if adapter else None,
            adapter="separate" if adapter_only else None,
            language=list(self.plan.language) if self.plan and self.plan.language else None,
            bidirectional=is_bidirectional(self.model),
            **asdict(self.settings),
            chat_format=asdict(self.chat_format) if self.chat_format else None,
        )


def save_merged_model(model: nn.Module, path: Path) -> None:
    """The decoder's full weights and config.json (is_causal included), any adapter merged, into `path`."""
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    base.save_pretrained(path, state_dict=merged_state_dict(model))
    portable_model_config(path)
