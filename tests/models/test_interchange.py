"""Every model layout loads and encodes, both ways between bg2vec and the real llm2vec 0.2.3 (its own environment,
.venv-llm2vec), from local folders and from Hub ids (served from the session's Hugging Face cache).

The llm2vec side makes its own MNTP adapter (adapter only, as run_mntp saves it), a McGill-style `*-mntp` folder
(the base's config and tokenizer + that adapter) and a SimCSE adapter (`LLM2Vec.save`), encodes with each, and
loads bg2vec's MNTP and SimCSE adapters. Each layout is loaded with llm2vec's arguments given explicitly and left out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from bg2vec import Bg2Vec, MNTPConfig, SimCSEConfig, run_mntp, run_simcse
from bg2vec.encoding.export import export_sentence_transformers
from bg2vec.errors import Bg2VecError, ConfigError
from bg2vec.models.adapters import PEFT_0_12_LORA_KEYS
from conftest import CORPUS
from llm2vec_side import run_llm2vec, transformers4_copy

TEXTS = [  # [instruction, text], as llm2vec's encode takes a mixed batch
    ["", "София е столицата на България."],
    ["Retrieve sentences with the same meaning:", "Пловдив е един от най-старите градове в Европа."],
    ["", "The quick brown fox jumps over the lazy dog."],
    ["", " ".join(["Masked next token prediction trains a decoder to look both ways."] * 3)],
]
# llm2vec's arguments given explicitly (not its defaults, so they must reach the encoder) and left out
ARGUMENTS = {
    "explicit": {"enable_bidirectional": True, "merge_peft": True, "pooling_mode": "weighted_mean", "max_length": 64},
    "omitted": {},
}

LLM2VEC_WORKER = r"""
import json, shutil, sys
from pathlib import Path
import torch
from llm2vec import LLM2Vec
from peft import LoraConfig, get_peft_model

base, ours_mntp, ours_simcse, work, texts = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), json.loads(sys.argv[5])
arguments = json.loads(sys.argv[6])
work.mkdir(exist_ok=True)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

def lora(model, seed):
    torch.manual_seed(seed)  # init_lora_weights=False: a random, non-zero adapter
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, bias="none", task_type=None,
                        target_modules=TARGETS, init_lora_weights=False)
    return get_peft_model(model, config)

def encode(*args, **kwargs):
    model = LLM2Vec.from_pretrained(*args, torch_dtype=torch.float32, **kwargs)
    return model.encode(texts, batch_size=2, show_progress_bar=False).tolist()

mntp, mcgill, simcse = work / "llm2vec-mntp", work / "llm2vec-mcgill-mntp", work / "llm2vec-simcse"
if not mntp.exists():
    # run_mntp: LoRA on the inner bidirectional model, saved alone (adapter + tokenizer, no config.json)
    model = LLM2Vec.from_pretrained(base, enable_bidirectional=True, torch_dtype=torch.float32)
    lora(model.model, 1).save_pretrained(mntp)
    model.tokenizer.save_pretrained(mntp)
    # McGill's *-mntp repos: the base's config.json and tokenizer, plus the adapter
    mcgill.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(base) / name).exists():
            shutil.copy(Path(base) / name, mcgill / name)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(mntp / name, mcgill / name)
    # run_simcse: the MNTP adapter merged, a fresh LoRA, saved with LLM2Vec.save (adapter, tokenizer, llm2vec_config)
    model = LLM2Vec.from_pretrained(base, peft_model_name_or_path=str(mntp), merge_peft=True, torch_dtype=torch.float32)
    model.model = lora(model.model, 2)
    model.save(str(simcse))

results = {}
for name, kwargs in arguments.items():
    results[f"llm2vec-mntp/{name}"] = encode(base, peft_model_name_or_path=str(mntp), **kwargs)
    results[f"llm2vec-two-step/{name}"] = encode(str(mcgill), peft_model_name_or_path=str(simcse), **kwargs)
    results[f"bg2vec-mntp/{name}"] = encode(base, peft_model_name_or_path=ours_mntp, **kwargs)
    results[f"bg2vec-mntp-alone/{name}"] = encode(ours_mntp, **kwargs)  # llm2vec's one-argument form, as for McGill's
    if ours_simcse != "-":  # bg2vec's SimCSE adapter on llm2vec's MNTP, read back by llm2vec's two-step call
        results[f"bg2vec-simcse/{name}"] = encode(str(mcgill), peft_model_name_or_path=ours_simcse, **kwargs)
(work / f"results-{ours_simcse != '-'}.json").write_text(json.dumps(results))
"""


def serve_from_hub(folder: Path, repo_id: str, base: Path | None = None) -> str:
    """Put `folder` into the session's Hugging Face cache as `repo_id` (snapshot layout), so the Hub id loads
    offline. `base`: the base it records, as a published repo would name it (here an absolute path)."""
    import os

    repo = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(folder, snapshot, ignore=shutil.ignore_patterns("checkpoint-*"), symlinks=False)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(snapshot.name)
    for name in ("bg2vec_config.json", "adapter_config.json") if base is not None else ():
        if (snapshot / name).is_file():
            record = json.loads((snapshot / name).read_text())
            record["base_model_name_or_path"] = str(base)
            (snapshot / name).write_text(json.dumps(record))
    return repo_id


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def sides(tiny_model_dirs, corpus_files, tmp_path_factory):
    """Both sides' outputs: bg2vec's MNTP run, llm2vec's adapters and the embeddings llm2vec gives for each."""
    work = tmp_path_factory.mktemp("interchange")
    base = tiny_model_dirs["mistral"]
    old_base = transformers4_copy(base, work)  # the same model, as transformers 4.44 reads it
    ours_mntp = work / "bg2vec-mntp"
    run_mntp(
        MNTPConfig(
            model_name_or_path=str(base), train_file=str(corpus_files["train"]), output_dir=str(ours_mntp),
            max_seq_length=32, per_device_train_batch_size=4, max_steps=2, do_eval=False, lora_r=4,
            learning_rate=5e-2, logging_steps=1, save_steps=1000,
        ),
        log=quiet,
    )
    run = lambda simcse: run_llm2vec(  # noqa: E731
        LLM2VEC_WORKER, str(old_base), str(ours_mntp), simcse, str(work), json.dumps(TEXTS), json.dumps(ARGUMENTS)
    )
    run("-")
    # bg2vec simcse on llm2vec's adapter-only MNTP, given as a Hub id; then llm2vec reads the result back
    ours_simcse = work / "bg2vec-simcse"
    mntp_hub_id = serve_from_hub(work / "llm2vec-mntp", "llm2vec/tiny-mntp")
    run_simcse(
        SimCSEConfig(
            model_name_or_path=str(base), peft_model_name_or_path=mntp_hub_id, train_file=str(corpus_files["train"]),
            output_dir=str(ours_simcse), max_seq_length=32, per_device_train_batch_size=4, max_steps=2,
            do_eval=False, lora_r=4, learning_rate=5e-2, logging_steps=1, save_steps=1000,
        ),
        log=quiet,
    )
    run(str(ours_simcse))
    results = json.loads((work / "results-False.json").read_text()) | json.loads((work / "results-True.json").read_text())
    return {"base": base, "work": work, "ours_mntp": ours_mntp, "ours_simcse": ours_simcse, "llm2vec": results}


def ours(*args, **kwargs) -> np.ndarray:
    return Bg2Vec.from_pretrained(*args, torch_dtype="float32", **kwargs).encode(TEXTS, batch_size=2)


def theirs(sides, key: str) -> np.ndarray:
    return np.array(sides["llm2vec"][key], dtype=np.float32)


@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_llm2vec_loads_our_mntp_adapter_and_encodes_as_we_do(sides, arguments):
    kwargs = ARGUMENTS[arguments]
    expected = theirs(sides, f"bg2vec-mntp/{arguments}")
    np.testing.assert_allclose(ours(str(sides["base"]), peft_model_name_or_path=str(sides["ours_mntp"]), **kwargs), expected, atol=1e-5)
    # the folder alone, as a local path and as a Hub id: its recorded base, its adapter merged
    np.testing.assert_allclose(ours(str(sides["ours_mntp"]), **kwargs), expected, atol=1e-5)
    hub_id = serve_from_hub(sides["ours_mntp"], "bg2vec/tiny-mntp", base=sides["base"])
    np.testing.assert_allclose(ours(hub_id, **kwargs), expected, atol=1e-5)
    config = json.loads((sides["ours_mntp"] / "adapter_config.json").read_text())
    assert set(config) <= PEFT_0_12_LORA_KEYS, "only keys llm2vec's peft 0.12 knows"
    # llm2vec's one-argument call on our folder (its tokenizer, config.json and adapter, read by transformers 4.44)
    np.testing.assert_allclose(theirs(sides, f"bg2vec-mntp-alone/{arguments}"), expected, atol=1e-5)


@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_we_load_llm2vecs_adapter_only_mntp_as_llm2vec_does(sides, arguments):
    kwargs = ARGUMENTS[arguments]
    expected = theirs(sides, f"llm2vec-mntp/{arguments}")
    mntp = sides["work"] / "llm2vec-mntp"
    assert not (mntp / "config.json").exists(), "llm2vec's MNTP output is the adapter alone"
    np.testing.assert_allclose(ours(str(sides["base"]), peft_model_name_or_path=str(mntp), **kwargs), expected, atol=1e-5)
    np.testing.assert_allclose(ours(str(mntp), **kwargs), expected, atol=1e-5)  # its recorded base
    np.testing.assert_allclose(ours("llm2vec/tiny-mntp", **kwargs), expected, atol=1e-5)  # as a Hub id


@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_we_load_llm2vecs_two_step_call_as_llm2vec_does(sides, arguments):
    """`from_pretrained(MNTP_REPO, peft_model_name_or_path=SIMCSE_REPO)`, local folders and Hub ids."""
    kwargs = ARGUMENTS[arguments]
    expected = theirs(sides, f"llm2vec-two-step/{arguments}")
    mcgill, simcse = sides["work"] / "llm2vec-mcgill-mntp", sides["work"] / "llm2vec-simcse"
    np.testing.assert_allclose(ours(str(mcgill), peft_model_name_or_path=str(simcse), **kwargs), expected, atol=1e-5)
    hub = serve_from_hub(mcgill, "mcgill/tiny-mntp"), serve_from_hub(simcse, "mcgill/tiny-mntp-simcse")
    np.testing.assert_allclose(ours(hub[0], peft_model_name_or_path=hub[1], **kwargs), expected, atol=1e-5)


@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_our_simcse_on_llm2vecs_mntp_loads_alone_and_in_llm2vec(sides, arguments):
    """SimCSE trained here on llm2vec's adapter-only MNTP (a Hub id): the output alone rebuilds the encoder, and
    llm2vec's two-step call with our SimCSE adapter gives the same embeddings."""
    kwargs = ARGUMENTS[arguments]
    expected = theirs(sides, f"bg2vec-simcse/{arguments}")
    np.testing.assert_allclose(ours(str(sides["ours_simcse"]), **kwargs), expected, atol=1e-5)
    hub_id = serve_from_hub(sides["ours_simcse"], "bg2vec/tiny-simcse", base=sides["base"])
    np.testing.assert_allclose(ours(hub_id, **kwargs), expected, atol=1e-5)
    # the recorded MNTP adapter is the Hub id as given, never a path into the cache
    description = json.loads((sides["ours_simcse"] / "bg2vec_config.json").read_text())
    assert description["mntp_adapter"] == "llm2vec/tiny-mntp"


def test_simcse_on_our_mntp_and_merged_save_reload(sides, corpus_files, tmp_path):
    """A bg2vec MNTP output and a SimCSE output on it (as a Hub id); `save(merge_before_save=True)` reloaded."""
    mntp_id = serve_from_hub(sides["ours_mntp"], "bg2vec/tiny-mntp", base=sides["base"])
    out = tmp_path / "simcse"
    result = run_simcse(
        SimCSEConfig(
            model_name_or_path=str(sides["base"]), peft_model_name_or_path=mntp_id, train_file=str(corpus_files["train"]),
            output_dir=str(out), max_seq_length=32, per_device_train_batch_size=4, max_steps=2, do_eval=False,
            lora_r=4, learning_rate=5e-2, logging_steps=1, save_steps=1000,
        ),
        log=quiet,
    )
    encoder = Bg2Vec.from_pretrained(str(out), torch_dtype="float32")
    assert encoder.plan.merged == (mntp_id,) and encoder.plan.kept == str(out.resolve())
    trained = PeftModel.from_pretrained(
        Bg2Vec.from_pretrained(str(sides["base"]), mntp_id, merge_peft=True, torch_dtype="float32").model, str(out)
    )
    expected = Bg2Vec(trained, encoder.tokenizer, encoder.settings).encode(TEXTS)
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-5)
    assert not np.allclose(expected, ours(str(sides["ours_mntp"])), atol=1e-3), "the SimCSE adapter counts"
    for merge in (True, False):
        encoder.save(tmp_path / f"saved-{merge}", merge_before_save=merge)
        np.testing.assert_allclose(ours(str(tmp_path / f"saved-{merge}")), expected, atol=1e-5)
        hub_id = serve_from_hub(tmp_path / f"saved-{merge}", f"bg2vec/tiny-encoder-{merge}", base=sides["base"])
        np.testing.assert_allclose(ours(hub_id), expected, atol=1e-5)
    del result


def test_sentence_transformers_export_loads_as_a_bg2vec_model(sides, tmp_path):
    encoder = Bg2Vec.from_pretrained(str(sides["ours_mntp"]), torch_dtype="float32")
    folder = export_sentence_transformers(encoder, tmp_path / "st")
    np.testing.assert_allclose(ours(str(folder)), encoder.encode(TEXTS), atol=1e-5)


def test_mask_token_type_mask_output_loads_and_trains_on(tiny_model_dirs, corpus_files, tmp_path):
    """`mask_token_type: mask` adds <mask> (vocabulary V+1): the output records the growth and every load
    re-applies it (the new row is the mean row, not trained); a text holding "<mask>" still encodes."""
    base = tiny_model_dirs["llama"]
    out = tmp_path / "mntp-mask"
    run_mntp(
        MNTPConfig(
            model_name_or_path=str(base), train_file=str(corpus_files["train"]), output_dir=str(out), max_seq_length=32,
            per_device_train_batch_size=4, max_steps=2, do_eval=False, lora_r=4, logging_steps=1, save_steps=1000,
            mask_token_type="mask",
        ),
        log=quiet,
    )
    vocab = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight.shape[0]
    description = json.loads((out / "bg2vec_config.json").read_text())
    assert description["vocab_size"] == vocab + 1
    encoder = Bg2Vec.from_pretrained(str(out), torch_dtype="float32")
    embeddings = encoder.model.get_input_embeddings().weight
    assert embeddings.shape[0] == vocab + 1
    torch.testing.assert_close(embeddings[vocab], embeddings[:vocab].mean(dim=0))
    assert np.isfinite(encoder.encode(["a <mask> b", *TEXTS[:2]])).all()
    simcse = tmp_path / "simcse"
    run_simcse(
        SimCSEConfig(
            model_name_or_path=str(base), peft_model_name_or_path=str(out), train_file=str(corpus_files["train"]),
            output_dir=str(simcse), max_seq_length=32, per_device_train_batch_size=4, max_steps=1, do_eval=False,
            lora_r=4, logging_steps=1, save_steps=1000,
        ),
        log=quiet,
    )
    assert Bg2Vec.from_pretrained(str(simcse)).model.get_input_embeddings().weight.shape[0] == vocab + 1


def test_a_folder_of_no_known_layout_says_what_it_found(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(Bg2VecError, match=r"holds: notes.txt, tokenizer.json.*adapter_config.json"):
        Bg2Vec.from_pretrained(str(folder))


def test_an_adapter_for_another_base_is_an_error_naming_both(sides, tiny_model_dirs):
    llama = str(tiny_model_dirs["llama"])
    with pytest.raises(ConfigError, match="peft_model_name_or_path") as caught:
        Bg2Vec.from_pretrained(llama, peft_model_name_or_path=str(sides["ours_mntp"]))
    message = str(caught.value)
    assert llama in message and str(sides["base"]) in message, "names both bases"


def test_folders_named_alike_are_not_the_same_model(tiny_model_dirs, tmp_path, sides):
    """Two different bases whose folders have the same name: the recorded base is compared by what it is."""
    twin = tmp_path / Path(tiny_model_dirs["mistral"]).name
    AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]).save_pretrained(twin)
    shutil.copy(Path(tiny_model_dirs["llama"]) / "tokenizer.json", twin)
    shutil.copy(Path(tiny_model_dirs["llama"]) / "tokenizer_config.json", twin)
    with pytest.raises(ConfigError, match="trained on"):
        Bg2Vec.from_pretrained(str(twin), peft_model_name_or_path=str(sides["ours_mntp"]))
