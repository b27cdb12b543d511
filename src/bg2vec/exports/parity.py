"""The parity set: fixed sentences every runtime test embeds and compares with `Bg2Vec.encode`.

Bulgarian and English, from two words to a few hundred tokens (under llm2vec's 400-token cut, which no other runtime makes), with and without an instruction; runtimes
embed them as one batch of all and one by one (a batch of one). `cosines` is the figure the docs report.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

LONG_BG = (
    "Рилският манастир е основан през X век от последователите на свети Иван Рилски и е най-големият манастир в "
    "България. Разположен е в долината на Рилска река, на 1147 метра надморска височина. През вековете е бил "
    "опожаряван и възстановяван, а днешният му вид е от XIX век. Стенописите в главната църква са дело на Захарий "
    "Зограф и други майстори от Самоковската школа. От 1983 година манастирът е в списъка на световното наследство "
    "на ЮНЕСКО."
)

PARITY_SET: list[Any] = [
    "София е столицата на България.",
    "Hi",
    "The quick brown fox jumps over the lazy dog, and then it sleeps under the old oak tree.",
    "Черно море е на изток, а Стара планина минава през средата на страната.",
    ["Намери изречения със същото значение:", "Пловдив е един от най-старите градове в Европа."],
    ["Retrieve passages that answer the question:", "What is the capital of Bulgaria?"],
    LONG_BG,
    "A sentence encoder maps text to a vector; bidirectional attention lets every token see the whole sentence.",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, H) arrays."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def joined(sentences: list[Any]) -> list[str]:
    """Each [instruction, text] pair as the one string a runtime without instructions is sent."""
    return [s if isinstance(s, str) else s[0].strip() + " " + s[1] for s in sentences]


def all_tokens_pooled_cosine(encoder: Any, sentences: list[Any] | None = None) -> float:
    """The lowest cosine, over the parity set, between bg2vec's vector and the one a runtime that pools every
    token (BOS and instruction included: TEI, vLLM, llama.cpp's MEAN) gives for the joined input."""
    from ..encoding.encoder import Bg2Vec

    sentences = sentences or PARITY_SET
    pooled_all = Bg2Vec(encoder.model, encoder.tokenizer, replace(encoder.settings, skip_instruction=False),
                        encoder.name_or_path, encoder.chat_format, encoder.plan)
    return float(cosines(encoder.encode(sentences), pooled_all.encode(joined(sentences))).min())
