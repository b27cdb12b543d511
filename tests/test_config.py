import json
from pathlib import Path

import pytest

from bg2vec.config import MNTPConfig, config_from_dict, load_config
from bg2vec.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# The keys of llm2vec's train_configs/mntp/Mistral.json and Bg2Vec's model_configurations/bggpt-7b.json.
LLM2VEC_MISTRAL = {
    "model_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "dataset_name": "wikitext",
    "dataset_config_name": "wikitext-103-raw-v1", "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32, "gradient_accumulation_steps": 1, "do_train": True, "do_eval": True,
    "max_seq_length": 512, "mask_token_type": "blank", "data_collator_type": "all_mask", "mlm_probability": 0.8,
    "overwrite_output_dir": True, "output_dir": "output/mlm/Mistral-7B-Instruct-v0.2",
    "evaluation_strategy": "steps", "eval_steps": 100, "save_steps": 200, "stop_after_n_steps": 1000,
    "lora_r": 16, "gradient_checkpointing": True, "torch_dtype": "bfloat16", "attn_implementation": "flash_attention_2",
}
BG2VEC_BGGPT = {
    "model_name_or_path": "INSAIT-Institute/BgGPT-7B-Instruct-v0.2", "dataset_name": "mboyanov/bgwiki",
    "output_dir": "./bggpt-mntp-2", "cache_dir": "/data/bggpt", "max_train_samples": 50000, "max_eval_samples": 5000,
    "per_device_train_batch_size": 32, "do_train": True, "torch_dtype": "bfloat16", "bf16": True,
    "stop_after_n_steps": 1000, "gradient_checkpointing": True, "attn_implementation": "flash_attention_2",
    "do_eval": True, "max_seq_length": 512, "mask_token_type": "blank", "data_collator_type": "all_mask",
    "mlm_probability": 0.8, "evaluation_strategy": "steps", "eval_steps": 100, "save_steps": 200, "lora_r": 16,
    "dataloader_num_workers": 6, "dataloader_prefetch_factor": 3,
}


@pytest.mark.parametrize("values", [LLM2VEC_MISTRAL, BG2VEC_BGGPT], ids=["llm2vec-mistral", "bg2vec-bggpt"])
def test_reference_configs_parse_as_is(values):
    config = config_from_dict(MNTPConfig, values)
    assert config.eval_strategy == "steps"  # from the old name evaluation_strategy
    assert config.lora_r == 16 and config.lora_alpha == 32 and config.lora_dropout == 0.05
    assert config.mlm_probability == 0.8 and config.data_collator_type == "all_mask"
    if "dataloader_prefetch_factor" in values:
        assert config.extra_training_args == {"dataloader_prefetch_factor": 3}


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.json") if "simcse" not in p.name and "supervised" not in p.name))
def test_presets_parse(preset):
    config = load_config(MNTPConfig, CONFIGS / preset)
    assert config.model_name_or_path and config.output_dir


def test_bggpt_preset_is_the_seed_run():
    config = load_config(MNTPConfig, CONFIGS / "bggpt-7b.json")
    assert (config.data_collator_type, config.mlm_probability, config.mask_token_type) == ("all_mask", 0.8, "blank")
    assert (config.max_seq_length, config.per_device_train_batch_size, config.stop_after_n_steps) == (512, 32, 1000)
    assert (config.lora_r, config.bf16, config.gradient_checkpointing) == (16, True, True)
    assert (config.eval_steps, config.save_steps) == (100, 200)
    assert (config.max_train_samples, config.max_eval_samples) == (50000, 5000)


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError) as error:
        config_from_dict(MNTPConfig, {**LLM2VEC_MISTRAL, "lora_rank": 8, "mask_typ": "x"})
    assert "lora_rank" in str(error.value) and "mask_typ" in str(error.value)
    assert "\n" not in str(error.value)


def test_cli_overrides_are_typed(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(LLM2VEC_MISTRAL))
    config = load_config(
        MNTPConfig, path, {"lora_r": "8", "mlm_probability": "0.2", "gradient_checkpointing": "false",
                           "lora_target_modules": "q_proj,v_proj", "evaluation_strategy": "no"}
    )
    assert config.lora_r == 8 and config.lora_alpha == 16
    assert config.mlm_probability == 0.2 and config.gradient_checkpointing is False
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.eval_strategy == "no"


@pytest.mark.parametrize(
    "key, value",
    [("mlm_probability", 0.0), ("mlm_probability", 1.2), ("mask_token_type", "underscore"),
     ("data_collator_type", "bert"), ("max_seq_length", 1), ("lora_r", 0), ("torch_dtype", "fp8"),
     ("lora_r", "sixteen")],
)
def test_bad_values_name_the_setting(key, value):
    with pytest.raises(ConfigError) as error:
        config_from_dict(MNTPConfig, {**LLM2VEC_MISTRAL, key: value})
    assert str(error.value).startswith(f"{key}=")


def test_exactly_one_data_source():
    values = {k: v for k, v in LLM2VEC_MISTRAL.items() if k != "dataset_name"}
    with pytest.raises(ConfigError, match="data source"):
        config_from_dict(MNTPConfig, values)
    with pytest.raises(ConfigError, match="data source"):
        config_from_dict(MNTPConfig, {**LLM2VEC_MISTRAL, "train_file": "a.txt"})


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file"):
        load_config(MNTPConfig, tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="config file"):
        load_config(MNTPConfig, bad)


@pytest.mark.parametrize("language", ["bg", ["BG"], ["bulgarian"], [1]])
def test_language_is_a_list_of_iso_codes(language):
    with pytest.raises(ConfigError, match="ISO 639"):
        MNTPConfig(model_name_or_path="m", train_file="t.txt", output_dir="o", language=language)
    assert MNTPConfig(model_name_or_path="m", train_file="t.txt", output_dir="o", language=["bg", "en"]).language == ["bg", "en"]
