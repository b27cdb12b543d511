"""The Trainer step for SimCSE: wires the objective (objectives/simcse.py, contrastive.py) into transformers' Trainer.

Training: two dropout views per text, InfoNCE gathered over processes, optional gradient caching.
Evaluation: embeddings instead of predictions (held-out contrastive loss, alignment, uniformity, Spearman).
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader
from transformers.trainer_utils import EvalLoopOutput

from ..errors import ConfigError
from ..objectives.contrastive import simcse_loss, spearman
from ..objectives.simcse import evaluation_figures, held_out_embeddings, pair_similarities, two_views
from .trainer import ContrastiveTrainer


class SimCSETrainer(ContrastiveTrainer):
    """The Trainer step for SimCSE (two dropout views, InfoNCE gathered over processes, optional gradient
    caching) and an evaluation of embeddings instead of predictions: held-out contrastive loss, alignment,
    uniformity and, with `pairs` = (first, second, scores), the Spearman correlation of pair cosines."""

    def __init__(
        self,
        *args: Any,
        loss_scale: float,
        mini_batch_size: int | None = None,
        pairs: tuple[list[dict], list[dict], list[float]] | None = None,
        loss_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, loss_scale=loss_scale, loss_options=loss_options, mini_batch_size=mini_batch_size, **kwargs)
        self.pairs = pairs
        self.pair_cosines: dict[int, list[float]] = {}  # global step → cosine of each pair at that evaluation
        if mini_batch_size is not None and self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise ConfigError(
                "mini_batch_size",
                mini_batch_size,
                "None under DeepSpeed (gradient caching runs one backward per mini-batch)",
                fix="train with DDP (torchrun or accelerate without DeepSpeed), or unset mini_batch_size",
            )

    def embedding_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return two_views(inputs)  # 2B rows: every text twice

    def contrastive_loss(self, embeddings: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        anchors, positives = embeddings.chunk(2)  # (B, H) each
        return simcse_loss(anchors, positives, self.loss_scale, self.accelerator.num_processes > 1, **self.loss_options)

    def get_eval_dataloader(self, eval_dataset=None):
        # Every held-out text counts: no drop_last here, whatever the training loader does.
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        loader = DataLoader(dataset, batch_size=self.args.eval_batch_size, collate_fn=self.data_collator)
        return self.accelerator.prepare(loader)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        model = self.accelerator.unwrap_model(self.model)
        plain, anchors, positives = held_out_embeddings(
            model, dataloader, self.args.seed, gather=self.accelerator.gather_for_metrics
        )
        train_batch = self.args.per_device_train_batch_size * self.args.world_size
        figures = evaluation_figures(plain, anchors, positives, train_batch, self.loss_scale)
        if self.pairs is not None:
            first, second, scores = self.pairs
            cosines = pair_similarities(model, first, second, self.data_collator, self.args.eval_batch_size)
            self.pair_cosines[self.state.global_step] = cosines
            figures["spearman"] = spearman(torch.tensor(cosines), torch.tensor(scores))
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in figures.items()}
        metrics.update(self.task_metrics(metric_key_prefix))
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=plain.shape[0])
