"""The sentence-transformers export, loaded by the real sentence-transformers package with no bg2vec code."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import sentence_transformers
from transformers import AutoTokenizer

from bg2vec import Bg2Vec
from bg2vec.errors import ConfigError
from bg2vec.encoding.export import export_sentence_transformers
from test_encoder import with_settings


TEXTS = [  # 2 to 38 tokens: every batch below is padded
    "София е столицата на България.",
    "The quick brown fox jumps over the lazy dog, and then it sleeps.",
    "Short.",
    "a",
    "Bidirectional attention lets every token see the whole sentence.",
]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dirs, tmp_path_factory):
    """The tiny Mistral with a tokenizer that saves padding_side "left" (as many Hub tokenizers do)."""
    folder = tmp_path_factory.mktemp("left-padded") / "mistral"
    shutil.copytree(tiny_model_dirs["mistral"], folder)
    AutoTokenizer.from_pretrained(folder, padding_side="left", truncation_side="left").save_pretrained(folder)
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    assert saved["padding_side"] == saved["truncation_side"] == "left"
    return folder


@pytest.fixture(scope="module")
def encoder(model_dir) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(model_dir), torch_dtype="float32")


@pytest.mark.parametrize(
    "mode, skip_instruction",
    [("mean", True), ("mean", False), ("weighted_mean", False), ("last_token", True), ("last_token", False),
     ("bos_token", True)],
)
def test_sentence_transformers_gives_bg2vec_embeddings(encoder, tmp_path, mode, skip_instruction):
    encoder = with_settings(encoder, pooling_mode=mode, skip_instruction=skip_instruction)
    path = export_sentence_transformers(encoder, tmp_path / "st")
    model = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    expected = encoder.encode(TEXTS, batch_size=2)  # (N, H)
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=len(TEXTS)), expected, atol=1e-5)
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=2), expected, atol=1e-5)


def test_exported_tokenizer_pads_and_truncates_on_the_right(encoder, tmp_path):
    path = export_sentence_transformers(encoder, tmp_path / "st")
    saved = json.loads((path / "tokenizer_config.json").read_text())
    assert saved["padding_side"] == saved["truncation_side"] == "right"
    model = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    assert model[0].tokenizer.padding_side == model[0].tokenizer.truncation_side == "right"
    attention_mask = model.tokenize(TEXTS)["attention_mask"]  # (N, T)
    assert attention_mask[:, 0].all() and not attention_mask[:, -1].all(), "padding at the end of each row"
    assert encoder.tokenizer.padding_side == "left", "the encoder's own tokenizer is untouched"


def test_export_merges_the_adapter_and_describes_itself(tiny_model_dirs, tmp_path):
    from test_encoder import lora_adapter

    adapter = str(lora_adapter(tiny_model_dirs["mistral"], tmp_path / "adapter"))
    encoder = Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), adapter, torch_dtype="float32")
    path = export_sentence_transformers(encoder, tmp_path / "st", prompts={"query": "Retrieve similar sentences: "})
    model = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    np.testing.assert_allclose(model.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)
    assert json.loads((path / "config.json").read_text())["is_causal"] is False, "bidirectional travels in config.json"
    assert model.prompts["query"] == "Retrieve similar sentences: "
    card = (path / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "`query`" in card
    assert not (path / "adapter_config.json").exists()
    reloaded = Bg2Vec.from_pretrained(str(path), torch_dtype="float32")
    np.testing.assert_allclose(reloaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)


@pytest.mark.parametrize("mode, skip_instruction", [("eos_token", True), ("weighted_mean", True)])
def test_settings_without_an_exact_equivalent_are_refused(encoder, tmp_path, mode, skip_instruction):
    encoder = with_settings(encoder, pooling_mode=mode, skip_instruction=skip_instruction)
    with pytest.raises(ConfigError, match="pooling_mode"):
        export_sentence_transformers(encoder, tmp_path / "st")
    assert not (tmp_path / "st").exists(), "nothing is written before the check"
