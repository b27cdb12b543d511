"""Every folder bg2vec writes, one tiny chain of them (MNTP → SimCSE and supervised → encoder saved merged and
adapter-only → sentence-transformers export): each describes itself through the one schema, its model card says
what it is, and every loading line its card shows runs (bg2vec and sentence-transformers here, llm2vec in its own
0.2.3 environment). Also: the format_version policy, and one resolve / one config.json read per call and run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from bg2vec import Bg2Vec
from bg2vec.config import MNTPConfig, SimCSEConfig, SupervisedConfig
from bg2vec.encoding.export import export_sentence_transformers
from bg2vec.errors import ConfigError
from bg2vec.models import backbone, layouts
from bg2vec.models.saved_outputs import (
    BG2VEC_CONFIG_FILE, CONTRASTIVE_STAGES, FORMAT_VERSION, STAGES, TRAINING_STAGES, is_adapter, read_description,
)
from bg2vec.recipes.mntp import run_mntp
from bg2vec.recipes.simcse import run_simcse
from bg2vec.recipes.supervised import run_supervised

from conftest import REPO
from llm2vec_side import run_llm2vec

ROOT = REPO
FRUIT = "ябълка круша слива дюля череша вишна праскова кайсия смокиня грозде".split()
TINY = dict(max_seq_length=32, per_device_train_batch_size=4, max_steps=2, do_eval=False, lora_r=4,
            learning_rate=1e-3, logging_steps=1, save_steps=1000)  # fmt: skip


def quiet(*args, **kwargs):
    pass


class ConfigReads:
    """Counts bg2vec's reads of a model's config.json (`AutoConfig.from_pretrained` in the loader) while active.
    transformers (AutoTokenizer) and peft (saving an adapter) read it again on their own."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        counter = self

        class CountingAutoConfig:
            @staticmethod
            def from_pretrained(reference, *args, **kwargs):
                counter.paths.append(str(Path(reference).resolve()))
                return transformers.AutoConfig.from_pretrained(reference, *args, **kwargs)

        monkeypatch.setattr(backbone, "AutoConfig", CountingAutoConfig)

    def of(self, folder: Path) -> int:
        return self.paths.count(str(Path(folder).resolve()))


@pytest.fixture(scope="module")
def chain(tiny_model_dirs, corpus_files, tmp_path_factory):
    """One folder of every stage, built on each other, and how often each run read the base's config.json."""
    root = tmp_path_factory.mktemp("saved-outputs")
    base = tiny_model_dirs["mistral"]
    reads = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        counter = ConfigReads(monkeypatch)
        run_mntp(MNTPConfig(model_name_or_path=str(base), train_file=str(corpus_files["train"]),
                            output_dir=str(root / "mntp"), **TINY), log=quiet)  # fmt: skip
        reads["mntp"] = counter.of(base)
    with pytest.MonkeyPatch.context() as monkeypatch:
        counter = ConfigReads(monkeypatch)
        run_simcse(SimCSEConfig(model_name_or_path=str(base), peft_model_name_or_path=str(root / "mntp"),
                                train_file=str(corpus_files["train"]), output_dir=str(root / "simcse"), **TINY), log=quiet)  # fmt: skip
        reads["simcse"] = counter.of(base)
    e5 = root / "echo-data"
    e5.mkdir()
    rows = [{"query": f"Въпрос {i} за {FRUIT[i % 10]}?", "positive": f"{FRUIT[i % 10]} е плод номер {i}.",
             "negative": f"{FRUIT[(i + 3) % 10]} е плод номер {i}."} for i in range(12)]  # fmt: skip
    (e5 / "fever.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run_supervised(SupervisedConfig(model_name_or_path=str(base), peft_model_name_or_path=str(root / "mntp"),
                                    dataset_name="E5", dataset_file_path=str(e5), output_dir=str(root / "supervised"),
                                    **TINY), log=quiet)  # fmt: skip
    encoder = Bg2Vec.from_pretrained(str(root / "simcse"), torch_dtype="float32")
    encoder.save(root / "encoder-merged", merge_before_save=True)
    encoder.save(root / "encoder-adapter")
    export_sentence_transformers(encoder, root / "export")
    return {"root": root, "base": base, "reads": reads}


FOLDERS = {  # folder: (stage, adapter?)
    "mntp": ("mntp", True), "simcse": ("simcse", True), "supervised": ("supervised", True),
    "encoder-merged": ("encoder", False), "encoder-adapter": ("encoder", True), "export": ("export", False),
}  # fmt: skip


def test_the_stage_table_is_the_one_list():
    assert layouts.CONTRASTIVE_STAGES == CONTRASTIVE_STAGES == ("simcse", "supervised")
    assert layouts.TRAINING_STAGES == TRAINING_STAGES == ("mntp", "simcse", "supervised")
    assert {f"bg2vec-{name}" for name in STAGES if name != "export"} <= set(layouts.LAYOUTS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_folder_describes_itself_and_its_card_says_what_it_is(chain, folder):
    stage, adapter = FOLDERS[folder]
    path = chain["root"] / folder
    description = read_description(path)
    assert description["format_version"] == FORMAT_VERSION and description["stage"] == stage
    assert is_adapter(description) == adapter
    card = (path / "README.md").read_text(encoding="utf-8")
    library = "sentence-transformers" if stage == "export" else "peft" if adapter else "transformers"
    assert f"\nlibrary_name: {library}\n" in card
    if stage != "export":
        assert STAGES[stage].what in card
        assert ("LLM2Vec.from_pretrained(" in card) == ("llm2vec" in STAGES[stage].loads_with)
    expected = {"mntp": "bg2vec-mntp", "simcse": "bg2vec-simcse", "supervised": "bg2vec-supervised",
                "encoder": "bg2vec-encoder", "export": "sentence-transformers"}[stage]  # fmt: skip
    assert layouts.resolve_model(str(path)).layout == expected


def card_blocks(chain) -> dict[str, list[tuple[str, str]]]:
    """Every folder's card's code blocks, (language, code), the placeholder path replaced by the real one."""
    blocks = {}
    for folder in FOLDERS:
        path = chain["root"] / folder
        card = (path / "README.md").read_text(encoding="utf-8")
        card = card.replace("path/to/this/folder", str(path)).replace(f"path/to/{folder}", str(path))
        assert "path/to/" not in card, f"{folder}: a placeholder left in its card"
        blocks[folder] = re.findall(r"```(python|bash)\n(.*?)```", card, flags=re.S)
    return blocks


OURS = """
import json, os, shlex, sys, numpy as np
from bg2vec.cli import main
blocks = json.loads(open(sys.argv[1], encoding="utf-8").read())
open("texts.txt", "w", encoding="utf-8").write("София е столицата на България.\\nПловдив е стар град.\\n")
for folder, cards in blocks.items():
    for language, code in cards:
        if language == "bash":
            for line in filter(None, code.splitlines()):
                argv = shlex.split(line)
                assert argv[0] == "bg2vec", line
                assert main(argv[1:]) == 0, line
                assert np.load("embeddings.npy").shape[0] == 2
                os.remove("embeddings.npy")  # the next card's command writes it anew (encode never replaces unasked)
        else:
            space = {}
            exec(code, space)
            got = space.get("embeddings") if "embeddings" in space else space["model"].encode(["Пловдив е стар град."])
            assert np.isfinite(np.asarray(got)).all() and len(got) >= 1, (folder, code)
        print("ran", folder, language, flush=True)
"""

THEIRS = """
import json, sys, numpy as np
blocks = json.loads(open(sys.argv[1], encoding="utf-8").read())
for folder, code in blocks:
    space = {}
    exec(code, space)
    got = space["encoder"].encode(["София е столицата на България."], show_progress_bar=False)
    assert np.isfinite(np.asarray(got)).all(), folder
"""


def test_every_loading_line_each_card_shows_runs(chain, tmp_path):
    blocks = card_blocks(chain)
    ours = {f: [(lang, code) for lang, code in cards if "from llm2vec" not in code] for f, cards in blocks.items()}
    theirs = [(f, code) for f, cards in blocks.items() for _, code in cards if "from llm2vec" in code]
    assert [f for f, _ in theirs] == [f for f in FOLDERS if "llm2vec" in STAGES[FOLDERS[f][0]].loads_with]
    assert all(any("Bg2Vec.from_pretrained" in code for _, code in cards) for cards in ours.values())
    assert any("SentenceTransformer(" in code for _, code in ours["export"])

    (tmp_path / "ours.json").write_text(json.dumps(ours), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", OURS, str(tmp_path / "ours.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    ran = done.stdout.split("\n")
    assert sum(len(cards) for cards in ours.values()) == sum(line.startswith("ran ") for line in ran)

    (tmp_path / "theirs.json").write_text(json.dumps(theirs), encoding="utf-8")
    run_llm2vec(THEIRS, str(tmp_path / "theirs.json"))


def test_a_newer_format_is_refused_and_unknown_keys_warn(chain, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    description = read_description(chain["root"] / "simcse")
    file = folder / BG2VEC_CONFIG_FILE
    file.write_text(json.dumps({**description, "format_version": FORMAT_VERSION + 1, "bg2vec_version": "9.0"}))
    with pytest.raises(ConfigError, match=r"format_version.*bg2vec 9\.0 or newer") as error:
        read_description(folder)
    assert str(file) in str(error.value) and "\n" not in str(error.value)
    file.write_text(json.dumps({**description, "pooling_window": 3}))
    with pytest.warns(UserWarning, match="unknown keys pooling_window"):
        assert read_description(folder)["pooling_window"] == 3


def test_one_resolve_call_looks_each_reference_up_and_reads_each_file_once(chain, monkeypatch):
    lookups, reads = [], []
    find, description, read_json = layouts._find_folder, layouts.read_description, layouts.read_json
    monkeypatch.setattr(layouts, "_find_folder", lambda ref, setting: lookups.append(ref) or find(ref, setting))
    monkeypatch.setattr(layouts, "read_description", lambda folder: reads.append(Path(folder) / BG2VEC_CONFIG_FILE) or description(folder))
    monkeypatch.setattr(layouts, "read_json", lambda file: reads.append(file) or read_json(file))
    root = chain["root"]
    for reference in ("simcse", "encoder-adapter", "supervised"):
        lookups.clear(), reads.clear()
        plan = layouts.resolve_model(str(root / reference))
        assert plan.merged and plan.kept  # the chain base → MNTP merged → this adapter kept
        canonical = [str(Path(ref).resolve()) for ref in lookups]
        assert len(canonical) == len(set(canonical)), f"looked up again: {sorted(canonical)}"
        assert len(reads) == len(set(reads)), f"read again: {sorted(map(str, reads))}"
    lookups.clear()
    layouts.resolve_model(str(root / "mntp"), str(root / "simcse"))  # a model and an adapter: one memo
    assert len(lookups) == len({str(Path(ref).resolve()) for ref in lookups})


def test_a_training_run_reads_the_base_config_once(chain):
    """Checking the model, capping the sequence length and loading it share one read."""
    assert chain["reads"] == {"mntp": 1, "simcse": 1}


def test_the_one_config_read_feeds_the_checks(chain, tmp_path):
    plan = layouts.resolve_model(str(chain["root"] / "simcse"))
    model_config = backbone.read_model_config(plan)
    backbone.check_causal_lm(model_config, plan.reference)
    assert backbone.position_limit(model_config) == model_config.max_position_embeddings
    with pytest.raises(ConfigError, match="a decoder-only causal LM, not model_type 't5'"):
        backbone.check_causal_lm(transformers.T5Config(), "t5-small")
    with pytest.raises(ConfigError, match="a model with a config.json"):
        backbone.read_model_config(layouts.ModelPlan(str(tmp_path), "base", str(tmp_path), str(tmp_path)))
