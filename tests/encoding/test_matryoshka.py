"""Matryoshka embeddings (issue 12): the loss on every prefix (by hand), a SimCSE run with matryoshka_dims that
records them, encode(dim=D) and `bg2vec encode --dim`, and the sentence-transformers export's truncate_dim."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bg2vec import Bg2Vec
from bg2vec.cli import main
from bg2vec.config import SimCSEConfig
from bg2vec.encoding.export import export_sentence_transformers
from bg2vec.errors import ConfigError
from bg2vec.objectives.contrastive import info_nce_loss, matryoshka_loss, simcse_loss
from bg2vec.recipes.simcse import run_simcse

from conftest import CORPUS


def test_the_loss_is_the_weighted_sum_over_prefixes():
    torch.manual_seed(0)
    a, p, n = torch.randn(5, 8), torch.randn(5, 8), torch.randn(3, 8)
    expected = 1.0 * info_nce_loss(a[:, :2], p[:, :2], 20.0, n[:, :2]) + 0.5 * info_nce_loss(a, p, 20.0, n)
    assert torch.allclose(matryoshka_loss(a, p, 20.0, [2, 8], [1.0, 0.5], n), expected)
    assert torch.allclose(simcse_loss(a, p, 20.0, negatives=n, matryoshka_dims=[2, 8], matryoshka_weights=[1.0, 0.5]), expected)


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, corpus_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("matryoshka") / "out"
    run_simcse(SimCSEConfig(
        model_name_or_path=str(tiny_model_dirs["mistral"]), train_file=str(corpus_files["train"]), output_dir=str(out),
        max_seq_length=24, per_device_train_batch_size=8, max_steps=2, do_eval=False, save_steps=1000, lora_r=4,
        matryoshka_dims=[16, 64], matryoshka_weights=[1.0, 1.0],
    ), log=lambda *_: None)
    return out


def test_dims_are_recorded_and_encode_keeps_a_prefix(trained):
    assert json.loads((trained / "bg2vec_config.json").read_text())["matryoshka_dims"] == [16, 64]
    encoder = Bg2Vec.from_pretrained(str(trained))
    assert encoder.settings.matryoshka_dims == [16, 64]
    full = encoder.encode(CORPUS[:4])
    short = encoder.encode(CORPUS[:4], dim=16, normalize_embeddings=True)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)
    with pytest.raises(ConfigError, match="dim=65"):
        encoder.encode(CORPUS[:1], dim=65)


def test_encode_cli_dim(trained, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(CORPUS[:3]) + "\n", encoding="utf-8")
    assert main(["encode", "--model", str(trained), "--input", str(texts), "--output", str(tmp_path / "e.npy"), "--dim", "16"]) == 0
    assert np.load(tmp_path / "e.npy").shape == (3, 16)


def test_sentence_transformers_export_keeps_truncate_dim(trained, tmp_path):
    from sentence_transformers import SentenceTransformer

    encoder = Bg2Vec.from_pretrained(str(trained))
    folder = export_sentence_transformers(encoder, tmp_path / "st", truncate_dim=16)
    assert json.loads((folder / "config_sentence_transformers.json").read_text())["truncate_dim"] == 16
    st = SentenceTransformer(str(folder), device="cpu")
    np.testing.assert_allclose(st.encode(CORPUS[:3]), encoder.encode(CORPUS[:3], dim=16), atol=1e-4)


@pytest.mark.parametrize("dims, words", [([0], "matryoshka_dims"), ([16, 16], "distinct"), ([128], "embedding size 64")])
def test_bad_dims_are_config_errors(tiny_model_dirs, corpus_files, tmp_path, dims, words):
    with pytest.raises(ConfigError, match=words):
        run_simcse(SimCSEConfig(model_name_or_path=str(tiny_model_dirs["mistral"]), train_file=str(corpus_files["train"]),
                                output_dir=str(tmp_path / "out"), max_steps=1, do_eval=False, matryoshka_dims=dims),
                   log=lambda *_: None)
