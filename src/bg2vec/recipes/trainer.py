"""Pieces every training recipe shares: LoRA, the output folder, and the Trainer glue.

Training runs on transformers' `Trainer`, so torchrun/accelerate (DDP, FSDP, DeepSpeed), mixed precision,
checkpoints and resuming work as users know them. Our Trainer subclass only changes *what* is saved: the
PEFT adapter (and a trained LM head), never a full copy of the base model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from ..models.architectures import STANDARD_LORA_TARGETS, ARCHITECTURES
from ..config import TrainingSettings
from ..errors import ConfigError, first_line

def check_output_dir(output_dir: str, overwrite: bool, resume: bool) -> None:
    """Refuse to write into a folder that already holds files, unless asked to overwrite or resume."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError("output_dir", output_dir, "a folder path, not a file")
    if path.is_dir() and any(path.iterdir()) and not (overwrite or resume):
        raise ConfigError(
            "output_dir",
            output_dir,
            "a new or empty folder",
            fix="set overwrite_output_dir true, pass --resume to continue its last checkpoint, or pick another folder",
        )


def resolve_checkpoint(output_dir: str, resume: str | bool | None) -> str | None:
    """`--resume` alone means the last checkpoint in output_dir; a path means that checkpoint."""
    if not resume:
        return None
    if isinstance(resume, str) and resume not in ("true", "True"):
        if not Path(resume).is_dir():
            raise ConfigError("resume", resume, "a checkpoint folder (output_dir/checkpoint-N)")
        return resume
    last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if last is None:
        raise ConfigError("resume", True, f"a checkpoint-N folder inside {output_dir}", fix="run without --resume")
    return last


def lora_targets(model: nn.Module, requested: list[str] | None) -> list[str]:
    """The requested LoRA targets, or the architecture's defaults, keeping only names the model has."""
    model_type = model.config.model_type
    known = ARCHITECTURES.get(model_type)
    wanted = requested or list(known.lora_target_modules if known else STANDARD_LORA_TARGETS)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [name for name in wanted if name in present]
    if not found:
        raise ConfigError("lora_target_modules", wanted, f"module names present in this {model_type} model")
    return found


def add_lora(decoder: PreTrainedModel, r: int, alpha: int, dropout: float, targets: list[str] | None = None):
    """Wrap the inner decoder (not the LM head) in a fresh LoRA adapter: llm2vec's key layout."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(decoder, targets),
        bias="none",
        task_type=None,
    )
    return get_peft_model(decoder, config)


def trainable_parameters_line(model: nn.Module) -> str:
    """peft's summary line: 'trainable params: N || all params: M || trainable%: P'."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def build_training_arguments(config: TrainingSettings, **overrides: Any) -> TrainingArguments:
    """TrainingArguments from the shared settings plus the pass-through keys."""
    values = dict(
        output_dir=config.output_dir,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        bf16=config.bf16,
        fp16=config.fp16,
        seed=config.seed,
        do_train=config.do_train,
        do_eval=config.do_eval,
        eval_strategy=config.eval_strategy if config.do_eval else "no",
        eval_steps=config.eval_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to,
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        label_names=["labels"],
        # The decoder enables checkpointing itself (non-reentrant, so frozen embeddings need no hook).
        gradient_checkpointing=False,
    )
    values.update(config.extra_training_args)
    values.update(overrides)
    try:
        return TrainingArguments(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError("training arguments", "", "settings transformers accepts", fix=first_line(exc)) from None


class StopAfterSteps(TrainerCallback):
    """End training after `n` optimisation steps without changing the LR schedule (llm2vec's semantics)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.n:
            control.should_training_stop = True
        return control


class AdapterTrainer(Trainer):
    """A Trainer whose model saves only what it trains (`model.save_pretrained(dir, **save_kwargs)`) and
    reloads it on resume (`model.load_trained_weights(dir)`); evaluation also reports perplexity."""

    def __init__(self, *args: Any, save_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_kwargs = save_kwargs or {}

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, **self.save_kwargs)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        (model or self.model).load_trained_weights(resume_from_checkpoint)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        output = super().evaluation_loop(*args, **kwargs)
        for key in [k for k in output.metrics if k.endswith("_loss")]:
            output.metrics[key.removesuffix("_loss") + "_perplexity"] = math.exp(min(output.metrics[key], 50.0))
        return output
