"""Bg2Vec: a decoder used as a text encoder. `from_pretrained` / `encode` / `save`, llm2vec's API and embeddings.

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
from .finite import check_finite
from .batching import plan_batches
from .devices import DevicePool, checked_device, embed_features
from .inputs import ChatFormat, InputBuilder, ModelInput, chat_format_for, collate, eos_text_for
from .choices import POOLING_MODES, check_dims



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


class Bg2Vec(nn.Module):
    """A decoder (bidirectional, adapters applied) + tokenizer + pooling: text in, one vector per text out."""

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
        self.tokenizer = tokenizer
        self.settings = settings or EncoderSettings()
        self.name_or_path = name_or_path or getattr(model.config, "name_or_path", None)
        self.chat_format = chat_format
        self.plan = plan  # how it was loaded: `save` records the model under an unmerged adapter
        self._pool: DevicePool | None = None  # worker processes of `encode(device=[...])`
        # llm2vec's choice; padding is masked, so this only has to be a token the model knows.
        tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

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
        """Load a model (Hub id, folder, .gguf, `pypi:` alias), optionally with an adapter, as llm2vec does.

        Reads bg2vec and llm2vec outputs alike: a base folder holding an adapter (merged first), an adapter
        folder alone (bg2vec's SimCSE output or an adapter-only `save`: its recorded base is loaded), and
        saved settings (`llm2vec_config.json`, `bg2vec_config.json`; the adapter's win over the base's).
        Arguments left at None take the saved value, else `EncoderSettings`' default. `model_kwargs`
        (`torch_dtype`, `attn_implementation`, `device_map`, ...) go to transformers; a model's own Python code
        runs only with `trust_remote_code=True` (default False: refused with an error, never a prompt).

        >>> encoder = Bg2Vec.from_pretrained("outputs/mntp", pooling_mode="mean", torch_dtype="bfloat16")
        """
        plan = resolve_model(base_model_name_or_path, peft_model_name_or_path)
        saved = dict(plan.settings)
        bidirectional = saved.pop("bidirectional", True)
        if enable_bidirectional is not None:
            bidirectional = enable_bidirectional
        explicit = dict(
            pooling_mode=pooling_mode, max_length=max_length, doc_max_length=doc_max_length, skip_instruction=skip_instruction
        )
        settings = EncoderSettings(**{**saved, **{k: v for k, v in explicit.items() if v is not None}})
        dtype = model_kwargs.pop("torch_dtype", model_kwargs.pop("dtype", "auto"))
        attn_implementation = model_kwargs.pop("attn_implementation", None)
        decoder = load_model(plan, merge_peft, bidirectional, False, dtype, attn_implementation, **model_kwargs)
        positions = getattr(decoder.config, "max_position_embeddings", None)
        if positions is not None and settings.max_length > positions:
            warnings.warn(
                f"max_length={settings.max_length} is more than the model's {positions} positions "
                f"(max_position_embeddings); encoding with max_length={positions}", stacklevel=2,
            )
            settings = replace(settings, max_length=positions, doc_max_length=min(settings.doc_max_length, positions))
        if "device_map" not in model_kwargs and torch.cuda.is_available():
            decoder.to("cuda")
        name = plan.base_reference or plan.weights
        tokenizer = load_tokenizer(plan, trust_remote_code=bool(model_kwargs.get("trust_remote_code", False)))
        return cls(decoder, tokenizer, settings, name, chat_format_for(list(plan.names) + [name]), plan)

    # --- encoding ------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings (the first shard under a device_map)."""
        return self.model.get_input_embeddings().weight.device

    def tokenize(self, sentences: list[Any]) -> dict[str, torch.Tensor]:
        """Model inputs for `sentences` in their order: input_ids, attention_mask, position_ids, pooling_mask."""
        return collate(self._inputs(sentences), self.tokenizer.pad_token_id, self.settings.skip_instruction)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, H) float32 embeddings of a `tokenize` batch, with gradients if enabled (for training)."""
        return self._embed(self.model, features)

    def encode(
        self,
        sentences: list[Any],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = False,
        device: str | torch.device | list[str | torch.device] | None = None,
        dim: int | None = None,
        max_batch_tokens: int | None = None,
    ) -> np.ndarray | torch.Tensor:
        """(N, H) float32 embeddings of `sentences` (texts or [instruction, text] pairs), in input order: a
        numpy array, or a CPU tensor with `convert_to_tensor=True` (or `convert_to_numpy=False`).

        Batches hold at most `batch_size` texts and, if set, `max_batch_tokens` padded tokens (rows × longest).
        `device`: None keeps the model where it is; a device moves it there; a list of devices encodes on all
        of them at once, a worker process each (kept for later calls until `stop_pool()`). The progress bar
        shows by default on a terminal.

        >>> encoder.encode(["Първи текст.", ["Retrieve similar sentences:", "Втори текст."]]).shape
        (2, 4096)
        """
        inputs = self._inputs(sentences)
        batches = plan_batches([len(item.input_ids) for item in inputs], batch_size, max_batch_tokens)
        show = show_progress_bar if show_progress_bar is not None else len(batches) > 1 and sys.stderr.isatty()
        devices = self._devices(device)
        was_training = self.model.training
        self.model.eval()  # no dropout while encoding, whatever mode a caller left the model in
        try:
            embeddings = check_finite(self._run(inputs, batches, devices, show), str(self.name_or_path or "the model"))  # (N, H)
        finally:
            self.model.train(was_training)
        if dim is not None:  # a Matryoshka prefix: the first `dim` values (normalized below if asked)
            embeddings = embeddings[:, : self._checked_dim(dim)]
        if normalize_embeddings:
            embeddings = F.normalize(embeddings, dim=-1)
        return embeddings if convert_to_tensor or not convert_to_numpy else embeddings.numpy()

    def stop_pool(self) -> None:
        """Stop the worker processes of `encode(device=[...])`; the model goes back where it was."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    def _checked_dim(self, dim: int) -> int:
        hidden = self.model.get_input_embeddings().weight.shape[1]
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= hidden:
            raise ConfigError("dim", dim, f"a whole number from 1 to the embedding size {hidden}")
        trained = self.settings.matryoshka_dims
        if trained and dim not in trained and dim != hidden:
            warnings.warn(f"dim={dim} is not one of the trained Matryoshka dims {trained}", stacklevel=3)
        return dim

    def _inputs(self, sentences: Any) -> list[ModelInput]:
        eos_text = None
        if self.settings.pooling_mode == "eos_token":
            vocab_size = self.model.get_input_embeddings().weight.shape[0]
            eos_text = eos_text_for(self.model.config.model_type, self.tokenizer, vocab_size)
        builder = InputBuilder(self.tokenizer, self.settings.max_length, self.settings.doc_max_length, eos_text, self.chat_format)
        return builder(sentences)

    def _devices(self, device: str | torch.device | list[str | torch.device] | None) -> list[torch.device]:
        if device is None:
            return [self.device]
        devices = [checked_device(d) for d in (device if isinstance(device, (list, tuple)) else [device])]
        if not devices:
            raise ConfigError("device", device, "a device, a non-empty list of devices, or None")
        if len(devices) == 1:
            self.stop_pool()
            self.model.to(devices[0])
        elif self._pool is None or self._pool.devices != [str(d) for d in devices]:
            self.stop_pool()
            self._pool = DevicePool(self.model, self.settings.pooling_mode, self.tokenizer.bos_token_id, devices)
        return devices

    def _run(self, inputs: list[ModelInput], batches: list[list[int]], devices: list[torch.device], show: bool) -> torch.Tensor:
        """Embed every batch (here, or on the pool's workers) and return the embeddings in input order."""
        progress = tqdm(total=len(inputs), desc="Encoding", unit="text", disable=not show)
        features = (
            (b, collate([inputs[i] for i in batch], self.tokenizer.pad_token_id, self.settings.skip_instruction))
            for b, batch in enumerate(batches)
        )
        results: dict[int, torch.Tensor] = {}
        try:
            if len(devices) == 1:
                for b, batch_features in features:
                    with torch.inference_mode():
                        results[b] = self._embed(self.model, {k: v.to(devices[0]) for k, v in batch_features.items()}).cpu()
                    progress.update(len(batches[b]))
            else:
                assert self._pool is not None
                try:
                    for b, embeddings in self._pool.embed(features):
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
        return embeddings

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
