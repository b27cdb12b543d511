"""Pieces every training recipe shares: LoRA, the output folder, and the Trainer glue.

Training runs on transformers' `Trainer`, so torchrun/accelerate (DDP, FSDP, DeepSpeed), mixed precision,
checkpoints and resuming work as users know them. Our Trainer subclass only changes *what* is saved: the
PEFT adapter (and a trained LM head), never a full copy of the base model.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
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
from transformers.trainer_utils import rotate_checkpoints

from ..data.blocks import TextSource
from ..models.architectures import STANDARD_LORA_TARGETS, ARCHITECTURES
from ..config import TrainingSettings
from ..errors import ConfigError, TrainingDiverged, TrainingInterrupted, first_line
from ..locks import hold_output_lock, release_output_lock
from ..paths import check_apart, check_output_dir, disk_writes, record_written
from ..models.adapters import quiet_renames
from ..models.portable_files import portable_tokenizer_files
from ..objectives.simcse import grad_cache_step, split_rows
from ..encoding.model_card import write_model_card
from .checkpoints import (
    RunRecord, check_resume_matches, checkpoints, publish, resolve_checkpoint, run_record, staging_folder,
)
from .reporting import TrainingResult, eval_rows, format_table, plot_curves, write_metrics

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


def add_lora(decoder: PreTrainedModel, r: int, alpha: int, dropout: float, targets: list[str] | None = None, lean: bool = True):
    """Wrap the inner decoder (not the LM head) in a fresh LoRA adapter: llm2vec's key layout. `lean`: the
    projections, MLPs and attention keep less for the backward pass (`models/lean_activations.py`; peft's files)."""
    from peft import LoraConfig, get_peft_model

    from ..models.lean_activations import use_lean_activations

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(decoder, targets),
        bias="none",
        task_type=None,
    )
    with quiet_renames():
        model = get_peft_model(decoder, config)
    if lean:
        use_lean_activations(model)
    return model


def text_source(config: Any) -> TextSource:
    """A config's data settings as the dataset builders take them (`preprocessing_num_workers` is `num_proc`)."""
    names = {f.name for f in fields(TextSource)} - {"num_proc"}
    return TextSource(**{name: getattr(config, name) for name in names if hasattr(config, name)},
                      num_proc=config.preprocessing_num_workers)


def is_main_process() -> bool:
    """Whether this is the process that reports (rank 0 under torchrun/accelerate, or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def quiet_unless_main(log):
    """`log` on the main process; nothing on the others (one table and one summary per run, not one per GPU)."""
    return log if is_main_process() else (lambda *args, **kwargs: None)


def wait_for_every_process() -> None:
    """A barrier: under torchrun no process starts writing before every process has checked the same,
    untouched output folder (one that raced ahead would make the others see a folder that is not empty)."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on the main process first (it tokenizes and fills datasets' cache), then on the others
    (they read the cache), instead of every process tokenizing the corpus at once."""
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def apply_liger_kernels(model: nn.Module) -> None:
    """Swap in Liger's fused RMSNorm, SwiGLU and RoPE kernels (its cross-entropy stays off: MNTP has its own)."""
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        raise ConfigError("liger_kernel", True, "the liger-kernel package installed", fix="pip install liger-kernel, or set it false") from None
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)


def enable_checkpointing(decoder: PreTrainedModel) -> None:
    """Recompute each layer's activations in the backward pass (non-reentrant: frozen embeddings need no hook)."""
    decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


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
    return {"use_cpu": True, **({"ddp_backend": "gloo"} if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {})}


class StopAfterSteps(TrainerCallback):
    """End training after `n` optimisation steps without changing the LR schedule (llm2vec's semantics)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.n:
            control.should_training_stop = True
        return control


def start_run(config: Any, resume: str | bool | None, log: Any) -> tuple[str | None, list[TrainerCallback]]:
    """How every training recipe opens, before it loads anything: the output folder checked against the inputs and
    for writing, the checkpoint to resume from, a barrier (every process checked the same untouched folder), and
    the run's callbacks (cpu_threads applies from here on: loading and tokenizing too)."""
    check_apart(config.output_dir, "output_dir", input_paths(config))
    hold_output_lock(config.output_dir, "output_dir", log)  # released by finish_run (or at exit)
    check_output_dir(config.output_dir, config.overwrite_output_dir, bool(resume))
    checkpoint = resolve_checkpoint(config.output_dir, resume, log)
    if checkpoint:
        check_resume_matches(checkpoint, run_record(config), log)
    wait_for_every_process()
    return checkpoint, run_callbacks(config)


def run_callbacks(config: Any) -> list[TrainerCallback]:
    """The callbacks every training recipe runs with: `stop_after_n_steps`, `cpu_threads` on a CPU, and the guard
    that stops a run at its first non-finite (or dead) gradient."""
    from .cpu_threads import cpu_thread_callbacks
    from .finite_guard import FiniteGuard

    stop = [StopAfterSteps(config.stop_after_n_steps)] if config.stop_after_n_steps else []
    return stop + cpu_thread_callbacks(config.cpu_threads) + [FiniteGuard(config.output_dir), RunRecord(run_record(config))]


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


def check_matryoshka(config: Any, decoder: nn.Module) -> None:
    """Every Matryoshka dim must fit in the model's embedding."""
    dims = getattr(config, "matryoshka_dims", None)
    hidden = decoder.get_input_embeddings().weight.shape[1]
    if dims and max(dims) > hidden:
        raise ConfigError("matryoshka_dims", dims, f"dims of at most the model's embedding size {hidden}")


def finish_run(trainer: Trainer, model: nn.Module, config: Any, final: dict[str, Any], columns: dict[str, str], describe,
               data: str | None, plot_file: str, title: str, do_eval: bool, pairs: list[dict[str, Any]] | None = None) -> Any:
    """Save what the run trained and, on the main process, its description (`describe()`), model card, metrics
    (`final`: the last evaluation) and curves; return the run's `TrainingResult`."""
    final_files = Path(config.output_dir) / "adapter_model.safetensors"  # a half-written one must not look finished
    saved = checkpoints(config.output_dir)
    what = "the final adapter" + (f" (last complete checkpoint: {saved[0]}, --resume continues it)" if saved else "")
    with disk_writes(config.output_dir, what, cleanup=lambda: final_files.unlink(missing_ok=True)):
        trainer.save_model(config.output_dir)
    history = trainer.state.log_history
    rows = eval_rows(history, columns)
    if trainer.is_world_process_zero():
        write_model_card(config.output_dir, describe(), format_table(rows), data, trainer.state.global_step)
        write_metrics(config.output_dir, history, rows, final, **({"pairs": pairs} if pairs is not None else {}))
        plot_curves(history, Path(config.output_dir) / plot_file, title, list(columns.values()) if do_eval else None)
        record_written(config.output_dir)  # what overwriting this folder later may delete
    release_output_lock(config.output_dir)
    return TrainingResult(config.output_dir, rows, final, format_table(rows), model, pairs or [])


def final_evaluation(trainer: Trainer) -> dict[str, Any]:
    """The last evaluation if it ran at the final step, else a fresh one."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluations and evaluations[-1]["step"] == trainer.state.global_step:
        return evaluations[-1]
    return trainer.evaluate()


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


def cap_sequence_length(config: Any, positions: int | None, log) -> Any:
    """`config` with max_seq_length at most the model's position limit, saying so when it had to cut
    (llm2vec's scripts do the same with the tokenizer's limit)."""
    if positions is None or config.max_seq_length <= positions:
        return config
    log(f"warning: max_seq_length={config.max_seq_length} is more than the model's {positions} positions "
        f"(max_position_embeddings); training with max_seq_length={positions}")
    return replace(config, max_seq_length=positions)


def train(trainer: Trainer, checkpoint: str | None) -> None:
    """`trainer.train`, with Ctrl-C (or SIGTERM) turned into `TrainingInterrupted`: the step it stopped at and
    the last complete checkpoint. A folder this run created and left without a checkpoint is removed."""
    output_dir = Path(trainer.args.output_dir)
    existed = output_dir.is_dir() and any(output_dir.iterdir())
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        _close_progress_bars(trainer)
        saved = checkpoints(output_dir)
        if not saved and not existed and output_dir.is_dir() and trainer.is_world_process_zero():
            shutil.rmtree(output_dir, ignore_errors=True)
        raise TrainingInterrupted(
            trainer.state.global_step, trainer.state.max_steps, str(saved[0]) if saved else None
        ) from None
    except (TrainingDiverged, OSError):  # the guard's or a full disk's one line goes below the closed progress bar
        _close_progress_bars(trainer)
        if not checkpoints(output_dir) and not existed and output_dir.is_dir() and trainer.is_world_process_zero():
            shutil.rmtree(output_dir, ignore_errors=True)
        raise


# Settings that name something a run reads: its output may be none of them, nor contain or lie inside one.
INPUT_SETTINGS = ("model_name_or_path", "peft_model_name_or_path", "train_file", "validation_file", "dataset_path",
                  "dataset_file_path", "eval_pairs_file", "cache_dir")  # fmt: skip


def input_paths(config: Any, plan: Any = None) -> dict[str, str | None]:
    """Every input of a run by the setting it comes from, with what the model reference resolved to (`plan`)."""
    paths = {name: getattr(config, name, None) for name in INPUT_SETTINGS}
    if plan is None:
        return paths
    paths["model_name_or_path (its base weights)"] = plan.weights
    paths["model_name_or_path (its tokenizer)"] = plan.tokenizer
    for adapter in plan.adapters:
        paths[f"adapter {adapter}"] = adapter
    return paths


def _close_progress_bars(trainer: Trainer) -> None:
    """Close the Trainer's progress bars now, so they are not redrawn below the message that follows."""
    for callback in trainer.callback_handler.callbacks:
        for name in ("training_bar", "prediction_bar"):
            bar = getattr(callback, name, None)
            if bar is not None:
                bar.close()
                setattr(callback, name, None)


def task_columns(config: Any) -> dict[str, str]:
    """Run-table columns for the eval_tasks: task name -> its metric key."""
    from ..evaluation.local_tasks import load_local_task

    names = [load_local_task(folder, setting="eval_tasks").name for folder in config.eval_tasks or []]
    return {name: f"eval_{name}" for name in names}


def task_scorer(config: Any, tokenizer: Any, pooling_mode: str = "mean") -> Any:
    """For `eval_tasks`: a function from the decoder being trained to each task's main score, computed with the
    encoder that the run's output will load (bidirectional, `pooling_mode`, texts alone), or None."""
    if not config.eval_tasks:
        return None
    import copy

    from ..encoding.encoder import Bg2Vec, EncoderSettings
    from ..evaluation.local_tasks import load_local_task
    from ..evaluation.mteb_model import Bg2VecMTEB
    from ..evaluation.runner import score_task

    tasks = [load_local_task(folder, setting="eval_tasks") for folder in config.eval_tasks]
    encoder_tokenizer = copy.deepcopy(tokenizer)  # the encoder pads on the left; training keeps its own

    def score(decoder: nn.Module) -> dict[str, float]:
        was_training = decoder.training
        encoder = Bg2VecMTEB(Bg2Vec(decoder, encoder_tokenizer, EncoderSettings(pooling_mode=pooling_mode)), use_instructions=False)
        scores = {task.name: score_task(encoder, task, config.per_device_eval_batch_size).main_score for task in tasks}
        decoder.train(was_training)
        return scores

    return score
