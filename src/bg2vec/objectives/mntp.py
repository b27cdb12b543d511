"""Masked next token prediction (MNTP), LLM2Vec's first training step (arXiv 2404.05961, section 2.2).

Tokens are masked as in MLM, but a decoder's output at position i was trained to predict token i+1, so the
masked token at position i is predicted from the output at position **i-1**. llm2vec gets this shift
implicitly from the causal-LM loss; here it is written out, and the LM head runs only at the positions
that carry a label (with vocabularies of 38k-262k entries, full-sequence logits dominate memory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .masking import IGNORE_INDEX

LM_HEAD_FILE = "lm_head.safetensors"


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
        logits, targets = mntp_logits_at_labels(hidden, labels, self.lm_head, self.logit_softcap)  # (N, V), (N,)
        output = {"loss": mntp_loss(logits, targets)}
        if not self.training:
            predictions = torch.full_like(labels[:, 1:], IGNORE_INDEX)  # (B, T-1)
            predictions[labels[:, 1:] != IGNORE_INDEX] = logits.argmax(dim=-1)
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
