"""Unsupervised SimCSE (Gao et al. 2021, arXiv 2104.08821), LLM2Vec's last training step (arXiv 2404.05961, 2.3).

Every text goes through the encoder twice. Dropout (the attention dropout, set to `simcse_dropout`, and the
LoRA dropout) makes the two embeddings differ slightly; the model learns to pick a text's other view among
the views of all other texts in the batch (the in-batch negatives), with the InfoNCE loss below.

- Several processes (torchrun / accelerate): embeddings are gathered across processes **with gradients**, so
  the negatives are the global batch and the loss equals the single-process loss on that batch.
- `mini_batch_size` (gradient caching, GradCache, Gao et al. 2021, arXiv 2101.06983): the global batch is
  embedded in mini-batches, so batch 128 fits where back-propagating through 256 sequences at once does not.
- Pooling covers the text's own tokens only: never padding, never BOS (llm2vec's SimCSE collator mean-pools
  over both).

What `bg2vec simcse` writes (the folder describes itself; `Bg2Vec.from_pretrained(folder)` reads it)::

    adapter_model.safetensors, adapter_config.json   the SimCSE LoRA, PEFT format, on the decoder with the
                                                     MNTP adapter already merged (llm2vec's key layout)
    tokenizer files                                  with the pad token the run used
    bg2vec_config.json                               {"format_version": 1, "stage": "simcse",
                                                      "base_model_name_or_path": the base as given,
                                                      "mntp_adapter": absolute folder or Hub id, or null,
                                                      "pooling_mode", "max_length", "skip_instruction": true,
                                                      "bidirectional", "torch_dtype", versions, training_config}
    metrics.json, simcse_curves.png                  the run table, log history, eval figures, pair similarities

To rebuild the encoder: load the base, apply `mntp_adapter` and merge it, apply this folder's adapter, switch
attention to bidirectional, pool `pooling_mode` over the text tokens. llm2vec's two-step form gives the same
model: `backbone.load_decoder(MNTP_OUTPUT_DIR, SIMCSE_OUTPUT_DIR)`. There is deliberately no config.json here,
so this folder is never mistaken for a "base with an embedded adapter" (which would skip the MNTP merge).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..encoding.embedding import embed_features

# --- the objective ------------------------------------------------------------------------------------------


def info_nce_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    scale: float = 20.0,
    negatives: torch.Tensor | None = None,
    symmetric: bool = False,
    hard_negative_weight: float = 0.0,
    positive_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE over in-batch (and hard) negatives: SimCSE's loss, llm2vec's HardNegativeNLLLoss, and
    sentence-transformers' MultipleNegativesRankingLoss.

    anchors (N, H), positives (N, H), negatives (M, H) or None → a scalar. Row i of `anchors` must pick row i of
    `positives` among every positive and every negative: cross-entropy over cosine similarities times `scale`
    (= 1/temperature; 20 ↔ τ = 0.05, SimCSE's and llm2vec's choice). Options beyond llm2vec's loss:
    - `positive_ids` (N,): rows with the same id hold the same positive text; they are never each other's negative;
    - `symmetric`: add the reverse term (each positive picks its anchor among all anchors), averaged with it;
    - `hard_negative_weight` w > 0: add log(w) to the logits of the hard negatives (`negatives`), weighting them.

    >>> info_nce_loss(torch.eye(2), torch.eye(2))  # log(1 + e^-20): each anchor is far closest to its positive
    """
    if anchors.shape != positives.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} must have one shape")
    queries = F.normalize(anchors.float(), dim=-1)  # (N, H)
    documents = F.normalize(positives.float(), dim=-1)  # (N, H)
    n = queries.shape[0]
    scores = queries @ documents.T * scale  # (N, N): the diagonal holds the positive pairs
    if positive_ids is not None:  # the same positive elsewhere in the batch is not a negative
        same = positive_ids[:, None] == positive_ids[None, :]  # (N, N)
        scores = scores.masked_fill(same & ~torch.eye(n, dtype=torch.bool, device=scores.device), float("-inf"))
    if negatives is not None and negatives.shape[0] > 0:
        hard = queries @ F.normalize(negatives.float(), dim=-1).T * scale  # (N, M)
        if hard_negative_weight > 0:
            hard = hard + math.log(hard_negative_weight)
        scores = torch.cat([scores, hard], dim=1)  # (N, N + M)
    targets = torch.arange(n, device=scores.device)  # (N,)
    loss = F.cross_entropy(scores, targets)
    if symmetric:  # each positive picks its own anchor among all anchors
        reverse = documents @ queries.T * scale  # (N, N)
        if positive_ids is not None:
            reverse = reverse.masked_fill(same & ~torch.eye(n, dtype=torch.bool, device=reverse.device), float("-inf"))
        loss = (loss + F.cross_entropy(reverse, targets)) / 2
    return loss


class _GatherWithGradient(torch.autograd.Function):
    """all_gather of (n_r, H) rows of every process r, sizes may differ; backward keeps this process's rows.

    Every process computes the loss over the whole gathered batch, so every process's loss depends on these
    rows: backward sums the incoming gradients over processes (all_reduce) and returns this process's slice.
    DDP then averages parameter gradients over the W processes, which cancels the factor W the sum brings in:
    the result is the gradient of the single-process loss on the global batch.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # local (n_r, H)
        world = dist.get_world_size()
        size = torch.tensor([local.shape[0]], device=local.device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        padded = local.new_zeros((max(counts), *local.shape[1:]))  # (n_max, H): all_gather needs one shape
        padded[: local.shape[0]] = local
        gathered = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded.contiguous())
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(counts[:rank]), sum(counts[: rank + 1])
        return torch.cat([rows[:n] for rows, n in zip(gathered, counts)])  # (N, H), N = sum of n_r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # grad (N, H)
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad)  # sum over processes
        return grad[ctx.start : ctx.stop]  # (n_r, H)


def gather_across_processes(local: torch.Tensor) -> torch.Tensor:
    """Rows of every process in rank order, (N, H); this process's rows keep their gradient. One process: as is."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    return _GatherWithGradient.apply(local)


def simcse_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    scale: float,
    across_processes: bool = True,
    negatives: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """`info_nce_loss` over the global batch: under several processes every process's texts (hard negatives
    included) are negatives, gathered with their gradients.

    anchors, positives (n_r, H), negatives (m_r, H) on this process → the same scalar on every process.
    `across_processes=False` keeps each process to its own texts (for processes that do not train one model
    together). `options` go to `info_nce_loss` (`symmetric`, `hard_negative_weight`, `positive_ids`, gathered too),
    or with `matryoshka_dims` (and `matryoshka_weights`) to `matryoshka_loss`.
    """
    dims, weights = options.pop("matryoshka_dims", None), options.pop("matryoshka_weights", None)
    if across_processes:
        if options.get("positive_ids") is not None:
            options["positive_ids"] = gather_across_processes(options["positive_ids"])
        negatives = gather_across_processes(negatives) if negatives is not None else None
        anchors, positives = gather_across_processes(anchors), gather_across_processes(positives)
    if dims:
        return matryoshka_loss(anchors, positives, scale, dims, weights, negatives, **options)
    return info_nce_loss(anchors, positives, scale, negatives, **options)


def matryoshka_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    scale: float,
    dims: list[int],
    weights: list[float] | None = None,
    negatives: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """Σ_d w_d · info_nce_loss on the first d values of every embedding (sentence-transformers' MatryoshkaLoss):
    each prefix is trained to work alone. anchors, positives (N, H), negatives (M, H); weights default to 1."""
    weights = weights or [1.0] * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} matryoshka_weights for {len(dims)} matryoshka_dims")
    return sum(
        weight * info_nce_loss(anchors[:, :d], positives[:, :d], scale,
                               negatives[:, :d] if negatives is not None else None, **options)
        for d, weight in zip(dims, weights)
    )


# --- what the embeddings look like (Wang & Isola 2020, arXiv 2005.10242) ---------------------------------------


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """Mean ||x_i - y_i||^alpha of L2-normalised positive pairs: lower = positives closer (0 = identical)."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)  # (N, H) each
    return (x - y).norm(dim=1).pow(alpha).mean().item()


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||x_i - x_j||^2) over pairs i < j of L2-normalised embeddings: lower = more evenly spread
    over the sphere (about -4 for well-spread vectors, 0 when everything collapses to one point)."""
    x = F.normalize(x.float(), dim=-1)  # (N, H)
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log().item()  # pdist: (N*(N-1)/2,)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (ties get their average rank), as STS benchmarks report it."""
    return torch.corrcoef(torch.stack([_ranks(a.double()), _ranks(b.double())]))[0, 1].item()


def _ranks(values: torch.Tensor) -> torch.Tensor:
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=values.dtype)
    for value in values.unique():  # average the ranks of ties
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


# --- gradient caching -------------------------------------------------------------------------------------------


class RandomState:
    """The CPU and accelerator RNG states at one moment, to replay the same dropout masks later."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.accelerator = None
        if device.type != "cpu":
            self.accelerator = torch.get_device_module(device.type).get_rng_state(device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.accelerator is not None:
            torch.get_device_module(self.device.type).set_rng_state(self.accelerator, self.device)


def grad_cache_step(
    encode: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    chunks: list[dict[str, torch.Tensor]],
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One step of gradient caching, as sentence-transformers' CachedMultipleNegativesRankingLoss does it:

    1. embed each mini-batch (`chunks`) without a graph, noting the RNG state before each;
    2. compute the loss on all embeddings at once and its gradient with respect to the embeddings;
    3. embed each mini-batch again, with a graph and the *same* RNG state (so the same dropout masks), and
       back-propagate the cached gradient through it (`backward` of the surrogate sum(embedding * gradient)).

    Only one mini-batch's activations are alive at a time; the loss and parameter gradients are those of the
    whole batch. `no_sync` silences DDP's gradient all-reduce for all but the last mini-batch. Returns the loss.
    """
    states, pieces = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(chunk["input_ids"].device))
            pieces.append(encode(chunk))  # (b, H)
    embeddings = torch.cat(pieces).detach().requires_grad_()  # (2B, H)
    loss = loss_of(embeddings)
    loss.backward()
    cached = embeddings.grad.split([piece.shape[0] for piece in pieces])  # (b, H) each
    for i, (chunk, state, gradient) in enumerate(zip(chunks, states, cached)):
        state.restore()
        with no_sync() if i < len(chunks) - 1 else contextlib.nullcontext():
            backward((encode(chunk) * gradient).sum())
    return loss.detach()


def two_views(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch twice over, (B, T) → (2B, T): rows i and B+i are the two dropout views of text i."""
    return {name: torch.cat([value, value]) for name, value in inputs.items()}


def split_rows(inputs: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Mini-batches of at most `size` rows."""
    rows = inputs["input_ids"].shape[0]
    return [{name: value[start : start + size] for name, value in inputs.items()} for start in range(0, rows, size)]


# --- the model ----------------------------------------------------------------------------------------------


def set_attention_dropout(decoder: nn.Module, p: float) -> None:
    """Dropout `p` on the attention weights of every layer (and in the config, so it is recorded).

    transformers' attention modules copy `config.attention_dropout` at construction, so changing the config of
    a loaded model is not enough; this sets both. Raises `ConfigError` if no module applies attention dropout.
    """
    configs = [decoder.config, getattr(decoder.config, "text_config", None)]
    for config in filter(None, configs):
        config.attention_dropout = p
    modules = [m for m in decoder.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
    if p > 0 and not modules:
        raise ConfigError(
            "simcse_dropout",
            p,
            f"a model whose attention applies dropout; model_type '{decoder.config.model_type}' has none",
            fix="use a Mistral, Llama, Qwen2 or Gemma decoder",
        )
    for module in modules:
        module.attention_dropout = p


class SimCSEModel(nn.Module):
    """The encoder being trained: a (LoRA-wrapped) bidirectional decoder and pooling over the text tokens.

    `forward` maps a padded batch to one float32 embedding per row, (B, H). In train mode dropout is active,
    so the same text gives a different embedding each time; in eval mode it is deterministic.
    """

    def __init__(self, decoder: nn.Module, pooling_mode: str, bos_token_id: int | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.pooling_mode = pooling_mode
        self.bos_token_id = bos_token_id

    @property
    def config(self):
        return self.decoder.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pooling_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # position_ids: given for left-padded batches built as the encoder builds them (supervised training)
        features = {"input_ids": input_ids, "attention_mask": attention_mask, "pooling_mask": pooling_mask,
                    "position_ids": position_ids}  # (B, T) each
        return embed_features(self.decoder, features, self.pooling_mode, self.bos_token_id)  # (B, H), as encode's

    def save_pretrained(self, output_dir: str | Path, state_dict: dict | None = None) -> None:
        """Write the SimCSE LoRA adapter (PEFT format); from `state_dict` (this model's keys) when the Trainer
        gathered one (FSDP, DeepSpeed ZeRO-3)."""
        from .mntp import submodule_state

        self.decoder.save_pretrained(str(output_dir), state_dict=submodule_state(state_dict, "decoder"))

    def load_trained_weights(self, folder: str | Path) -> None:
        """Load the adapter written by `save_pretrained`: used on resume."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = load_file(str(Path(folder) / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.decoder, adapter)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"checkpoint {folder} has adapter keys this model lacks: {result.unexpected_keys[:3]}")


@torch.no_grad()
def held_out_embeddings(
    model: SimCSEModel, batches: Iterable[dict[str, torch.Tensor]], seed: int, gather: Callable = lambda t: t
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every row: the deterministic embedding (eval mode) and two dropout views (train mode), (N, H) each.

    The dropout masks come from `seed`, so every evaluation sees the same ones, and the training RNG is left
    untouched (resuming reproduces an uninterrupted run). `gather` collects rows from all processes.
    """
    device = next(model.parameters()).device
    accelerators = [device] if device.type != "cpu" else []
    was_training = model.training
    plain, anchors, positives = [], [], []
    with torch.random.fork_rng(devices=accelerators, device_type=device.type if accelerators else "cuda"):
        torch.manual_seed(seed)
        for batch in batches:
            batch = {name: value.to(device) for name, value in batch.items()}
            model.eval()
            plain.append(gather(model(**batch)))  # (b, H)
            model.train()
            first, second = model(**two_views(batch)).chunk(2)  # (b, H) each
            anchors.append(gather(first))
            positives.append(gather(second))
    model.train(was_training)
    return torch.cat(plain), torch.cat(anchors), torch.cat(positives)


@torch.no_grad()
def pair_similarities(
    model: SimCSEModel, first: list[dict], second: list[dict], collate: Callable, batch_size: int
) -> list[float]:
    """Cosine similarity of each (first[i], second[i]) pair of tokenized texts, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def embed(examples: list[dict]) -> torch.Tensor:  # (N, H)
        batches = (collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size))
        return torch.cat([model(**{k: v.to(device) for k, v in batch.items()}) for batch in batches])

    similarities = F.cosine_similarity(embed(first), embed(second), dim=-1)  # (N,)
    model.train(was_training)
    return similarities.tolist()


def evaluation_figures(
    plain: torch.Tensor, anchors: torch.Tensor, positives: torch.Tensor, batch_size: int, scale: float
) -> dict[str, Any]:
    """Held-out figures: the contrastive loss (in batches of the training batch size, so it compares with the
    training loss), alignment of the two dropout views, uniformity of the deterministic embeddings."""
    losses, weights = [], []
    for start in range(0, anchors.shape[0], batch_size):
        a, p = anchors[start : start + batch_size], positives[start : start + batch_size]  # (b, H) each
        if a.shape[0] > 1:  # a batch of one has no negatives
            losses.append(info_nce_loss(a, p, scale).item() * a.shape[0])
            weights.append(a.shape[0])
    return {
        "loss": sum(losses) / sum(weights) if weights else float("nan"),
        "alignment": alignment(anchors, positives),
        "uniformity": uniformity(plain),
    }
