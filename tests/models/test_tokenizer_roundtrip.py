"""The MNTP tokenizer travels unchanged: prepared, saved and reloaded, it tokenizes text as the base does.

Checked on Mistral's real sentencepiece vocabulary (`tokenizer.model.v1`, shipped by mistral-common), where
the blank mask "_" is the ordinary piece 28730 and occurs inside words.
"""

from __future__ import annotations

from pathlib import Path

import mistral_common  # the test extra installs it: this file must run, not skip
import pytest
import torch
from transformers import AutoTokenizer, LlamaTokenizer
from transformers.tokenization_utils_base import generate_merges

from bg2vec.objectives.masking import IGNORE_INDEX, MaskToken, MNTPCollator, prepare_tokenizer

MISTRAL_V1 = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
BLANK_ID, EOS_ID, VOCAB_SIZE = 28730, 2, 32000  # Mistral 7B v0.1's "_", "</s>" and vocabulary size

TEXTS = [
    "snake_case file_name",
    "a _ b",
    "__init__.py",
    "x_1 = y__2 + _z_",
    "София е столицата на България.",
    "Пловдив_е стар_град, а _Варна_ е на морето.",
    "Hello world.",
    "  two  spaces\nand a newline",
]


def sentencepiece_pieces(path: Path) -> list[str]:
    """The pieces of a sentencepiece ModelProto, in id order.

    transformers reads a .model file only with both sentencepiece and protobuf installed; the pieces are all a
    BPE tokenizer needs (transformers derives the merges from their order), so this reads the protobuf wire
    format directly: ModelProto field 1 is each SentencePiece, whose field 1 is the piece's text.
    """
    def varint(data: bytes, i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, i

    def fields(data: bytes):
        i = 0
        while i < len(data):
            key, i = varint(data, i)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value, i = varint(data, i)
            elif wire_type == 2:
                size, i = varint(data, i)
                value, i = data[i : i + size], i + size
            else:  # 1: 8 fixed bytes, 5: 4 fixed bytes (scores)
                size = {1: 8, 5: 4}[wire_type]
                value, i = data[i : i + size], i + size
            yield number, value

    return [dict(fields(piece))[1].decode() for number, piece in fields(path.read_bytes()) if number == 1]


@pytest.fixture(scope="module")
def mistral_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = {piece: i for i, piece in enumerate(sentencepiece_pieces(MISTRAL_V1))}
    return vocab, generate_merges(vocab)


@pytest.fixture
def mistral(mistral_vocabulary):
    """A fresh Mistral v1 tokenizer (BOS first, as Mistral's tokenizer_config says) for each call."""
    vocab, merges = mistral_vocabulary
    return lambda: LlamaTokenizer(vocab=dict(vocab), merges=list(merges), add_bos_token=True)


def saved_and_reloaded(tokenizer, folder: Path):
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts)["input_ids"]


def test_this_is_mistrals_vocabulary(mistral):
    tokenizer = mistral()
    assert len(tokenizer) == VOCAB_SIZE
    assert tokenizer("Hello")["input_ids"] == [1, 22557]
    assert tokenizer.convert_ids_to_tokens(ids(tokenizer, ["snake_case"])[0]) == ["<s>", "▁snake", "_", "case"]


def test_blank_mask_leaves_tokenization_unchanged_after_save_and_load(mistral, tmp_path):
    base, prepared = mistral(), mistral()
    assert prepare_tokenizer(prepared, "blank") == MaskToken(id=BLANK_ID, text="_", added=False)
    reloaded = saved_and_reloaded(prepared, tmp_path)
    assert ids(prepared, TEXTS) == ids(base, TEXTS), "in memory"
    assert ids(reloaded, TEXTS) == ids(base, TEXTS), "saved and reloaded"
    assert len(reloaded) == VOCAB_SIZE and "_" not in reloaded.get_added_vocab()
    assert reloaded.pad_token == "</s>", "pad = eos travels with the tokenizer"


def test_collator_masks_with_the_blank_id(mistral):
    tokenizer = mistral()
    mask = prepare_tokenizer(tokenizer, "blank")
    collator = MNTPCollator.for_tokenizer(tokenizer, mask, mlm_probability=0.5, collator_type="all_mask")
    examples = [{"input_ids": row} for row in ids(tokenizer, TEXTS * 8)]
    batch = collator(examples)
    chosen = batch["labels"] != IGNORE_INDEX  # (B, T)
    assert chosen.any()
    assert (batch["input_ids"][chosen] == BLANK_ID).all(), "chosen positions become the '_' piece"
    assert (batch["labels"][chosen] != BLANK_ID).all(), "a '_' of the text is never chosen: it looks masked"
    original = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(e["input_ids"]) for e in examples], batch_first=True, padding_value=tokenizer.pad_token_id
    )
    assert (original == BLANK_ID).any(), "the texts do contain '_'"
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])


def test_eos_mask_leaves_tokenization_unchanged_after_save_and_load(mistral, tmp_path):
    base, prepared = mistral(), mistral()
    assert prepare_tokenizer(prepared, "eos") == MaskToken(id=EOS_ID, text="</s>", added=False)
    reloaded = saved_and_reloaded(prepared, tmp_path)
    assert ids(reloaded, TEXTS) == ids(base, TEXTS)
    assert len(reloaded) == VOCAB_SIZE


def test_new_mask_token_is_one_new_id_and_changes_nothing_else(mistral, tmp_path):
    base, prepared = mistral(), mistral()
    assert prepare_tokenizer(prepared, "mask") == MaskToken(id=VOCAB_SIZE, text="<mask>", added=True)
    reloaded = saved_and_reloaded(prepared, tmp_path)
    assert ids(reloaded, TEXTS) == ids(base, TEXTS)
    assert len(reloaded) == VOCAB_SIZE + 1 and reloaded.mask_token_id == VOCAB_SIZE
    assert reloaded("snake_case <mask> file_name")["input_ids"].count(VOCAB_SIZE) == 1, "<mask> is one token"
