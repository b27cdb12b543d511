"""Bg2Vec: llm2vec's embeddings by hand computation, padding and order invariance, save → load, adapters, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, MistralConfig

from bg2vec import Bg2Vec
from bg2vec.errors import ConfigError
from bg2vec.models.lora import add_lora

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "София е столицата на България.",
    "A sentence encoder maps text to a vector, and longer texts are padded less.",
    "Езикът е български.",
]


@pytest.fixture(scope="module")
def encoder(tiny_model_dirs) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float32")


def with_settings(encoder: Bg2Vec, **changes) -> Bg2Vec:
    """Another encoder sharing the model, with some settings changed."""
    return Bg2Vec(encoder.model, encoder.tokenizer, replace(encoder.settings, **changes), encoder.name_or_path)


def hidden_alone(encoder: Bg2Vec, text: str) -> torch.Tensor:
    """(T, H) last hidden states of `text` alone (batch 1, no padding), tokenized with special tokens."""
    ids = encoder.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return encoder.model(input_ids=ids).last_hidden_state[0]


def text_tokens(encoder: Bg2Vec, text: str) -> int:
    return len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])


def hand_pooled(encoder: Bg2Vec, mode: str, text: str, instruction: str = "") -> torch.Tensor:
    """llm2vec's pooling written out for one input: the last n positions are the text's."""
    if mode == "eos_token":
        text = text.rstrip() + " </s>"
    full = f"{instruction.strip()} {text}" if instruction else text
    hidden = hidden_alone(encoder, full)
    n = text_tokens(encoder, text)
    if mode == "mean":
        return hidden[-n:].mean(0)
    if mode == "weighted_mean":
        weights = torch.arange(1, n + 1, dtype=torch.float32)
        return (hidden[-n:] * (weights / weights.sum())[:, None]).sum(0)
    if mode in ("eos_token", "last_token"):
        return hidden[-1]
    return hidden[0]  # bos_token: the tokenizer puts <s> first


@pytest.mark.parametrize("mode", ["mean", "weighted_mean", "eos_token", "last_token", "bos_token"])
def test_each_pooling_mode_matches_a_hand_computation(encoder, mode):
    got = with_settings(encoder, pooling_mode=mode).encode_tensor(TEXTS, batch_size=4)
    expected = torch.stack([hand_pooled(encoder, mode, text) for text in TEXTS])
    assert got.shape == (len(TEXTS), 64) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-5)


def test_eos_token_pooling_really_appends_eos(encoder):
    ids = with_settings(encoder, pooling_mode="eos_token").tokenize(["Hello"])["input_ids"][0]
    assert ids[-1].item() == encoder.tokenizer.eos_token_id


def test_instruction_and_bos_are_left_out_of_the_pooling(encoder):
    instruction, text = "Retrieve sentences with the same meaning:", TEXTS[1]
    got = encoder.encode_tensor([[instruction, text]])[0]
    assert torch.allclose(got, hand_pooled(encoder, "mean", text, instruction), atol=1e-5)
    everything = hidden_alone(encoder, f"{instruction} {text}").mean(0)
    assert not torch.allclose(got, everything, atol=1e-3)
    kept = with_settings(encoder, skip_instruction=False).encode_tensor([[instruction, text]])[0]
    assert torch.allclose(kept, everything, atol=1e-5)


def test_order_and_values_survive_length_sorting_and_padding(encoder):
    texts = TEXTS + ["Short.", TEXTS[2] * 3, "Пловдив."]
    batched = encoder.encode(texts, batch_size=3)
    for i, text in enumerate(texts):
        alone = encoder.encode([text])[0]
        np.testing.assert_allclose(batched[i], alone, atol=1e-5, err_msg=f"row {i} moved or changed with padding")


def test_long_texts_are_cut_by_words_as_llm2vec_does(encoder):
    text = " ".join(["bidirectional attention sees the whole sentence"] * 12)
    short = with_settings(encoder, doc_max_length=20)
    n, words = text_tokens(encoder, text), text.split()
    while n > 20:  # llm2vec's loop
        words = words[: int(len(words) * 20 / n)]
        n = text_tokens(encoder, " ".join(words))
    np.testing.assert_allclose(short.encode([text]), encoder.encode([" ".join(words)]), atol=1e-6)


def test_empty_text_pools_its_whole_input(encoder):
    got = encoder.encode_tensor(["", TEXTS[0]])[0]
    assert torch.allclose(got, hidden_alone(encoder, "").mean(0), atol=1e-5)


def test_normalize_and_output_types(encoder):
    unit = encoder.encode(TEXTS, normalize_embeddings=True)
    assert isinstance(unit, np.ndarray) and unit.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    tensor = encoder.encode_tensor(TEXTS, normalize_embeddings=True)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    np.testing.assert_allclose(tensor.numpy(), unit, atol=1e-6)
    for removed in ("convert_to_numpy", "convert_to_tensor"):  # one return type per call: no flags for it
        with pytest.raises(TypeError, match=removed):
            encoder.encode(TEXTS, **{removed: False})


def test_several_devices_run_a_process_each_kept_between_calls(encoder):
    one = encoder.encode(TEXTS, batch_size=1)
    home = encoder.device
    try:
        two = encoder.encode(TEXTS, batch_size=1, device=["cpu", "cpu"])
        pool = encoder._pool
        pids = [w.pid for w in pool.workers]
        assert len(set(pids)) == 2 and all(w.is_alive() for w in pool.workers)
        again = encoder.encode(TEXTS[::-1], batch_size=2, device=["cpu", "cpu"])
        assert encoder._pool is pool and [w.pid for w in pool.workers] == pids  # started once
    finally:
        encoder.stop_pool()
    np.testing.assert_allclose(one, two, atol=1e-6)
    np.testing.assert_allclose(one[::-1], again, atol=1e-6)
    assert encoder._pool is None and not any(w.is_alive() for w in pool.workers) and encoder.device == home


def test_a_dead_worker_is_an_error_naming_its_device(encoder):
    from bg2vec.encoding.devices import WorkerError

    try:
        encoder.encode(TEXTS, device=["cpu", "cpu"])
        encoder._pool.workers[1].kill()
        encoder._pool.workers[1].join()
        with pytest.raises(WorkerError, match="worker on cpu stopped"):
            encoder.encode(TEXTS * 8, batch_size=1, device=["cpu", "cpu"])
        assert encoder._pool is None  # the broken pool is gone; the next call starts a new one
        np.testing.assert_allclose(encoder.encode(TEXTS, device=["cpu", "cpu"]), encoder.encode(TEXTS), atol=1e-6)
    finally:
        encoder.stop_pool()


@pytest.mark.parametrize(
    "arch, attn", [("mistral", "sdpa"), ("llama", "sdpa"), ("qwen2", "sdpa"), ("qwen2", "eager"), ("gemma3_text", "sdpa")]
)
def test_bidirectional_at_batch_size_one(tiny_model_dirs, arch, attn):
    """llm2vec's SDPA ran causally at batch size 1, and its Qwen2 stayed causal: here BOS sees the last token."""
    encoder = Bg2Vec.from_pretrained(
        str(tiny_model_dirs[arch]), pooling_mode="bos_token", attn_implementation=attn, torch_dtype="float32"
    )
    first = encoder.encode(["The quick brown fox"], batch_size=1)
    second = encoder.encode(["The quick brown dog"], batch_size=1)
    assert not np.allclose(first, second, atol=1e-6), f"{arch}/{attn}: the first token did not see the last"


def lora_adapter(model_dir, folder, seed=0):
    """A saved LoRA adapter over the inner decoder with random (non-zero) weights."""
    decoder = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = add_lora(decoder, r=4, alpha=8, dropout=0.0)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(folder)
    return folder


def test_merged_and_unmerged_adapters_give_the_same_embeddings(tiny_model_dirs, encoder, tmp_path):
    """llm2vec issue #128: merging must not change the embeddings."""
    adapter = str(lora_adapter(tiny_model_dirs["mistral"], tmp_path / "adapter"))
    base = str(tiny_model_dirs["mistral"])
    unmerged = Bg2Vec.from_pretrained(base, adapter, merge_peft=False, torch_dtype="float32").encode(TEXTS)
    merged = Bg2Vec.from_pretrained(base, adapter, merge_peft=True, torch_dtype="float32").encode(TEXTS)
    np.testing.assert_allclose(unmerged, merged, atol=1e-5)
    assert not np.allclose(merged, encoder.encode(TEXTS), atol=1e-3), "the adapter changes the embeddings"


@pytest.mark.parametrize("merge", [False, True])
def test_save_then_load_is_identical(tiny_model_dirs, tmp_path, merge):
    adapter = str(lora_adapter(tiny_model_dirs["llama"], tmp_path / "adapter"))
    original = Bg2Vec.from_pretrained(
        str(tiny_model_dirs["llama"]), adapter, pooling_mode="weighted_mean", max_length=48, doc_max_length=30,
        torch_dtype="float32",
    )
    original.save(tmp_path / "saved", merge_before_save=merge)
    assert (tmp_path / "saved" / "config.json").is_file() == merge, "an unmerged save is the adapter alone"
    reloaded = Bg2Vec.from_pretrained(str(tmp_path / "saved"), torch_dtype="float32")
    assert reloaded.settings == original.settings
    np.testing.assert_allclose(reloaded.encode(TEXTS), original.encode(TEXTS), atol=1e-5)
    saved = json.loads((tmp_path / "saved" / "llm2vec_config.json").read_text())
    assert saved == {"pooling_mode": "weighted_mean", "max_length": 48, "doc_max_length": 30, "skip_instruction": True}


def test_explicit_arguments_win_over_saved_settings(tiny_model_dirs, tmp_path):
    folder = tmp_path / "model"
    AutoModelForCausalLM.from_pretrained(tiny_model_dirs["mistral"]).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dirs["mistral"]).save_pretrained(folder)
    (folder / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "last_token", "max_length": 64}))
    saved = Bg2Vec.from_pretrained(str(folder))
    assert (saved.settings.pooling_mode, saved.settings.max_length) == ("last_token", 64)
    explicit = Bg2Vec.from_pretrained(str(folder), pooling_mode="mean")
    assert (explicit.settings.pooling_mode, explicit.settings.max_length) == ("mean", 64)


def test_an_mntp_output_loads_with_its_adapter_merged(tiny_model_dirs, corpus_files, tmp_path):
    from test_train_mntp import tiny_run

    from bg2vec.recipes.mntp import run_mntp

    config = tiny_run(tiny_model_dirs["llama"], corpus_files, tmp_path / "mntp", max_steps=2, do_eval=False)
    run_mntp(config, log=lambda *_: None)
    from_folder = Bg2Vec.from_pretrained(str(tmp_path / "mntp"), torch_dtype="float32")
    two_step = Bg2Vec.from_pretrained(str(tiny_model_dirs["llama"]), str(tmp_path / "mntp"), torch_dtype="float32")
    assert from_folder.settings.max_length == 512, "a training block size is not an encoder limit"
    np.testing.assert_allclose(from_folder.encode(TEXTS), two_step.encode(TEXTS), atol=1e-5)


@pytest.mark.parametrize(
    "sentences, match",
    [
        ([], "non-empty list"),
        ("one text", r"wrap a single text in a list"),
        (["fine", 3], r"sentences\[1\]"),
        ([["instruction", "text", "extra"]], r"sentences\[0\]"),
        ([[None, "text"]], r"sentences\[0\]"),
    ],
)
def test_bad_sentences_are_clear_errors(encoder, sentences, match):
    with pytest.raises(ConfigError, match=match):
        encoder.encode(sentences)


def test_bad_settings_and_arguments_are_clear_errors(encoder, tiny_model_dirs):
    with pytest.raises(ConfigError, match="mean, weighted_mean, eos_token, last_token, bos_token"):
        Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), pooling_mode="max")
    with pytest.raises(ConfigError, match="batch_size"):
        encoder.encode(TEXTS, batch_size=0)
    with pytest.raises(TypeError, match="prompt_name"):
        encoder.encode(TEXTS, prompt_name="query")
    with pytest.raises(ConfigError, match="not_a_transformers_kwarg"):
        Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), not_a_transformers_kwarg=1)
    with pytest.raises(ConfigError, match="torch_dtype"):
        Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float8")


def test_an_adapter_for_another_model_names_both(tiny_model_dirs, tmp_path):
    config = MistralConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1)
    AutoModel.from_config(config).save_pretrained(tmp_path / "small")
    adapter = lora_adapter(tmp_path / "small", tmp_path / "adapter")
    base = str(tiny_model_dirs["mistral"])
    with pytest.raises(ConfigError) as error:
        Bg2Vec.from_pretrained(base, str(adapter))
    message = str(error.value)
    assert base in message and str(tmp_path / "small") in message
