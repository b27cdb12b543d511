"""Unsupervised SimCSE (Gao et al. 2021, arXiv 2104.08821), LLM2Vec's last training step (arXiv 2404.05961, 2.3).

Every text goes through the encoder twice. Dropout (the attention dropout, set to `simcse_dropout`, and the
LoRA dropout) makes the two embeddings differ slightly; the model learns to pick a text's other view among
the views of all other texts in the batch (the in-batch negatives), with InfoNCE (objectives/contrastive.py).

- Several processes (torchrun / accelerate): embeddings are gathered across processes **with gradients**, so
  the negatives are the global batch and the loss equals the single-process loss on that batch.
- `mini_batch_size`: the global batch is embedded in mini-batches (objectives/gradient_cache.py), so batch 128
  fits where back-propagating through 256 sequences at once does not.
- Pooling covers the text's own tokens only: never padding, never BOS (llm2vec's SimCSE collator mean-pools
  over both).

What `bg2vec simcse` writes (the folder describes itself; `Bg2Vec.from_pretrained(folder)` reads it)::

    adapter_model.safetensors, adapter_config.json   the SimCSE LoRA, PEFT format, on the decoder with the
                                                     MNTP adapter already merged (llm2vec's key layout)
    tokenizer files                                  with the pad token the run used
    bg2vec_config.json                               {"format_version": 1, "stage": "simcse",
                                                      "base_model_name_or_path": the base as given,
                                                      "mntp_adapter": absolute folder or Hub id, or null,
                                                      "pooling_mode", "max_length", "skip_instruction": true,
                                                      "bidirectional", "torch_dtype", versions, training_config}
    metrics.json, simcse_curves.png                  the run table, log history, eval figures, pair similarities

To rebuild the encoder: load the base, apply `mntp_adapter` and merge it, apply this folder's adapter, switch
attention to bidirectional, pool `pooling_mode` over the text tokens. llm2vec's two-step form gives the same
model: `backbone.load_decoder(MNTP_OUTPUT_DIR, SIMCSE_OUTPUT_DIR)`. There is deliberately no config.json here,
so this folder is never mistaken for a "base with an embedded adapter" (which would skip the MNTP merge).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..encoding.embedding import embed_features
from .contrastive import alignment, info_nce_loss, uniformity

# --- the views ----------------------------------------------------------------------------------------------


def two_views(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch twice over, (B, T) → (2B, T): rows i and B+i are the two dropout views of text i."""
    return {name: torch.cat([value, value]) for name, value in inputs.items()}


# --- the model ----------------------------------------------------------------------------------------------


def prepare_tokenizer_for_pooling(tokenizer, pooling_mode: str) -> None:
    """Pad with EOS when the tokenizer has no pad token (llm2vec's choice); check what the pooling needs."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if pooling_mode == "eos_token" and tokenizer.eos_token_id is None:
        raise ConfigError("pooling_mode", pooling_mode, "a tokenizer with an EOS token", fix="use mean pooling")
    if pooling_mode == "bos_token" and tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id]:
        raise ConfigError(
            "pooling_mode", pooling_mode, "a tokenizer that starts every text with BOS", fix="use mean pooling"
        )


def set_attention_dropout(decoder: nn.Module, p: float) -> None:
    """Dropout `p` on the attention weights of every layer (and in the config, so it is recorded).

    transformers' attention modules copy `config.attention_dropout` at construction, so changing the config of
    a loaded model is not enough; this sets both. Raises `ConfigError` if no module applies attention dropout.
    """
    configs = [decoder.config, getattr(decoder.config, "text_config", None)]
    for config in filter(None, configs):
        config.attention_dropout = p
    modules = [m for m in decoder.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
    if p > 0 and not modules:
        raise ConfigError(
            "simcse_dropout",
            p,
            f"a model whose attention applies dropout; model_type '{decoder.config.model_type}' has none",
            fix="use a Mistral, Llama, Qwen2 or Gemma decoder",
        )
    for module in modules:
        module.attention_dropout = p


class SimCSEModel(nn.Module):
    """The encoder being trained: a (LoRA-wrapped) bidirectional decoder and pooling over the text tokens.

    `forward` maps a padded batch to one float32 embedding per row, (B, H). In train mode dropout is active,
    so the same text gives a different embedding each time; in eval mode it is deterministic.
    """

    def __init__(self, decoder: nn.Module, pooling_mode: str, bos_token_id: int | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.pooling_mode = pooling_mode
        self.bos_token_id = bos_token_id

    @property
    def config(self):
        return self.decoder.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pooling_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # position_ids: given for left-padded batches built as the encoder builds them (supervised training)
        features = {"input_ids": input_ids, "attention_mask": attention_mask, "pooling_mask": pooling_mask,
                    "position_ids": position_ids}  # (B, T) each
        return embed_features(self.decoder, features, self.pooling_mode, self.bos_token_id)  # (B, H), as encode's

    def save_pretrained(self, output_dir: str | Path, state_dict: dict | None = None) -> None:
        """Write the SimCSE LoRA adapter (PEFT format); from `state_dict` (this model's keys) when the Trainer
        gathered one (FSDP, DeepSpeed ZeRO-3)."""
        from .mntp import submodule_state

        self.decoder.save_pretrained(str(output_dir), state_dict=submodule_state(state_dict, "decoder"))

    def load_trained_weights(self, folder: str | Path) -> None:
        """Load the adapter written by `save_pretrained`: used on resume."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = load_file(str(Path(folder) / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.decoder, adapter)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"checkpoint {folder} has adapter keys this model lacks: {result.unexpected_keys[:3]}")


@torch.no_grad()
def held_out_embeddings(
    model: SimCSEModel, batches: Iterable[dict[str, torch.Tensor]], seed: int, gather: Callable = lambda t: t
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every row: the deterministic embedding (eval mode) and two dropout views (train mode), (N, H) each.

    The dropout masks come from `seed`, so every evaluation sees the same ones, and the training RNG is left
    untouched (resuming reproduces an uninterrupted run). `gather` collects rows from all processes.
    """
    device = next(model.parameters()).device
    accelerators = [device] if device.type != "cpu" else []
    was_training = model.training
    plain, anchors, positives = [], [], []
    with torch.random.fork_rng(devices=accelerators, device_type=device.type if accelerators else "cuda"):
        torch.manual_seed(seed)
        for batch in batches:
            batch = {name: value.to(device) for name, value in batch.items()}
            model.eval()
            plain.append(gather(model(**batch)))  # (b, H)
            model.train()
            first, second = model(**two_views(batch)).chunk(2)  # (b, H) each
            anchors.append(gather(first))
            positives.append(gather(second))
    model.train(was_training)
    return torch.cat(plain), torch.cat(anchors), torch.cat(positives)


@torch.no_grad()
def pair_similarities(
    model: SimCSEModel, first: list[dict], second: list[dict], collate: Callable, batch_size: int
) -> list[float]:
    """Cosine similarity of each (first[i], second[i]) pair of tokenized texts, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def embed(examples: list[dict]) -> torch.Tensor:  # (N, H)
        batches = (collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size))
        return torch.cat([model(**{k: v.to(device) for k, v in batch.items()}) for batch in batches])

    similarities = F.cosine_similarity(embed(first), embed(second), dim=-1)  # (N,)
    model.train(was_training)
    return similarities.tolist()


def evaluation_figures(
    plain: torch.Tensor, anchors: torch.Tensor, positives: torch.Tensor, batch_size: int, scale: float
) -> dict[str, Any]:
    """Held-out figures: the contrastive loss (in batches of the training batch size, so it compares with the
    training loss), alignment of the two dropout views, uniformity of the deterministic embeddings."""
    losses, weights = [], []
    for start in range(0, anchors.shape[0], batch_size):
        a, p = anchors[start : start + batch_size], positives[start : start + batch_size]  # (b, H) each
        if a.shape[0] > 1:  # a batch of one has no negatives
            losses.append(info_nce_loss(a, p, scale).item() * a.shape[0])
            weights.append(a.shape[0])
    return {
        "loss": sum(losses) / sum(weights) if weights else float("nan"),
        "alignment": alignment(anchors, positives),
        "uniformity": uniformity(plain),
    }
