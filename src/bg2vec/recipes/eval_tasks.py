"""Scoring `eval_tasks` during training: the local evaluation tasks, run at every evaluation on the encoder the
run's output will load, as extra metrics and run-table columns."""

from __future__ import annotations

from typing import Any

from torch import nn


def task_columns(config: Any) -> dict[str, str]:
    """Run-table columns for the eval_tasks: task name -> its metric key."""
    from ..evaluation.local_tasks import load_local_task

    names = [load_local_task(folder, setting="eval_tasks").name for folder in config.eval_tasks or []]
    return {name: f"eval_{name}" for name in names}


class TaskScorer:
    """For `eval_tasks`: called with the decoder being trained, returns each task's main score, computed with the
    encoder the run's output loads: bidirectional, `pooling_mode`, texts alone, and the encoder's default lengths
    (llm2vec's max_length 512, capped at the model's positions) — not the training block length, since a saved
    output encodes at 512. `settings` says which, and metrics.json records it (`eval_tasks_encoder`), so
    `bg2vec evaluate --max-length` reproduces a step's score."""

    def __init__(self, config: Any, tokenizer: Any, positions: int | None, pooling_mode: str = "mean") -> None:
        import copy

        from ..encoding.encoder import EncoderSettings
        from ..evaluation.local_tasks import load_local_task

        self.settings = EncoderSettings(pooling_mode=pooling_mode).within(positions)
        self.tasks = [load_local_task(folder, setting="eval_tasks") for folder in config.eval_tasks]
        self.batch_size = config.per_device_eval_batch_size
        self.tokenizer = copy.deepcopy(tokenizer)  # the encoder pads on the left; training keeps its own

    def __call__(self, decoder: nn.Module) -> dict[str, float]:
        from ..encoding.encoder import Bg2Vec
        from ..evaluation.mteb_model import Bg2VecMTEB
        from ..evaluation.runner import score_task

        was_training = decoder.training
        decoder.eval()  # the trainer owns its model's mode: the encoder refuses a model in training mode
        try:
            encoder = Bg2VecMTEB(Bg2Vec(decoder, self.tokenizer, self.settings), use_instructions=False)
            return {task.name: score_task(encoder, task, self.batch_size).main_score for task in self.tasks}
        finally:
            decoder.train(was_training)


def task_scorer(config: Any, tokenizer: Any, positions: int | None, pooling_mode: str = "mean") -> TaskScorer | None:
    """The run's `TaskScorer`, or None without `eval_tasks`."""
    return TaskScorer(config, tokenizer, positions, pooling_mode) if config.eval_tasks else None
