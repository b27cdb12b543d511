"""Masked next token prediction (MNTP), LLM2Vec's first training step (arXiv 2404.05961, section 2.2).

Tokens are masked as in MLM, but a decoder's output at position i was trained to predict token i+1, so the
masked token at position i is predicted from the output at position **i-1**. llm2vec gets this shift
implicitly from the causal-LM loss; here it is written out. Training computes the loss a chunk of positions
at a time and recomputes each chunk's logits in the backward pass (`chunked_mntp_loss`), so at most one chunk of
logits is ever alive, whatever the masking rate (with vocabularies of 38k-262k entries, full-sequence logits
would dominate memory); nothing in it waits on the device (no `.item()`, no data-dependent shapes).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from .masking import IGNORE_INDEX

LM_HEAD_FILE = "lm_head.safetensors"
CHUNK_ROWS = 256  # positions whose logits exist at once: 256 x 38k float32 = 39 MB (full 32 x 512: 2.5 GB)


def shift_for_next_token(hidden_states: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair the output at position i-1 with the label at position i.

    hidden_states (B, T, H), labels (B, T) → (B, T-1, H) predictors and (B, T-1) targets.
    """
    return hidden_states[:, :-1, :], labels[:, 1:]


def lm_logits(lm_head: nn.Module, hidden: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
    """LM-head logits in float32, with the final soft-capping some families (Gemma 2) apply."""
    logits = lm_head(hidden).float()  # (N, V)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def mntp_logits_at_labels(
    hidden_states: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module, softcap: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits only where a (shifted) label exists: (N, V) logits and their (N,) target ids."""
    predictors, targets = shift_for_next_token(hidden_states, labels)  # (B, T-1, H), (B, T-1)
    selected = targets != IGNORE_INDEX  # (B, T-1)
    return lm_logits(lm_head, predictors[selected], softcap), targets[selected]  # (N, V), (N,)


def mntp_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions; 0 (with a graph) when a batch has none."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets)


def chunked_mntp_loss(
    hidden_states: torch.Tensor,
    labels: torch.Tensor,
    lm_head: nn.Module,
    softcap: float | None = None,
    chunk_rows: int = CHUNK_ROWS,
    with_predictions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The MNTP loss (mean cross-entropy over labelled positions, i-1 shift), `chunk_rows` positions at a time.

    hidden_states (B, T, H), labels (B, T) → the loss, and with `with_predictions` the argmax ids (B, T-1)
    (-100 where unlabelled). With gradients on, each chunk's logits are recomputed in the backward pass
    (activation checkpointing), so memory holds one chunk of logits, not (B, T, V). Equal to
    `mntp_loss(*mntp_logits_at_labels(...))` in value and gradients (tested).
    """
    predictors, targets = shift_for_next_token(hidden_states, labels)  # (B, T-1, H), (B, T-1)
    rows = predictors.reshape(-1, predictors.shape[-1])  # (B(T-1), H)
    ids = targets.reshape(-1)  # (B(T-1),)
    chunk_loss = partial(_chunk_cross_entropy, lm_head=lm_head, softcap=softcap)
    recompute = torch.is_grad_enabled() and not with_predictions
    total = rows.new_zeros((), dtype=torch.float32)
    predicted = []
    for start in range(0, rows.shape[0], chunk_rows):
        chunk, chunk_ids = rows[start : start + chunk_rows], ids[start : start + chunk_rows]  # (C, H), (C,)
        if recompute:
            total = total + checkpoint(chunk_loss, chunk, chunk_ids, use_reentrant=False)
        else:
            logits = lm_logits(lm_head, chunk, softcap)  # (C, V)
            total = total + F.cross_entropy(logits, chunk_ids, ignore_index=IGNORE_INDEX, reduction="sum")
            if with_predictions:
                predicted.append(torch.where(chunk_ids != IGNORE_INDEX, logits.argmax(dim=-1), IGNORE_INDEX))
    count = (ids != IGNORE_INDEX).sum()  # on the device: no host sync
    loss = total / count.clamp(min=1)
    predictions = torch.cat(predicted).reshape(targets.shape) if with_predictions else None  # (B, T-1)
    return loss, predictions


def _chunk_cross_entropy(
    chunk: torch.Tensor, chunk_ids: torch.Tensor, lm_head: nn.Module, softcap: float | None
) -> torch.Tensor:
    """Summed cross-entropy of one chunk (C, H) against its ids (C,), -100 ignored."""
    return F.cross_entropy(lm_logits(lm_head, chunk, softcap), chunk_ids, ignore_index=IGNORE_INDEX, reduction="sum")


def masked_token_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of masked tokens predicted right, **with** the i-1 shift.

    predictions (B, T-1): argmax ids from the outputs at positions 0..T-2 (any value where unlabelled);
    labels (B, T): original ids at masked positions, -100 elsewhere.
    """
    targets = labels[:, 1:]  # (B, T-1): the token each output position must predict
    selected = targets != IGNORE_INDEX
    if not selected.any():
        return float("nan")
    return float((predictions[selected] == targets[selected]).mean())


class MNTPModel(nn.Module):
    """A (LoRA-wrapped) bidirectional decoder plus the LM head, trained with the MNTP objective.

    `forward` returns the loss and, in eval mode, the argmax predictions at labelled positions (-100
    elsewhere), (B, T-1): small enough for the Trainer to gather for the accuracy metric.
    """

    def __init__(self, decoder: nn.Module, lm_head: nn.Module, logit_softcap: float | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.lm_head = lm_head
        self.logit_softcap = logit_softcap

    @property
    def config(self):
        return self.decoder.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state  # (B, T, H)
        if labels is None:
            return {"last_hidden_state": hidden}
        loss, predictions = chunked_mntp_loss(
            hidden, labels, self.lm_head, self.logit_softcap, with_predictions=not self.training
        )  # (), (B, T-1) in eval mode
        output = {"loss": loss}
        if predictions is not None:
            output["predictions"] = predictions
        return output

    def save_pretrained(self, output_dir: str | Path, train_lm_head: bool) -> None:
        """Write the PEFT adapter of the decoder (llm2vec's key layout) and, if trained, the LM head."""
        self.decoder.save_pretrained(str(output_dir))
        if train_lm_head:
            state = {name: p.detach().cpu().contiguous() for name, p in self.lm_head.named_parameters()}
            save_file(state, str(Path(output_dir) / LM_HEAD_FILE), metadata={"format": "pt"})

    def load_trained_weights(self, folder: str | Path) -> None:
        """Load adapter (and LM head, if the folder has one) written by `save_pretrained`: used on resume."""
        from peft import set_peft_model_state_dict

        adapter = load_file(str(Path(folder) / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.decoder, adapter)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"checkpoint {folder} has adapter keys this model lacks: {result.unexpected_keys[:3]}")
        load_lm_head(self.lm_head, folder)


def load_lm_head(lm_head: nn.Module, folder: str | Path) -> bool:
    """Load `lm_head.safetensors` from `folder` into `lm_head` if present; True if loaded."""
    path = Path(folder) / LM_HEAD_FILE
    if not path.exists():
        return False
    state = load_file(str(path))
    with torch.no_grad():
        for name, param in lm_head.named_parameters():
            param.copy_(state[name].to(param.dtype))
    return True
