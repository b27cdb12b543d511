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
        decoder.eval()  # the trainer owns its model's mode: the encoder refuses a model in training mode
        try:
            encoder = Bg2VecMTEB(Bg2Vec(decoder, encoder_tokenizer, EncoderSettings(pooling_mode=pooling_mode)), use_instructions=False)
            return {task.name: score_task(encoder, task, config.per_device_eval_batch_size).main_score for task in tasks}
        finally:
            decoder.train(was_training)

    return score
