"""Files transformers 4.44 reads as transformers 5 does: transformers 5 still reads them the same way (the
transformers 4.44 side is tests/test_interchange.py, in llm2vec's own environment)."""

from __future__ import annotations

import json
import shutil

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from bg2vec.models.portable_files import portable_model_config, portable_tokenizer_files

TEXTS = ["Здравей, свят!", "Bg2Vec turns a decoder into an encoder.", "  двойни  интервали и\tтабулация "]


def test_config_gains_the_old_keys_and_reads_the_same(tiny_model_dirs, tmp_path):
    for model_type, folder in tiny_model_dirs.items():
        copy = tmp_path / model_type
        shutil.copytree(folder, copy)
        portable_model_config(copy)
        written = json.loads((copy / "config.json").read_text())
        new = json.loads((folder / "config.json").read_text())
        theta = (new.get("rope_parameters") or {}).get("rope_theta")
        if theta is not None:
            assert written["rope_theta"] == theta, model_type
        assert written["torch_dtype"] == new["dtype"]
        read = [AutoConfig.from_pretrained(path).to_dict() for path in (copy, folder)]
        for config in read:
            config.pop("_name_or_path")
        assert read[0] == read[1], model_type


def test_scaled_rope_is_written_as_rope_scaling_too(tmp_path):
    config = {"model_type": "llama", "dtype": "bfloat16",
              "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 500000.0}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    portable_model_config(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["rope_theta"] == 500000.0 and written["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    assert AutoConfig.from_pretrained(tmp_path).rope_parameters == config["rope_parameters"]


def test_tokenizer_files_read_the_same_and_weights_are_untouched(tiny_model_dirs, tmp_path):
    folder = tiny_model_dirs["mistral"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    portable_tokenizer_files(copy)
    merges = json.loads((copy / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    tokenizer_config = json.loads((copy / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    ours, theirs = AutoTokenizer.from_pretrained(copy), AutoTokenizer.from_pretrained(folder)
    assert ours(TEXTS)["input_ids"] == theirs(TEXTS)["input_ids"]
    assert "token_type_ids" not in ours(TEXTS)
    ids = torch.tensor([ours(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(AutoModel.from_pretrained(copy)(ids).last_hidden_state, AutoModel.from_pretrained(folder)(ids).last_hidden_state)


def test_merges_with_a_space_keep_the_new_form(tmp_path):
    tokenizer = {"model": {"type": "BPE", "merges": [["a", "b"], ["c d", "e"]]}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    portable_tokenizer_files(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == tokenizer
