"""End-to-end SimCSE runs on a tiny Llama with a real (2-step) MNTP adapter: the output folder, rebuilding the
encoder from it (bg2vec's description and llm2vec's two-step form), resume, gradient caching, bad input."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from bg2vec.models.adapters import PEFT_0_12_LORA_KEYS
from bg2vec.models.backbone import load_decoder
from bg2vec.models.layouts import recorded_reference
from bg2vec.cli import main
from bg2vec.config import MNTPConfig, SimCSEConfig, config_from_dict, load_config
from bg2vec.objectives.simcse import SimCSEModel
from bg2vec.recipes.mntp import run_mntp
from bg2vec.recipes.simcse import run_simcse

from conftest import REPO, CORPUS

CONFIGS = REPO / "configs"
HELD_OUT = [
    "Варна е морска столица на България.",
    "A decoder can be turned into an encoder.",
    "Рила е най-високата планина на Балканите.",
    "Every token attends to every other token.",
    "Дунав е северната граница на страната.",
]
PAIRS = [(CORPUS[0], CORPUS[1], 1), (CORPUS[0], CORPUS[4], 0), (CORPUS[6], CORPUS[5], 1), (CORPUS[2], CORPUS[7], 0)]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def simcse_inputs(tiny_model_dirs, corpus_files, tmp_path_factory):
    """A 2-step MNTP adapter of the tiny Llama, held-out texts and a pair file."""
    folder = tmp_path_factory.mktemp("simcse-inputs")
    run_mntp(
        MNTPConfig(
            model_name_or_path=str(tiny_model_dirs["llama"]), train_file=str(corpus_files["train"]),
            output_dir=str(folder / "mntp"), max_seq_length=32, per_device_train_batch_size=4, max_steps=2,
            do_eval=False, lora_r=4, learning_rate=1e-3, data_collator_type="all_mask", mlm_probability=0.5, logging_steps=1,
            language=["bg"],
        ),
        log=quiet,
    )
    (folder / "held_out.txt").write_text("\n".join(HELD_OUT) + "\n", encoding="utf-8")
    rows = "\n".join(f"{a}\t{b}\t{label}" for a, b, label in PAIRS)
    (folder / "pairs.tsv").write_text(f"sentence1\tsentence2\tlabel\n{rows}\n", encoding="utf-8")
    return {"base": tiny_model_dirs["llama"], "mntp": folder / "mntp", "corpus": corpus_files["train"], "folder": folder}


def tiny_simcse(inputs, output_dir, **overrides):
    values = dict(
        model_name_or_path=str(inputs["base"]),
        peft_model_name_or_path=str(inputs["mntp"]),
        train_file=str(inputs["corpus"]),
        validation_file=str(inputs["folder"] / "held_out.txt"),
        eval_pairs_file=str(inputs["folder"] / "pairs.tsv"),
        output_dir=str(output_dir),
        max_seq_length=32,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=4,
        eval_steps=2,
        save_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        lora_r=4,
        seed=11,
    )
    values.update(overrides)
    return SimCSEConfig(**values)


@pytest.fixture(scope="module")
def finished_run(simcse_inputs, tmp_path_factory):
    return run_simcse(tiny_simcse(simcse_inputs, tmp_path_factory.mktemp("simcse") / "out"), log=quiet)


def test_output_folder_describes_itself(finished_run, simcse_inputs):
    out = Path(finished_run.output_dir)
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "bg2vec_config.json", "metrics.json",
            "simcse_curves.png", "tokenizer.json", "checkpoint-4"} <= files
    assert "config.json" not in files, "the folder must not look like a base with an embedded adapter"
    description = json.loads((out / "bg2vec_config.json").read_text())
    assert description["stage"] == "simcse" and description["format_version"] == 1
    # local inputs are recorded relative to the output, so the folders can move together
    assert (out / description["base_model_name_or_path"]).resolve() == Path(simcse_inputs["base"]).resolve()
    assert (out / description["mntp_adapter"]).resolve() == Path(simcse_inputs["mntp"]).resolve()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    # peft, transformers and llm2vec read adapter_config.json from any working directory: an absolute path
    assert adapter_config["base_model_name_or_path"] == str(Path(simcse_inputs["base"]).resolve())
    assert set(adapter_config) <= PEFT_0_12_LORA_KEYS, "only keys llm2vec's peft 0.12 knows"
    assert (description["pooling_mode"], description["max_length"]) == ("mean", 32)
    assert description["skip_instruction"] is True and description["bidirectional"] is True
    keys = load_file(str(out / "adapter_model.safetensors")).keys()
    assert "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys, "llm2vec's key layout"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["Step"] for row in metrics["table"]] == [0, 2, 4]
    assert {"eval_loss", "eval_alignment", "eval_uniformity", "eval_spearman"} <= set(metrics["final"])
    assert [e["step"] for e in metrics["log_history"] if "loss" in e] == [1, 2, 3, 4], "training loss per logging step"
    assert len(metrics["pairs"]) == len(PAIRS) and {"before", "after"} <= set(metrics["pairs"][0])
    assert "Alignment" in finished_run.table and "Spearman" in finished_run.table
    card = (out / "README.md").read_text()
    # the language the MNTP run recorded, kept by this run (which named none) and in its card's metadata
    assert description["language"] == ["bg"] and card.startswith("---\nlanguage:\n- bg\nlibrary_name: peft")
    assert "More Information Needed" not in card, "a real model card"
    assert "SimCSE LoRA adapter" in card and "## Results" in card and "Spearman" in card
    assert "Bg2Vec.from_pretrained(" in card and "LLM2Vec.from_pretrained(" in card and "SentenceTransformer(" in card


def reference_embeddings(model: SimCSEModel, tokenizer, max_length=32):
    from bg2vec.data.texts import SimCSECollator, tokenize_texts

    tokenized = tokenize_texts(HELD_OUT, tokenizer, max_length, "mean")
    features = [{"input_ids": i, "pooling_mask": m} for i, m in zip(tokenized["input_ids"], tokenized["pooling_mask"])]
    batch = SimCSECollator(tokenizer.pad_token_id)(features)
    model.eval()
    with torch.no_grad():
        return model(**batch), batch


def test_the_folder_alone_rebuilds_the_encoder(finished_run):
    """What Bg2Vec.from_pretrained(OUTPUT_DIR) does: base + merged MNTP adapter (from bg2vec_config.json), then
    this folder's adapter; and llm2vec's two-step form load_decoder(MNTP output, SimCSE output)."""
    out = finished_run.output_dir
    trained = finished_run.model
    expected, batch = reference_embeddings(trained, trained_tokenizer(out))
    description = json.loads((Path(out) / "bg2vec_config.json").read_text())
    base, mntp = (recorded_reference(description[k], out) for k in ("base_model_name_or_path", "mntp_adapter"))
    decoder, _ = load_decoder(base, mntp, merge_peft=True)
    rebuilt = SimCSEModel(PeftModel.from_pretrained(decoder, out), description["pooling_mode"])
    two_step, _ = load_decoder(mntp, out)  # base folder with its embedded adapter
    for decoder in (rebuilt.decoder, two_step):
        got = SimCSEModel(decoder, "mean").eval()(**batch)
        assert torch.allclose(expected, got.detach(), atol=1e-5)
    with torch.no_grad(), rebuilt.decoder.disable_adapter():
        mntp_only = rebuilt.eval()(**batch)
    assert not torch.allclose(expected, mntp_only, atol=1e-4), "SimCSE changed the encoder"


def test_pairs_before_are_the_mntp_only_encoder_and_after_the_trained_one(finished_run, simcse_inputs):
    from bg2vec.objectives.simcse import pair_similarities
    from bg2vec.data.texts import SimCSECollator, eval_pairs

    tokenizer = trained_tokenizer(finished_run.output_dir)
    pairs = eval_pairs(str(simcse_inputs["folder"] / "pairs.tsv"), tokenizer, 32, "mean")
    model, collate = finished_run.model, SimCSECollator(tokenizer.pad_token_id)
    after = pair_similarities(model, pairs.first, pairs.second, collate, 4)
    with model.decoder.disable_adapter():
        before = pair_similarities(model, pairs.first, pairs.second, collate, 4)
    assert [p["before"] for p in finished_run.pairs] == pytest.approx(before, abs=1e-5)
    assert [p["after"] for p in finished_run.pairs] == pytest.approx(after, abs=1e-5)
    assert before != pytest.approx(after, abs=1e-4)


def trained_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_bg2vec_from_pretrained_loads_the_output(finished_run):
    from bg2vec.encoding import encoder
    model = encoder.Bg2Vec.from_pretrained(finished_run.output_dir)
    # the encoder reads up to 512 tokens (llm2vec's default), whatever the training cut
    expected, _ = reference_embeddings(finished_run.model, trained_tokenizer(finished_run.output_dir), max_length=512)
    got = torch.as_tensor(model.encode(HELD_OUT))
    assert torch.nn.functional.cosine_similarity(expected, got.float(), dim=-1).min() > 0.9999


def test_resume_equals_an_uninterrupted_run(simcse_inputs, tmp_path):
    """Dropout masks come from the RNG the checkpoint saves; evaluation draws its own (seeded) masks."""
    whole = run_simcse(tiny_simcse(simcse_inputs, tmp_path / "whole", max_steps=6, save_steps=3, eval_steps=3), log=quiet)
    interrupted = tiny_simcse(simcse_inputs, tmp_path / "parts", max_steps=6, save_steps=3, eval_steps=3, stop_after_n_steps=3)
    run_simcse(interrupted, log=quiet)
    interrupted.stop_after_n_steps = None
    resumed = run_simcse(interrupted, resume=True, log=quiet)
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert resumed.final["eval_loss"] == pytest.approx(whole.final["eval_loss"], abs=1e-5)


def test_gradient_caching_trains_the_same_adapter(simcse_inputs, tmp_path):
    no_dropout = dict(simcse_dropout=0.0, lora_dropout=0.0, do_eval=False, eval_pairs_file=None, max_steps=3)
    run_simcse(tiny_simcse(simcse_inputs, tmp_path / "plain", **no_dropout), log=quiet)
    run_simcse(tiny_simcse(simcse_inputs, tmp_path / "cached", mini_batch_size=3, **no_dropout), log=quiet)
    a = load_file(str(tmp_path / "plain" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cached" / "adapter_model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


# --- configs ----------------------------------------------------------------------------------------------------

# llm2vec's train_configs/simcse/Mistral.json and Bg2Vec's model_configurations/bggpt-7b-simcse.json, verbatim.
LLM2VEC_MISTRAL_SIMCSE = {
    "model_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
    "peft_model_name_or_path": "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp", "simcse_dropout": 0.3,
    "bidirectional": True, "pooling_mode": "mean", "dataset_name": "Wiki1M",
    "dataset_file_path": "cache/wiki1m_for_simcse.txt", "remove_unused_columns": False, "learning_rate": 3e-5,
    "loss_scale": 20, "per_device_train_batch_size": 128, "gradient_accumulation_steps": 1, "do_train": True,
    "disable_tqdm": False, "max_seq_length": 128, "overwrite_output_dir": True,
    "output_dir": "output/mntp-simcse/Mistral-7B-Instruct-v0.2", "logging_steps": 50, "save_steps": 200,
    "save_only_model": True, "stop_after_n_steps": 1000, "lora_r": 16, "gradient_checkpointing": True,
    "torch_dtype": "bfloat16", "attn_implementation": "flash_attention_2", "seed": 42,
}
BG2VEC_BGGPT_SIMCSE = {
    "model_name_or_path": "INSAIT-Institute/BgGPT-7B-Instruct-v0.2", "peft_model_name_or_path": "mboyanov/bggpt-mntp",
    "dataset_name": "mboyanov/bgwiki", "output_dir": "./bggpt-simcse", "max_train_samples": 50000,
    "per_device_train_batch_size": 128, "do_train": True, "torch_dtype": "bfloat16", "bf16": True,
    "stop_after_n_steps": 1000, "gradient_checkpointing": True, "attn_implementation": "flash_attention_2",
    "do_eval": False, "max_seq_length": 512, "evaluation_strategy": "no", "eval_steps": 100, "save_steps": 200,
    "lora_r": 16, "dataloader_num_workers": 6, "dataloader_prefetch_factor": 3, "bidirectional": True,
}


@pytest.mark.parametrize("values", [LLM2VEC_MISTRAL_SIMCSE, BG2VEC_BGGPT_SIMCSE], ids=["llm2vec-mistral", "bg2vec-bggpt"])
def test_reference_configs_parse_as_is(values):
    config = config_from_dict(SimCSEConfig, values)
    assert config.lora_r == 16 and config.lora_alpha == 32 and config.stop_after_n_steps == 1000
    assert config.per_device_train_batch_size == 128 and config.pooling_mode == "mean"


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*simcse*.json")))
def test_presets_parse(preset):
    config = load_config(SimCSEConfig, CONFIGS / preset)
    assert config.model_name_or_path and config.output_dir and config.per_device_train_batch_size >= 2


def test_bggpt_preset_is_the_bg2vec_run():
    config = load_config(SimCSEConfig, CONFIGS / "bggpt-7b-simcse.json")
    assert (config.simcse_dropout, config.loss_scale, config.learning_rate) == (0.3, 20.0, 3e-5)
    assert (config.per_device_train_batch_size, config.max_seq_length, config.stop_after_n_steps) == (128, 128, 1000)
    assert (config.lora_r, config.seed, config.bf16, config.gradient_checkpointing) == (16, 42, True, True)


# --- bad input: one line, exit 2, nothing written -----------------------------------------------------------------


@pytest.fixture
def cli_values(simcse_inputs, tmp_path):
    return dict(
        model_name_or_path=str(simcse_inputs["base"]), peft_model_name_or_path=str(simcse_inputs["mntp"]),
        train_file=str(simcse_inputs["corpus"]), output_dir=str(tmp_path / "out"), max_seq_length=16, max_steps=1,
        per_device_train_batch_size=4,
    )


def fails_cleanly(tmp_path, capsys, values, *words):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    status = main(["simcse", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert status == 2 and len(errors) == 1 and err[-1] == errors[0], err
    for word in words:
        assert word in errors[0], errors[0]
    assert not Path(values["output_dir"]).exists(), "nothing may be written on bad input"


def test_mntp_adapter_of_another_base(tmp_path, capsys, cli_values, tiny_model_dirs):
    values = {**cli_values, "model_name_or_path": str(tiny_model_dirs["mistral"])}
    fails_cleanly(tmp_path, capsys, values, "peft_model_name_or_path", str(tiny_model_dirs["mistral"]), str(tiny_model_dirs["llama"]))


def test_batch_of_one_has_no_negatives(tmp_path, capsys, cli_values):
    fails_cleanly(tmp_path, capsys, {**cli_values, "per_device_train_batch_size": 1}, "per_device_train_batch_size", "negatives")


def test_fewer_distinct_texts_than_a_batch(tmp_path, capsys, cli_values):
    repeated = tmp_path / "repeated.txt"
    repeated.write_text((CORPUS[0] + "\n") * 50 + CORPUS[1] + "\n")
    fails_cleanly(tmp_path, capsys, {**cli_values, "train_file": str(repeated)}, "2 distinct texts")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"lora_rank": 8}, ["lora_rank"]),
        ({"simcse_dropout": 1.5}, ["simcse_dropout"]),
        ({"loss_scale": 0}, ["loss_scale"]),
        ({"pooling_mode": "max"}, ["pooling_mode", "mean"]),
        ({"loss_class": "MultipleNegativesRankingLoss"}, ["loss_class", "HardNegativeNLLLoss"]),
        ({"dataset_name": "Wiki1M"}, ["dataset_file_path"]),
        ({"peft_model_name_or_path": "/no/such/adapter"}, ["peft_model_name_or_path"]),
        ({"eval_pairs_file": "/no/such/pairs.tsv"}, ["eval_pairs_file"]),
        ({"mini_batch_size": 0}, ["mini_batch_size"]),
        ({"train_file": None, "dataset_name": "nobody/no-such-dataset"}, ["dataset_name", "no-such-dataset"]),
        ({"train_file": None}, ["exactly one data source"]),
    ],
    ids=["unknown-key", "dropout", "scale", "pooling", "loss-class", "wiki1m-without-file", "adapter-path", "pairs",
         "mini-batch", "hub-dataset", "no-data"],
)
def test_bad_settings(tmp_path, capsys, cli_values, change, words):
    fails_cleanly(tmp_path, capsys, {**cli_values, **change}, *words)


def test_pair_file_without_scores(tmp_path, capsys, cli_values):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a\tb\nx\ty\n")
    fails_cleanly(tmp_path, capsys, {**cli_values, "eval_pairs_file": str(pairs)}, "eval_pairs_file", "sentence1")


def test_help_lists_the_simcse_settings(capsys):
    with pytest.raises(SystemExit):
        main(["simcse", "--help"])
    out = capsys.readouterr().out
    for name in ("peft_model_name_or_path", "simcse_dropout", "loss_scale", "mini_batch_size", "eval_pairs_file"):
        assert name in out


def test_the_language_travels_to_saved_encoders_and_exports(finished_run, tmp_path):
    from bg2vec import Bg2Vec
    from bg2vec.encoding.export import export_sentence_transformers

    encoder = Bg2Vec.from_pretrained(finished_run.output_dir, torch_dtype="float32")
    assert encoder.description()["language"] == ["bg"]
    encoder.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "bg2vec_config.json").read_text())["language"] == ["bg"]
    card = (export_sentence_transformers(encoder, tmp_path / "st") / "README.md").read_text()
    assert card.startswith("---\nlanguage:\n- bg\nlibrary_name: sentence-transformers")
