"""Every command is built from its config dataclass: the flags are generated from the fields (each default lives
once), a CONFIG.json gives settings that flags override, and importing bg2vec or its config stays light."""

import dataclasses
import json
import subprocess
import sys

import pytest

from bg2vec import cli
from bg2vec.config import EncodeConfig, EvaluateConfig, MineNegativesConfig, PrepareConfig, ServeConfig

GENERATED = {"encode": EncodeConfig, "mine-negatives": MineNegativesConfig, "evaluate": EvaluateConfig, "prepare": PrepareConfig,
             "serve": ServeConfig}
REQUIRED = {
    "encode": ["--model", "m", "--input", "a.txt", "--output", "b.npy"],
    "mine-negatives": ["--model", "m", "--input", "a.jsonl", "--output", "b.jsonl"],
    "evaluate": ["--model", "m", "--tasks", "t", "--output-dir", "out"],
    "prepare": ["a.txt", "--model", "m", "--output", "out"],
    "serve": ["--model", "m"],
}


@pytest.fixture
def built(monkeypatch):
    """Run `bg2vec ARGS` up to the config it builds, and return that config (nothing is loaded or run)."""
    seen = []
    for name, command in cli.COMMANDS.items():
        monkeypatch.setitem(cli.COMMANDS, name, dataclasses.replace(command, run=lambda config, args: seen.append(config)))

    def build(*argv):
        assert cli.main(list(argv)) == 0
        return seen.pop()

    return build


@pytest.mark.parametrize("command", GENERATED)
def test_unset_flags_leave_the_dataclass_defaults(built, command):
    config = built(command, *REQUIRED[command])
    given = {"model_name_or_path", "models", "input", "inputs", "output", "output_dir", "tasks"}
    expected = GENERATED[command](**{k: v for k, v in dataclasses.asdict(config).items() if k in given})
    assert config == expected


@pytest.mark.parametrize("command", GENERATED)
def test_every_field_is_a_flag_with_its_help(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(GENERATED[command]):
        assert " ".join(field.metadata["help"].split()) in shown, field.name


def test_todays_spellings_reach_the_config(built):
    encode = built("encode", *REQUIRED["encode"], "--batch-size", "4", "--max-length", "64", "--device", "cpu,cpu",
                   "--dim", "16", "--normalize", "--pooling-mode", "eos_token", "--max-batch-tokens", "256")
    assert (encode.batch_size, encode.max_length, encode.dim, encode.normalize) == (4, 64, 16, True)
    assert encode.devices() == ["cpu", "cpu"] and encode.pooling_mode == "eos_token" and encode.max_batch_tokens == 256
    evaluate = built("evaluate", "--model", "a", "--model", "b", "--label", "A", "B", "--tasks", "t1", "t2",
                     "--compare", "run1", "--output-dir", "out", "--no-cache", "--causal", "--overwrite")
    assert evaluate.models == ["a", "b"] and evaluate.labels == ["A", "B"] and evaluate.tasks == ["t1", "t2"]
    assert evaluate.compare == ["run1"] and evaluate.no_cache and evaluate.causal and evaluate.overwrite
    mining = built("mine-negatives", *REQUIRED["mine-negatives"], "--top-k", "9", "--max-score-ratio", "1.0", "--overwrite")
    assert (mining.top_k, mining.max_score_ratio, mining.overwrite) == (9, 1.0, True)


def test_a_config_file_gives_settings_that_flags_override(built, tmp_path, capsys):
    path = tmp_path / "encode.json"
    path.write_text(json.dumps({"model_name_or_path": "m", "input": "a.txt", "output": "b.npy", "batch_size": 8,
                                "normalize": True}))
    config = built("encode", str(path), "--batch-size", "4")
    assert (config.batch_size, config.normalize, config.model_name_or_path) == (4, True, "m")
    assert built("encode", str(path), "--no-normalize").normalize is False

    path.write_text(json.dumps({"model_name_or_path": "m", "input": "a.txt", "output": "b.npy", "batch_sise": 8}))
    assert cli.main(["encode", str(path)]) == 2
    assert "batch_sise" in capsys.readouterr().err
    path.write_text(json.dumps({"model_name_or_path": "m", "input": "a.txt", "output": "b.npy", "batch_size": "many"}))
    assert cli.main(["encode", str(path)]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_a_missing_setting_names_its_flag(capsys):
    assert cli.main(["encode", "--input", "a.txt", "--output", "b.npy"]) == 2
    assert "--model" in capsys.readouterr().err


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint([m for m in sys.modules if m.split('.')[0] in ('torch', 'datasets', 'peft', 'transformers')])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(done.stdout.strip().splitlines()[-1])


def test_import_bg2vec_and_its_config_stay_light():
    assert _loaded_after("import bg2vec") == []
    assert _loaded_after("import bg2vec.config; import bg2vec.cli") == []
    assert "transformers.trainer" not in _loaded_after("from bg2vec import Bg2Vec; assert Bg2Vec.from_pretrained")
