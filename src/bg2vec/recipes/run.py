"""How every training recipe opens and closes a run.

Opening (`start_run`, before anything loads): the output folder checked against the inputs and for writing, the
checkpoint to resume from, a barrier, the run's callbacks; `cap_sequence_length` once the model is known.
Running: `train` turns Ctrl-C into `TrainingInterrupted`. Closing (`finish_run`): the trained weights, and on the
main process the model card, metrics and curves.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from torch import nn
from transformers import Trainer, TrainerCallback

from ..encoding.model_card import write_model_card
from ..errors import TrainingDiverged, TrainingInterrupted
from ..locks import hold_output_lock, release_output_lock
from ..paths import check_apart, check_output_dir, disk_writes, record_written
from ..processes import barrier
from .checkpoints import RunRecord, check_resume_matches, checkpoints, resolve_checkpoint, run_record
from .reporting import TrainingResult, eval_rows, format_table, plot_curves, write_metrics

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
    hold_output_lock(config.output_dir, "output_dir", log)  # released by finish_run (or when the command ends)
    check_output_dir(config.output_dir, config.overwrite_output_dir, bool(resume))
    checkpoint = resolve_checkpoint(config.output_dir, resume, log)
    if checkpoint:
        check_resume_matches(checkpoint, run_record(config), log)
    barrier()  # one process that raced ahead and wrote would show the others a folder that is not empty
    return checkpoint, run_callbacks(config)


def run_callbacks(config: Any) -> list[TrainerCallback]:
    """The callbacks every training recipe runs with: `stop_after_n_steps`, `cpu_threads` on a CPU, the guard
    that stops a run at its first non-finite (or dead) gradient, and the record each checkpoint keeps of its run."""
    from .cpu_threads import cpu_thread_callbacks
    from .finite_guard import FiniteGuard

    stop = [StopAfterSteps(config.stop_after_n_steps)] if config.stop_after_n_steps else []
    return stop + cpu_thread_callbacks(config.cpu_threads) + [FiniteGuard(config.output_dir), RunRecord(run_record(config))]


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


def _close_progress_bars(trainer: Trainer) -> None:
    """Close the Trainer's progress bars now, so they are not redrawn below the message that follows."""
    for callback in trainer.callback_handler.callbacks:
        for name in ("training_bar", "prediction_bar"):
            bar = getattr(callback, name, None)
            if bar is not None:
                bar.close()
                setattr(callback, name, None)


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
        sections: dict[str, Any] = {"pairs": pairs} if pairs is not None else {}
        scorer = getattr(trainer, "task_scorer", None)
        if scorer is not None:  # the encoder settings the eval_tasks columns were scored with
            sections["eval_tasks_encoder"] = asdict(scorer.settings)
        write_metrics(config.output_dir, history, rows, final, **sections)
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
