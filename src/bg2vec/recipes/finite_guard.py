"""Stop a training run the moment it can no longer learn: a non-finite gradient (a NaN or infinite loss gives
one too), or a gradient that is exactly zero for several steps in a row.

transformers keeps going in both cases: its `logging_nan_inf_filter` prints a NaN loss as the average of earlier
ones (0 at the start), and the run ends with exit 0 and an adapter of NaNs that every later command trusts. The
guard looks at the gradients of the trainable parameters after the backward pass and before the optimizer step
(`on_pre_optimizer_step`), so the step that went bad is never applied and never saved: the checkpoints already on
disk are the last good ones, and the final adapter is not written.

A gradient norm of exactly 0 on `ZERO_GRADIENT_STEPS` steps in a row is the other dead end: a learning rate far
too high (1e6) saturates the activations, every gradient underflows to 0, the loss stays where it is, and the
optimizer's momentum alone keeps moving the weights. One zero step can be an accident of a batch (every token
unmasked); three in a row is not, so the run stops and says which setting to change.

With fp16 mixed precision (a loss scaler) non-finite gradients are expected now and then: the scaler skips that
step and lowers its scale. There the guard checks the trainable weights after each step instead.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ..errors import TrainingDiverged
from .checkpoints import checkpoints

ZERO_GRADIENT_STEPS = 3  # consecutive optimizer steps with a gradient norm of exactly 0 before the run stops


def gradient_norm(model: torch.nn.Module) -> float:
    """The L2 norm of the trainable parameters' gradients (inf or nan if any gradient is)."""
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.requires_grad and p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0  # (P,) -> ()


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p.detach()).all()) for p in model.parameters() if p.requires_grad)


class FiniteGuard(TrainerCallback):
    """Raises `TrainingDiverged` at the first step with a non-finite gradient (or weights, under fp16 loss scaling),
    or after `ZERO_GRADIENT_STEPS` steps with a zero gradient. A run folder that did not exist before the run and
    holds no checkpoint is removed (nothing of the failed run is kept)."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.existed = self.output_dir.exists()
        self.zero_since: int | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None or args.fp16:
            return control
        step = state.global_step + 1  # the step being taken
        norm = gradient_norm(model)
        if not math.isfinite(norm):
            self._stop(args, step, f"the loss or gradient became {norm} at step {step}", "lower learning_rate, or train in "
                       "float32 / bf16 (torch_dtype float16 overflows)")
        if norm == 0.0:
            self.zero_since = self.zero_since or step
            if step - self.zero_since + 1 >= ZERO_GRADIENT_STEPS:
                self._stop(args, self.zero_since, f"the gradient norm is 0 at every step since step {self.zero_since}: nothing is "
                           "learned any more", f"lower learning_rate (now {args.learning_rate:g})")
        else:
            self.zero_since = None
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if args.fp16 and model is not None and not weights_finite(model):
            self._stop(args, state.global_step, f"the trainable weights became non-finite at step {state.global_step}",
                       "lower learning_rate")
        return control

    def _stop(self, args: Any, bad_step: int, what: str, fix: str) -> None:
        """Raise; `bad_step` is the first step that went wrong: the weights after the step before it caused it,
        so the last good checkpoint is one from before that (checkpoint-N holds the weights after step N)."""
        saved = checkpoints(self.output_dir)
        if not saved and not self.existed and args.should_save and self.output_dir.is_dir():
            shutil.rmtree(self.output_dir, ignore_errors=True)
        good = [folder for folder in saved if int(folder.name.rsplit("-", 1)[1]) <= bad_step - 2]
        kept = f"last good checkpoint: {good[0]}" if good else "no checkpoint from before it"
        raise TrainingDiverged(f"training stopped: {what}; the final adapter was not saved ({kept}); {fix}")
