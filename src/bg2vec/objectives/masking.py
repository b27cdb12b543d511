"""Mask-token choice and the MNTP collators.

Decoder tokenizers have no mask token. As in llm2vec, we pick one (`blank` = "_", `eos`, or a new `<mask>`)
only when the tokenizer has none, and set pad = eos when pad is missing. Unlike llm2vec, `blank` and `eos` are
used by id and never registered as the tokenizer's mask token: a registered "_" becomes an added token, which
the saved tokenizer cuts out of every word (`snake_case`), so it would tokenize text unlike the base model's.

Collators (both pad on the right and never choose special tokens, the mask token or padding):
- `all_mask`: each token is chosen with probability p and replaced by the mask token;
- `default`: BERT's 80% mask / 10% random token / 10% unchanged among the chosen tokens.
Labels hold the original id at chosen positions and -100 elsewhere. The MNTP shift (predict token i from
position i-1) is *not* applied here; it is written out in `mntp.py`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import PreTrainedTokenizerBase, TrainerCallback

from ..errors import ConfigError
from .choices import COLLATOR_TYPES, MASK_TOKEN_TYPES

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MaskToken:
    """The token that masked positions become."""

    id: int
    text: str
    added: bool  # new to the vocabulary: the model's embeddings must be resized to len(tokenizer)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, mask_token_type: str) -> MaskToken:
    """Give `tokenizer` a pad token (its EOS) if it has none, and choose the mask token: the tokenizer's own,
    else `mask_token_type`'s. Only `mask` changes the vocabulary (adds the special token `<mask>`); the others
    leave tokenization of any text as it was, in memory and once saved.

    >>> prepare_tokenizer(mistral_tokenizer, "blank")
    MaskToken(id=28730, text='_', added=False)
    """
    if mask_token_type not in MASK_TOKEN_TYPES:
        raise ConfigError("mask_token_type", mask_token_type, "one of " + ", ".join(MASK_TOKEN_TYPES))
    if tokenizer.eos_token is None and tokenizer.pad_token is None:
        raise ConfigError(
            "tokenizer",
            tokenizer.name_or_path,
            "a tokenizer with an eos or pad token",
            fix="use the model's own tokenizer, or add an eos token to it",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.mask_token is not None:
        return MaskToken(tokenizer.mask_token_id, tokenizer.mask_token, added=False)
    if mask_token_type == "mask":
        added = tokenizer.add_special_tokens({"mask_token": "<mask>"}) > 0
        return MaskToken(tokenizer.mask_token_id, tokenizer.mask_token, added)
    if mask_token_type == "eos":
        if tokenizer.eos_token is None:
            raise ConfigError(
                "mask_token_type", "eos", "a tokenizer with an eos token", fix="use mask_token_type blank or mask"
            )
        return MaskToken(tokenizer.eos_token_id, tokenizer.eos_token, added=False)
    blank_id = tokenizer.convert_tokens_to_ids("_")
    if blank_id is None or blank_id == tokenizer.unk_token_id:
        raise ConfigError(
            "mask_token_type",
            "blank",
            "a tokenizer whose vocabulary has the single token '_'",
            fix="use mask_token_type mask (adds <mask>) or eos",
        )
    return MaskToken(blank_id, "_", added=False)


@dataclass
class MNTPCollator:
    """Pads a list of `{"input_ids": [...]}` examples and masks them for MNTP.

    Each row's mask is a function of (`seed`, `epoch`, the row's own tokens), drawn from a generator of its own:
    whatever the batch size, gradient accumulation or number of processes, an example is masked alike (so two
    processes of 2 rows train what one process of 4 does), a resumed run masks exactly as an uninterrupted one,
    every evaluation scores the same masked positions, and each epoch gets fresh masks (`MaskingEpoch` sets it).
    """

    mask_token_id: int
    pad_token_id: int
    special_token_ids: Sequence[int]
    vocab_size: int
    mlm_probability: float = 0.15
    collator_type: str = "default"
    seed: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.collator_type not in COLLATOR_TYPES:
            raise ConfigError("data_collator_type", self.collator_type, "one of " + ", ".join(COLLATOR_TYPES))
        if not 0.0 < self.mlm_probability <= 1.0:
            raise ConfigError("mlm_probability", self.mlm_probability, "a value in (0, 1]")
        self._special = torch.tensor(sorted(set(self.special_token_ids)), dtype=torch.long)

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, mask: MaskToken, **kwargs: Any) -> MNTPCollator:
        """A collator masking with `mask` (from `prepare_tokenizer`) and `tokenizer`'s pad and special tokens.
        The mask token is never chosen either, as in llm2vec, where "_" was a special token.

        >>> collator = MNTPCollator.for_tokenizer(tokenizer, prepare_tokenizer(tokenizer, "blank"), mlm_probability=0.2)
        """
        return cls(
            mask_token_id=mask.id,
            pad_token_id=tokenizer.pad_token_id,
            special_token_ids=[*tokenizer.all_special_ids, mask.id],
            vocab_size=len(tokenizer),
            **kwargs,
        )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self.pad([example["input_ids"] for example in examples])
        input_ids, labels = self.mask(input_ids, attention_mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def pad(self, sequences: list[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest sequence: (B, T) ids and (B, T) attention mask."""
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
            attention_mask[row, : len(sequence)] = 1
        return input_ids, attention_mask

    def generator_for(self, row_ids: torch.Tensor) -> torch.Generator:
        """A generator seeded by `seed`, `epoch` and one row's token ids (no padding)."""
        message = row_ids.numpy().tobytes() + self.epoch.to_bytes(8, "little")
        digest = hashlib.blake2b(message, digest_size=8, key=str(self.seed).encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose and corrupt tokens, row by row (each from its own generator); returns (corrupted ids, labels), (B, T)."""
        input_ids = input_ids.clone()
        labels = input_ids.clone()
        eligible = attention_mask.bool() & ~torch.isin(input_ids, self._special)  # (B, T)
        for row in range(input_ids.shape[0]):
            length = int(attention_mask[row].sum())  # right-padded: the row's tokens come first
            ids, row_labels = input_ids[row, :length], labels[row, :length]  # views: (L,) each
            generator = self.generator_for(ids)  # hashed before any token of the row changes
            chosen = torch.bernoulli(torch.full((length,), self.mlm_probability), generator=generator).bool()
            chosen &= eligible[row, :length]
            row_labels[~chosen] = IGNORE_INDEX
            if self.collator_type == "all_mask":
                ids[chosen] = self.mask_token_id
                continue
            replace = torch.bernoulli(torch.full((length,), 0.8), generator=generator).bool() & chosen
            randomize = torch.bernoulli(torch.full((length,), 0.5), generator=generator).bool() & chosen & ~replace
            random_ids = torch.randint(self.vocab_size, (length,), dtype=torch.long, generator=generator)
            ids[replace] = self.mask_token_id
            ids[randomize] = random_ids[randomize]
        labels[~attention_mask.bool()] = IGNORE_INDEX
        return input_ids, labels


class MaskingEpoch(TrainerCallback):
    """Tells the collator which epoch is starting, so every epoch masks afresh (resumed runs included)."""

    def __init__(self, collator: MNTPCollator) -> None:
        self.collator = collator

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.collator.epoch = math.floor(state.epoch + 1e-9)  # a resumed run starts inside its epoch
        return control
