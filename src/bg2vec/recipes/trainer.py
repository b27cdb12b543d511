"""The Trainer glue every training recipe shares.

Training runs on transformers' `Trainer`, so torchrun/accelerate (DDP, FSDP, DeepSpeed), mixed precision,
checkpoints and resuming work as users know them. Our Trainer subclass only changes *what* is saved: the
PEFT adapter (and a trained LM head), never a full copy of the base model. `ContrastiveTrainer` adds the
contrastive step SimCSE and supervised training share.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import rotate_checkpoints

from ..models.portable_files import portable_tokenizer_files
from ..objectives.gradient_cache import grad_cache_step, split_rows
from ..paths import disk_writes
from .checkpoints import checkpoints, publish, staging_folder


class AdapterTrainer(Trainer):
    """A Trainer whose model saves only what it trains (`model.save_pretrained(dir, **save_kwargs)`) and
    reloads it on resume (`model.load_trained_weights(dir)`); evaluation also reports perplexity."""

    def __init__(
        self, *args: Any, save_kwargs: dict[str, Any] | None = None, task_scorer: Any = None,
        eval_data_collator: Any = None, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.save_kwargs = save_kwargs or {}
        self.task_scorer = task_scorer  # decoder -> {task: main score}, at every evaluation (eval_tasks)
        self.eval_data_collator = eval_data_collator  # None: the training collator evaluates too

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        training_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator

    def task_metrics(self, prefix: str) -> dict[str, float]:
        """The eval_tasks' main scores for the model as it is now, as `{prefix}_{task}` metrics."""
        if self.task_scorer is None:
            return {}
        scores = self.task_scorer(self.accelerator.unwrap_model(self.model).decoder)
        return {f"{prefix}_{name}": value for name, value in scores.items()}

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        # under FSDP / ZeRO-3 the Trainer hands over the gathered full state dict: save from it
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict, **self.save_kwargs)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
            portable_tokenizer_files(output_dir)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Write the checkpoint into a hidden staging folder, then rename it to checkpoint-N: a kill during the
        write leaves no checkpoint-N that looks complete. Rotation (save_total_limit) runs after the rename."""
        run_dir = Path(self._get_output_dir(trial=trial))
        final = run_dir / f"checkpoint-{self.state.global_step}"
        staging = staging_folder(final)
        if self.args.should_save and staging.exists():
            shutil.rmtree(staging)  # left by a run killed while writing this step
        self.accelerator.wait_for_everyone()  # no process writes its files there before it is clean
        self._staging_root = staging
        saved = checkpoints(run_dir)
        last = f"; last complete checkpoint: {saved[0]}" if saved else ""
        try:
            with disk_writes(run_dir, final.name + last, cleanup=lambda: shutil.rmtree(staging, ignore_errors=True)):
                super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every process has written its files (rng_state_R.pth)
        if not self.args.should_save:
            return
        publish(staging / final.name, final)
        staging.rmdir()
        best = self.state.best_global_step
        if best and (run_dir / f"checkpoint-{best}").is_dir():
            self.state.best_model_checkpoint = str(run_dir / f"checkpoint-{best}")
            written = final / "trainer_state.json"
            self.state.save_to_json(str(written) + ".tmp")
            os.replace(str(written) + ".tmp", written)
        rotate_checkpoints(
            output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True,
        )

    def _get_output_dir(self, trial: Any) -> str:
        staging = getattr(self, "_staging_root", None)
        return str(staging) if staging is not None else super()._get_output_dir(trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        (model or self.model).load_trained_weights(resume_from_checkpoint)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        for key in [k for k in output.metrics if k.endswith("_loss")]:
            output.metrics[key.removesuffix("_loss") + "_perplexity"] = math.exp(min(output.metrics[key], 50.0))
        output.metrics.update(self.task_metrics(metric_key_prefix))
        return output


def gradient_cached_step(trainer: Trainer, model: nn.Module, inputs: dict[str, torch.Tensor], size: int, loss) -> torch.Tensor:
    """One training step by gradient caching: embed `inputs` `size` rows at a time without a graph, take the loss
    (`loss(embeddings)`) and its gradient w.r.t. the embeddings, then back-propagate chunk by chunk (same
    gradients as one pass; the memory of one chunk)."""
    steps = trainer.current_gradient_accumulation_steps

    def encode(chunk: dict[str, torch.Tensor]) -> torch.Tensor:
        with trainer.compute_loss_context_manager():
            return model(**chunk)  # (b, H)

    value = grad_cache_step(
        encode, split_rows(inputs, size), loss,
        lambda surrogate: trainer.accelerator.backward(surrogate / steps),
        no_sync=lambda: trainer.accelerator.no_sync(model),
    )
    return value / steps


class ContrastiveTrainer(AdapterTrainer):
    """The contrastive training step SimCSE and supervised training share: embed a batch, take the loss (InfoNCE
    gathered over processes), with gradient caching when `mini_batch_size` is set. Subclasses say what the model
    embeds (`embedding_inputs`) and how the embeddings make the loss (`contrastive_loss`)."""

    def __init__(self, *args: Any, loss_scale: float, loss_options: dict[str, Any] | None = None,
                 mini_batch_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_scale = loss_scale
        self.loss_options = loss_options or {}  # e.g. matryoshka_dims
        self.mini_batch_size = mini_batch_size

    def embedding_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def contrastive_loss(self, embeddings: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        embeddings = model(**self.embedding_inputs(inputs))  # (rows, H)
        loss = self.contrastive_loss(embeddings, inputs)
        return (loss, embeddings) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.mini_batch_size is None:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        return gradient_cached_step(
            self, model, self.embedding_inputs(inputs), self.mini_batch_size,
            lambda embeddings: self.contrastive_loss(embeddings, inputs),
        )
