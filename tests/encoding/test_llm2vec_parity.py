"""Same embeddings as llm2vec 0.2.3 itself, run in its own environment (.venv-llm2vec, built by make test)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from bg2vec import Bg2Vec
from llm2vec_side import run_llm2vec, transformers4_copy

MODES = ["mean", "weighted_mean", "eos_token", "last_token", "bos_token"]
SENTENCES = [
    ["", "София е столицата на България и най-големият град в страната."],
    ["Retrieve sentences with the same meaning:", "Пловдив е един от най-старите градове в Европа."],
    ["", "Short."],
    ["  Classify the topic. ", "The quick brown fox jumps over the lazy dog.  "],
    ["", " ".join(["Masked next token prediction trains a decoder to look both ways."] * 8)],
]
WORKER = """
import json, sys, numpy as np, torch
from llm2vec import LLM2Vec
folder, sentences, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
result = {}
for mode in %r:
    model = LLM2Vec.from_pretrained(folder, pooling_mode=mode, doc_max_length=40, torch_dtype=torch.float32)
    result[mode] = model.encode(sentences, batch_size=2, show_progress_bar=False, convert_to_numpy=True).tolist()
json.dump(result, open(out, "w"))
""" % MODES


def test_embeddings_equal_llm2vecs(tiny_model_dirs, tmp_path):
    arch = "mistral"  # llm2vec's Llama path differs only in its class name
    folder = transformers4_copy(tiny_model_dirs[arch], tmp_path)
    out = tmp_path / "llm2vec.json"
    run_llm2vec(WORKER, str(folder), json.dumps(SENTENCES), str(out))
    theirs = json.loads(out.read_text())
    encoder = Bg2Vec.from_pretrained(str(tiny_model_dirs[arch]), doc_max_length=40, torch_dtype="float32")
    for mode in MODES:
        ours = Bg2Vec(encoder.model, encoder.tokenizer, replace(encoder.settings, pooling_mode=mode)).encode(SENTENCES)
        np.testing.assert_allclose(ours, np.array(theirs[mode], dtype=np.float32), atol=1e-5, err_msg=mode)
