"""The sentence-transformers export, loaded by the real sentence-transformers package with no bg2vec code."""

from __future__ import annotations

import json
import numpy as np
import pytest

from bg2vec import Bg2Vec
from bg2vec.errors import ConfigError
from bg2vec.encoding.export import export_sentence_transformers
from test_encoder import with_settings

sentence_transformers = pytest.importorskip("sentence_transformers")

TEXTS = [
    "София е столицата на България.",
    "The quick brown fox jumps over the lazy dog, and then it sleeps.",
    "Short.",
    "Bidirectional attention lets every token see the whole sentence.",
]


@pytest.fixture(scope="module")
def encoder(tiny_model_dirs) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float32")


@pytest.mark.parametrize(
    "mode, skip_instruction",
    [("mean", True), ("mean", False), ("weighted_mean", False), ("last_token", True), ("bos_token", True)],
)
def test_sentence_transformers_gives_bg2vec_embeddings(encoder, tmp_path, mode, skip_instruction):
    encoder = with_settings(encoder, pooling_mode=mode, skip_instruction=skip_instruction)
    path = export_sentence_transformers(encoder, tmp_path / "st")
    model = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=3), encoder.encode(TEXTS, batch_size=2), atol=1e-5)


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
