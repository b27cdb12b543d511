"""Masked next token prediction (MNTP), LLM2Vec's first training step (arXiv 2404.05961, section 2.2).

Tokens are masked as in MLM, but a decoder's output at position i was trained to predict token i+1, so the
masked token at position i is predicted from the output at position **i-1**. llm2vec gets this shift
implicitly from the causal-LM loss; here it is written out. Training computes the loss a chunk of positions
at a time with each chunk's gradients taken right after its logits (`chunked_mntp_loss`, a fused linear
cross-entropy), so at most one chunk of logits is ever alive, whatever the masking rate (with vocabularies of
38k-262k entries, full-sequence logits would dominate memory); nothing in it waits on the device.
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
    gather: bool = True,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The MNTP loss (mean cross-entropy over labelled positions, i-1 shift), `chunk_rows` positions at a time.

    hidden_states (B, T, H), labels (B, T) → the loss, and with `with_predictions` the argmax ids (B, T-1)
    (-100 where unlabelled). With gradients on, each chunk's gradients are computed in the forward pass, right
    after its logits (a fused linear cross-entropy), so memory holds one chunk of logits, never (B, T, V), and
    the logits are computed once. Equal to `mntp_loss(*mntp_logits_at_labels(...))` in value and gradients
    (tested). `gather` (training's choice) runs only the labelled positions: p of the LM head's work, for one
    wait on the device per step (the count of labelled positions); without it every position runs and nothing
    waits (the shapes never depend on the data). `num_items_in_batch` (the Trainer's count of labelled positions
    over every micro-batch and process of the step) divides the summed loss instead of this batch's own count, so
    gradient accumulation and DDP weigh every labelled token alike, as one big batch would.
    """
    predictors, targets = shift_for_next_token(hidden_states, labels)  # (B, T-1, H), (B, T-1)
    if gather and not with_predictions:
        selected = targets != IGNORE_INDEX  # (B, T-1)
        rows, ids = predictors[selected], targets[selected]  # (N, H), (N,): N labelled positions
    else:
        rows = predictors.reshape(-1, predictors.shape[-1])  # (N, H), N = B(T-1)
        ids = targets.reshape(-1)  # (N,)
    weight = lm_head.weight  # (V, H)
    if getattr(lm_head, "bias", None) is not None:
        raise ValueError("chunked_mntp_loss expects an LM head without bias (every supported decoder's)")
    count = (ids != IGNORE_INDEX).sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch  # on the device
    count = torch.as_tensor(count, device=rows.device)
    if torch.is_grad_enabled() and (rows.requires_grad or weight.requires_grad) and not with_predictions:
        return _FusedLinearCrossEntropy.apply(rows, weight, ids, softcap, chunk_rows, count), None
    with torch.no_grad() if not torch.is_grad_enabled() else torch.enable_grad():
        total = rows.new_zeros((), dtype=torch.float32)
        predicted = []
        for start in range(0, rows.shape[0], chunk_rows):
            chunk, chunk_ids = rows[start : start + chunk_rows], ids[start : start + chunk_rows]  # (C, H), (C,)
            logits = lm_logits(lm_head, chunk, softcap)  # (C, V)
            total = total + F.cross_entropy(logits, chunk_ids, ignore_index=IGNORE_INDEX, reduction="sum")
            if with_predictions:
                predicted.append(torch.where(chunk_ids != IGNORE_INDEX, logits.argmax(dim=-1), IGNORE_INDEX))
        loss = total / count
    predictions = torch.cat(predicted).reshape(targets.shape) if with_predictions else None  # (B, T-1)
    return loss, predictions


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `rows @ weight.T` (softcapped) against `ids` over `count`, -100 ignored, chunk by chunk; the
    gradients w.r.t. rows and weight are computed in the forward pass and scaled by the incoming gradient in
    the backward pass. Logits are float32, as `lm_logits` makes them."""

    @staticmethod
    def forward(ctx, rows, weight, ids, softcap, chunk_rows, count):  # rows (N, H), weight (V, H), ids (N,), count ()
        grad_rows = torch.zeros_like(rows) if rows.requires_grad else None  # (N, H)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None  # (V, H)
        total = rows.new_zeros((), dtype=torch.float32)
        for start in range(0, rows.shape[0], chunk_rows):
            chunk, chunk_ids = rows[start : start + chunk_rows], ids[start : start + chunk_rows]  # (C, H), (C,)
            raw = (chunk @ weight.T).float()  # (C, V)
            logits = torch.tanh(raw / softcap) * softcap if softcap else raw
            valid = chunk_ids != IGNORE_INDEX  # (C,)
            safe_ids = chunk_ids.clamp(min=0)
            log_norm = torch.logsumexp(logits, dim=-1)  # (C,)
            picked = logits.gather(1, safe_ids[:, None])[:, 0]  # (C,)
            total = total + ((log_norm - picked) * valid).sum()
            grad = torch.softmax(logits, dim=-1)  # (C, V): d(sum CE)/d logits = softmax - one-hot, on valid rows
            grad.scatter_add_(1, safe_ids[:, None], -torch.ones_like(picked)[:, None])
            grad *= valid[:, None]
            if softcap:
                grad *= 1 - (logits / softcap) ** 2  # d tanh(x/c)*c / dx
            if grad_rows is not None:
                grad_rows[start : start + chunk_rows] = (grad.to(weight.dtype) @ weight).to(rows.dtype)
            if grad_weight is not None:
                grad_weight += grad.T @ chunk.float()
        ctx.save_for_backward(grad_rows, grad_weight, count)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_rows, grad_weight, count = ctx.saved_tensors
        scale = grad_output / count
        return (
            grad_rows * scale.to(grad_rows.dtype) if grad_rows is not None else None,
            (grad_weight * scale).to(ctx.weight_dtype) if grad_weight is not None else None,
            None, None, None, None,
        )


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
    elsewhere), (B, T-1): small enough for the Trainer to gather for the accuracy metric. It takes the
    Trainer's `num_items_in_batch`, counted as for a causal LM (labels[:, 1:], the i-1 shift).
    """

    accepts_loss_kwargs = True  # the Trainer passes num_items_in_batch ...
    loss_type = "ForCausalLM"  # ... counted over labels[:, 1:], the positions the shifted loss predicts

    def __init__(self, decoder: nn.Module, lm_head: nn.Module, logit_softcap: float | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.lm_head = lm_head
        self.logit_softcap = logit_softcap

    @property
    def config(self):
        return self.decoder.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> dict[str, torch.Tensor]:
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state  # (B, T, H)
        if labels is None:
            return {"last_hidden_state": hidden}
        loss, predictions = chunked_mntp_loss(
            hidden, labels, self.lm_head, self.logit_softcap, with_predictions=not self.training,
            num_items_in_batch=num_items_in_batch,
        )  # (), (B, T-1) in eval mode
        output = {"loss": loss}
        if predictions is not None:
            output["predictions"] = predictions
        return output

    def save_pretrained(self, output_dir: str | Path, train_lm_head: bool, state_dict: dict | None = None) -> None:
        """Write the PEFT adapter of the decoder (llm2vec's key layout) and, if trained, the LM head. Under
        FSDP or DeepSpeed ZeRO-3 the Trainer gathers the full `state_dict` (this model's keys); it is used
        instead of the (sharded) parameters."""
        self.decoder.save_pretrained(str(output_dir), state_dict=submodule_state(state_dict, "decoder"))
        if train_lm_head:
            state = submodule_state(state_dict, "lm_head") or dict(self.lm_head.named_parameters())
            state = {name: p.detach().cpu().contiguous() for name, p in state.items()}
            save_file(state, str(Path(output_dir) / LM_HEAD_FILE), metadata={"format": "pt"})

    def load_trained_weights(self, folder: str | Path) -> None:
        """Load adapter (and LM head, if the folder has one) written by `save_pretrained`: used on resume."""
        from peft import set_peft_model_state_dict

        adapter = load_file(str(Path(folder) / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.decoder, adapter)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"checkpoint {folder} has adapter keys this model lacks: {result.unexpected_keys[:3]}")
        load_lm_head(self.lm_head, folder)


def submodule_state(state_dict: dict | None, prefix: str) -> dict | None:
    """The entries of `state_dict` under `prefix.`, with the prefix removed (None stays None)."""
    if state_dict is None:
        return None
    return {key[len(prefix) + 1 :]: value for key, value in state_dict.items() if key.startswith(prefix + ".")}


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
