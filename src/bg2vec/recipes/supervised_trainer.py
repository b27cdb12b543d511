"""The Trainer step for supervised contrastive training: batches of one dataset each, texts built exactly as
the encoder builds them (instruction left out of pooling, left padding, position ids), InfoNCE over in-batch
and hard negatives gathered over processes, optional gradient caching; evaluation = retrieval on held-out rows.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from transformers.trainer_utils import EvalLoopOutput

from ..data.triples import Triple
from ..objectives.contrastive import simcse_loss
from .trainer import ContrastiveTrainer

MODEL_INPUTS = ("input_ids", "attention_mask", "pooling_mask", "position_ids")


class TripleCollator:
    """A batch of triples → one left-padded batch of rows [queries | positives | hard negatives], built by
    `encoder.tokenize` (so exactly as `encode` builds its inputs: instruction format, cuts, left padding, position
    ids, the instruction left out of pooling), with `rows` = (queries, negatives) and `positive_ids`."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder  # a Bg2Vec over the model being trained (only its input rules are used here)

    def tokenize(self, sentences: list[Any]) -> dict[str, torch.Tensor]:
        return self.encoder.tokenize(sentences)

    def __call__(self, triples: list[Triple]) -> dict[str, torch.Tensor]:
        negatives = [negative for t in triples for negative in t.negatives]
        sentences = [[t.instruction, t.query] for t in triples] + [t.positive for t in triples] + negatives
        features = self.tokenize(sentences)
        features["rows"] = torch.tensor([len(triples), len(negatives)])
        features["positive_ids"] = torch.tensor([zlib.crc32(t.positive.encode()) for t in triples], dtype=torch.long)
        return features


class _Batches(Dataset):
    """Precomputed batches (lists of triples): the DataLoader yields one per step, unchanged."""

    def __init__(self, batches: list[list[Triple]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> list[Triple]:
        return self.batches[index]


class SupervisedTrainer(ContrastiveTrainer):
    """Trainer for (query, positive, negatives) batches; `batches` are this process's, one dataset each."""

    def __init__(self, *args: Any, batches: list[list[Triple]], held_out: list[Triple], loss_scale: float,
                 loss_options: dict[str, Any], mini_batch_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, loss_scale=loss_scale, loss_options=loss_options, mini_batch_size=mini_batch_size, **kwargs)
        self.batches, self.held_out = batches, held_out

    def get_train_dataloader(self) -> DataLoader:
        # the batches are already this process's share of each global batch: no sampler, no sharding
        return DataLoader(_Batches(self.batches), batch_size=None, shuffle=False, collate_fn=self.data_collator,
                          num_workers=self.args.dataloader_num_workers)

    def embedding_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: inputs[k] for k in MODEL_INPUTS}  # 2Q + N rows: queries, positives, negatives

    def contrastive_loss(self, embeddings: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = int(inputs["rows"][0])
        return simcse_loss(
            embeddings[:queries], embeddings[queries : 2 * queries], self.loss_scale, self.accelerator.num_processes > 1,
            negatives=embeddings[2 * queries :], positive_ids=inputs["positive_ids"], **self.loss_options,
        )

    def get_eval_dataloader(self, eval_dataset=None):
        return DataLoader([0])  # evaluation reads self.held_out directly (see evaluation_loop)

    @torch.no_grad()
    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        """Each held-out query (with its instruction) retrieves among all held-out positives: accuracy@1, MRR and
        the InfoNCE loss (no hard negatives) over the whole held-out set."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        embed = lambda texts: torch.cat([  # noqa: E731
            model(**{k: v.to(device) for k, v in self.data_collator.tokenize(texts[i : i + self.args.eval_batch_size]).items()})
            for i in range(0, len(texts), self.args.eval_batch_size)
        ])
        queries = embed([[t.instruction, t.query] for t in self.held_out])  # (N, H)
        positives = embed([t.positive for t in self.held_out])  # (N, H)
        model.train(was_training)
        scores = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(positives, dim=-1).T  # (N, N)
        ranks = (scores > scores.diagonal()[:, None]).sum(dim=1)  # (N,): 0 = the positive is first
        metrics = {
            "loss": float(simcse_loss(queries, positives, self.loss_scale, across_processes=False)),
            "accuracy": float((ranks == 0).float().mean()),
            "mrr": float((1.0 / (ranks + 1).float()).mean()),
        }
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        metrics.update(self.task_metrics(metric_key_prefix))
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(self.held_out))
