"""From a recipe's config to what the libraries take: transformers' `TrainingArguments` and the data
builders' `TextSource`."""

from __future__ import annotations

import warnings
from dataclasses import fields
from typing import Any

import torch
from transformers import TrainingArguments

from ..config import TrainingSettings
from ..data.blocks import TextSource
from ..errors import ConfigError, first_line
from ..processes import world_size


def text_source(config: Any) -> TextSource:
    """A config's data settings as the dataset builders take them (`preprocessing_num_workers` is `num_proc`)."""
    names = {f.name for f in fields(TextSource)} - {"num_proc"}
    return TextSource(**{name: getattr(config, name) for name in names if hasattr(config, name)},
                      num_proc=config.preprocessing_num_workers)


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
        activation_checkpointing=False,
        # every trainable parameter (LoRA, a trained LM head) takes part in every step: DDP need not search
        ddp_find_unused_parameters=False,
        **_cpu_settings(),
    )
    values.update(config.extra_training_args)
    values.update(overrides)
    if values.get("fsdp") and not torch.cuda.is_available():
        warnings.warn("fsdp is set, but without GPUs accelerate runs plain DDP: every process holds the whole model",
                      stacklevel=2)
    try:
        return TrainingArguments(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError("training arguments", "", "settings transformers accepts", fix=first_line(exc)) from None


def _cpu_settings() -> dict[str, Any]:
    """Without a GPU: tell transformers so (bf16 on CPU needs it), and under torchrun use gloo, the collective
    backend that runs on CPUs (else every process trains alone, unaware of the others)."""
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available() or (mps is not None and mps.is_available()):
        return {}
    return {"use_cpu": True, **({"ddp_backend": "gloo"} if world_size() > 1 else {})}
