import pytest
import torch
from transformers import AutoTokenizer

from bg2vec.errors import ConfigError
from bg2vec.objectives.masking import IGNORE_INDEX, MaskToken, MNTPCollator, prepare_tokenizer

MASK, PAD, BOS, EOS, VOCAB = 3, 0, 1, 2, 100


def collator(kind, p, seed=0):
    return MNTPCollator(
        mask_token_id=MASK,
        pad_token_id=PAD,
        special_token_ids=[PAD, BOS, EOS, MASK],
        vocab_size=VOCAB,
        mlm_probability=p,
        collator_type=kind,
        seed=seed,
    )


def examples(n=64, length=200):
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        body = torch.randint(10, VOCAB, (length - 2 - (i % 7),), generator=g).tolist()
        rows.append({"input_ids": [BOS, *body, EOS]})
    return rows


@pytest.mark.parametrize("p", [0.15, 0.8])
def test_all_mask_statistics_and_special_token_safety(p):
    batch = collator("all_mask", p)(examples())
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    chosen = labels != IGNORE_INDEX
    eligible = mask.bool() & (ids != BOS) & (ids != EOS) & (ids != PAD) | chosen
    rate = chosen.sum() / eligible.sum()
    assert abs(rate.item() - p) < 0.02
    assert (ids[chosen] == MASK).all(), "all_mask replaces every chosen token"
    assert (ids[:, 0] == BOS).all() and not chosen[:, 0].any(), "BOS is never chosen"
    assert not chosen[mask == 0].any(), "padding is never chosen"
    assert not (labels[chosen] < 10).any(), "labels hold the original (non-special) ids"


def test_default_is_80_10_10():
    batch = collator("default", 0.5)(examples(n=128))
    original = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(e["input_ids"]) for e in examples(n=128)], batch_first=True, padding_value=PAD
    )
    chosen = batch["labels"] != IGNORE_INDEX
    assert (batch["labels"][chosen] == original[chosen]).all()
    ids = batch["input_ids"][chosen]
    masked = (ids == MASK).float().mean().item()
    kept = (ids == original[chosen]).float().mean().item()
    randomised = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02
    # A random replacement can hit the original id (1/VOCAB of the time): kept ≈ 0.1 + 0.1/VOCAB.
    assert abs(kept - 0.1) < 0.02 and abs(randomised - 0.1) < 0.02
    assert (batch["input_ids"][~chosen] == original[~chosen]).all(), "unchosen tokens are untouched"


def test_reproducible_under_a_seed():
    a = collator("all_mask", 0.3, seed=5)(examples())
    b = collator("all_mask", 0.3, seed=5)(examples())
    c = collator("all_mask", 0.3, seed=6)(examples())
    assert torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])


@pytest.mark.parametrize("kind", ["all_mask", "default"])
def test_a_row_is_masked_alike_in_any_batch_and_afresh_each_epoch(kind):
    """Masks are per row: batch size, batch companions, padding, accumulation and processes change nothing."""
    rows, masker = examples(n=8), collator(kind, 0.4, seed=3)
    whole = masker(rows)
    for part in (rows[:3], rows[3:], rows[5:7][::-1]):
        batch = masker(part)
        for i, row in enumerate(part):
            j, n = rows.index(row), len(row["input_ids"])
            assert torch.equal(batch["input_ids"][i, :n], whole["input_ids"][j, :n])
            assert torch.equal(batch["labels"][i, :n], whole["labels"][j, :n])
    masker.epoch = 1
    assert not torch.equal(masker(rows)["labels"], whole["labels"])


def test_masking_epoch_follows_the_trainer_state():
    from types import SimpleNamespace

    from bg2vec.objectives.masking import MaskingEpoch

    masker = collator("all_mask", 0.3)
    for epoch, expected in ((0.0, 0), (1.0, 1), (2.5, 2)):  # 2.5: a run resumed inside its third epoch
        MaskingEpoch(masker).on_epoch_begin(None, SimpleNamespace(epoch=epoch), None)
        assert masker.epoch == expected


def test_padding_is_right_sided_with_attention_mask():
    batch = collator("all_mask", 0.5)([{"input_ids": [BOS, 11, 12]}, {"input_ids": [BOS, 11, 12, 13, 14]}])
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert (batch["input_ids"][0, 3:] == PAD).all()


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5])
def test_mlm_probability_out_of_range(p):
    with pytest.raises(ConfigError, match="mlm_probability"):
        collator("all_mask", p)


def test_prepare_tokenizer_mask_types(tokenizer_dir):
    blank = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert prepare_tokenizer(blank, "blank") == MaskToken(blank.convert_tokens_to_ids("_"), "_", added=False)
    assert blank.mask_token is None, "'_' stays an ordinary token"
    assert blank.pad_token == blank.eos_token
    eos = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert prepare_tokenizer(eos, "eos") == MaskToken(eos.eos_token_id, eos.eos_token, added=False)
    added = AutoTokenizer.from_pretrained(tokenizer_dir)
    size = len(added)
    assert prepare_tokenizer(added, "mask") == MaskToken(size, "<mask>", added=True)
    assert added.mask_token == "<mask>" and len(added) == size + 1


def test_existing_mask_token_is_kept(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_special_tokens({"mask_token": "[MASK]"})
    assert prepare_tokenizer(tokenizer, "blank") == MaskToken(tokenizer.mask_token_id, "[MASK]", added=False)


def test_tokenizer_without_eos_or_pad_is_an_error(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.eos_token = None
    with pytest.raises(ConfigError, match="eos"):
        prepare_tokenizer(tokenizer, "blank")


def test_blank_needs_a_single_underscore_token(tokenizer_dir):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1, "a": 2}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), eos_token="</s>", unk_token="<unk>"
    )
    with pytest.raises(ConfigError, match="mask_token_type"):
        prepare_tokenizer(tokenizer, "blank")
