"""Sentences → token ids and pooling spans, with llm2vec 0.2.3's semantics (`LLM2Vec.encode` / `tokenize`).

A sentence is a text or an `[instruction, text]` pair. For each one:

1. the text is cut by whole words until it has at most `doc_max_length` tokens;
2. llm2vec's chat wrapping (by exact model name, `CHAT_FORMATS`) and, for `eos_token` pooling, the EOS
   text are added around it;
3. the model input is `instruction.strip() + " " + text` (the text alone without an instruction), with the
   tokenizer's special tokens, truncated to `max_length` tokens;
4. the last n positions are the text's, n = its token count tokenized alone without special tokens: with
   `skip_instruction` only they are pooled, so BOS and the instruction are not.

llm2vec joins instruction and text with a separator string, splits it again and tokenizes every text three
times per batch; here each form of a text is tokenized once, in one batched call.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

from ..models.architectures import ARCHITECTURES
from ..errors import ConfigError

Sentence = Union[str, Sequence[str]]  # a text, or an [instruction, text] pair


@dataclass(frozen=True)
class ChatFormat:
    """The user-turn wrapping llm2vec applies to a few instruction-tuned models, found by exact model name."""

    prefix: str
    suffix: str
    append_eos: bool = True  # False where llm2vec returns before adding the EOS text (Llama-3-Instruct)


_INST = ChatFormat("[INST] ", " [/INST]")
_QWEN2 = ChatFormat("<|im_start|>user\n", "<|im_end|>")
CHAT_FORMATS: dict[str, ChatFormat] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": ChatFormat(
        "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>", append_eos=False
    ),
    "mistralai/Mistral-7B-Instruct-v0.2": _INST,
    "meta-llama/Llama-2-7b-chat-hf": _INST,
    "google/gemma-2-9b-it": ChatFormat("<bos><start_of_turn>user\n", "<end_of_turn>"),
    "Qwen/Qwen2-1.5B-Instruct": _QWEN2,
    "Qwen/Qwen2-7B-Instruct": _QWEN2,
}


@dataclass(frozen=True)
class ModelInput:
    """One tokenized sentence: the model's input ids and how many of the last positions hold the text."""

    input_ids: list[int]
    text_tokens: int


def chat_format_for(names: Sequence[str | None]) -> ChatFormat | None:
    """llm2vec's chat wrapping for the first of `names` (model references) that has one, else None."""
    for name in names:
        if name in CHAT_FORMATS:
            return CHAT_FORMATS[name]
    return None


def eos_text_for(model_type: str, tokenizer: Any, vocab_size: int) -> str:
    """The text llm2vec appends for `eos_token` pooling: its per-family text (" </s>" for Llama/Mistral,
    "<eos>" Gemma, "<|endoftext|>" Qwen2) if this tokenizer has it as one token the model knows, else its own
    EOS token (as llm2vec does for Llama 3; " </s>" would be plain characters to such a tokenizer)."""
    family = ARCHITECTURES.get(model_type)
    token_id = tokenizer.convert_tokens_to_ids(family.eos_text.strip()) if family is not None else None
    if token_id is not None and token_id != tokenizer.unk_token_id and token_id < vocab_size:
        return family.eos_text
    if tokenizer.eos_token is None:
        raise ConfigError("pooling_mode", "eos_token", "a tokenizer with an EOS token", fix="use last_token pooling")
    return tokenizer.eos_token


def with_encoder_padding(tokenizer: Any, owned: bool = False) -> Any:
    """`tokenizer` with llm2vec's padding (pad token = EOS, left side): itself if it has it already (or if `owned`:
    set in place), else a copy, so a caller's object is never changed. Padding is masked, so the pad token only
    has to be one the model knows."""
    if tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "left":
        return tokenizer
    if not owned:
        tokenizer = copy.deepcopy(tokenizer)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    return tokenizer


def check_sentences(sentences: Any) -> list[tuple[str, str]]:
    """(instruction, text) for each sentence; a clear error for anything else.

    >>> check_sentences(["a text", ["Retrieve passages:", "a query"]])
    [('', 'a text'), ('Retrieve passages:', 'a query')]
    """
    allowed = "a non-empty list of texts (str) or [instruction, text] pairs of str"
    if isinstance(sentences, str):
        raise ConfigError("sentences", sentences[:50], allowed, fix="wrap a single text in a list: encode([text])")
    try:
        items = list(sentences)
    except TypeError:
        raise ConfigError("sentences", type(sentences).__name__, allowed) from None
    if not items:
        raise ConfigError("sentences", items, allowed)
    pairs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            pairs.append(("", item))
        elif isinstance(item, Sequence) and len(item) == 2 and all(isinstance(part, str) for part in item):
            pairs.append((item[0], item[1]))
        else:
            raise ConfigError(f"sentences[{i}]", item, "a str or an [instruction, text] pair of str")
    return pairs


class InputBuilder:
    """Turns sentences into `ModelInput`s for one tokenizer and one set of encoder settings."""

    def __init__(
        self, tokenizer: Any, max_length: int, doc_max_length: int, eos_text: str | None = None, chat: ChatFormat | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.doc_max_length = doc_max_length
        self.eos_text = eos_text
        self.chat = chat
        self._wrap = _special_wrapping(tokenizer)

    def __call__(self, sentences: Any) -> list[ModelInput]:
        pairs = check_sentences(sentences)
        texts = [text for _, text in pairs]
        raw_ids = self._cut_to_doc_length(texts, self._ids(texts))
        heads, bodies = zip(*(self._head_and_body(instruction, text) for (instruction, _), text in zip(pairs, texts)))
        body_ids = self._reuse_or_tokenize(bodies, texts, raw_ids)
        full_texts = [head + body for head, body in zip(heads, bodies)]
        content_ids = self._reuse_or_tokenize(full_texts, bodies, body_ids)
        return [
            ModelInput(self._with_special_tokens(content, full), min(len(body), self.max_length))
            for content, full, body in zip(content_ids, full_texts, body_ids)
        ]

    def _head_and_body(self, instruction: str, text: str) -> tuple[str, str]:
        head = instruction.strip() + " " if instruction else ""
        wrap_eos = self.eos_text is not None and (self.chat is None or self.chat.append_eos)
        if self.chat is not None or wrap_eos:
            # llm2vec strips the joined "instruction<separator>text" string, which reaches only these two ends.
            head, text = head.lstrip(), text.rstrip()
        if self.chat is not None:
            head, text = self.chat.prefix + head, text + self.chat.suffix
        if wrap_eos:
            text = text + self.eos_text
        return head, text

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def _reuse_or_tokenize(self, texts: Sequence[str], known: Sequence[str], known_ids: list[list[int]]) -> list[list[int]]:
        """Token ids of `texts`, reusing `known_ids` wherever the text is unchanged from `known`."""
        todo = [i for i, (text, old) in enumerate(zip(texts, known)) if text != old]
        ids = list(known_ids)
        for i, new in zip(todo, self._ids([texts[i] for i in todo])):
            ids[i] = new
        return ids

    def _cut_to_doc_length(self, texts: list[str], ids: list[list[int]]) -> list[list[int]]:
        """llm2vec's cut: keep the first len(words) * doc_max_length / n words until n <= doc_max_length
        (n counted as llm2vec does, truncated at max_length). Changes `texts` in place."""
        for i, text_ids in enumerate(ids):
            n = min(len(text_ids), self.max_length)
            while n > self.doc_max_length:
                words = texts[i].split()
                texts[i] = " ".join(words[: int(len(words) * self.doc_max_length / n)])
                ids[i] = self._ids([texts[i]])[0]
                n = min(len(ids[i]), self.max_length)
        return ids

    def _with_special_tokens(self, content: list[int], text: str) -> list[int]:
        if self._wrap is None:
            return self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        prefix, suffix = self._wrap
        return prefix + content[: max(self.max_length - len(prefix) - len(suffix), 0)] + suffix


def _special_wrapping(tokenizer: Any) -> tuple[list[int], list[int]] | None:
    """(prefix, suffix) ids the tokenizer adds around any text, or None if it does more than wrap."""
    found = set()
    for probe in ("a", "Hello world.", "Здравей, свят!"):
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe)["input_ids"]
        starts = [i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain]
        if not starts:
            return None
        found.add((tuple(full[: starts[0]]), tuple(full[starts[0] + len(plain) :])))
    if len(found) != 1:
        return None
    prefix, suffix = found.pop()
    return list(prefix), list(suffix)


def collate(inputs: Sequence[ModelInput], pad_token_id: int, skip_instruction: bool) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids`, `attention_mask`, `position_ids` (counting from each row's first real token)
    and the `pooling_mask` of the positions to pool.

    A text with no tokens of its own (the empty string) pools over its whole input, as llm2vec does at batch
    size 1; llm2vec at larger batch sizes would average its padding too.
    """
    width = max(len(item.input_ids) for item in inputs)
    input_ids = torch.full((len(inputs), width), pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(inputs), width), dtype=torch.long)  # (B, T)
    pooling_mask = torch.zeros((len(inputs), width), dtype=torch.long)  # (B, T)
    for row, item in enumerate(inputs):
        length = len(item.input_ids)
        input_ids[row, width - length :] = torch.tensor(item.input_ids, dtype=torch.long)
        attention_mask[row, width - length :] = 1
        pooled = min(item.text_tokens, length) if skip_instruction and item.text_tokens > 0 else length
        pooling_mask[row, width - pooled :] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "pooling_mask": pooling_mask,
    }
