"""The merge recipe (`bg2vec merge`): LoRA adapters of one base, stage and rank into one output folder. Reads top
to bottom:

1. read each adapter's bg2vec_config.json and adapter_config.json; refuse a different base, stage, MNTP adapter,
   rank or target modules (one line naming both adapters);
2. merge the weight updates exactly (`models.merging`: rank n·r, lora_alpha scaled to keep the scale);
3. write an ordinary output folder: adapter, tokenizer, bg2vec_config.json of the first adapter (references made
   relative to the new folder) with `merged_from` (the adapters, the method, each module's coefficients).

With --select-by (a greedy soup, Wortsman et al. 2022): score each adapter alone on those tasks, then add them best
first, keeping one only if the merged average score does not drop; the candidates' scores are recorded too.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from ..config.merge import MergeConfig
from ..errors import ConfigError
from ..models.adapters import read_adapter_config
from ..models.layouts import portable_reference, resolve_model
from ..models.merging import ADAPTER_WEIGHTS, load_adapter_weights, merge_lora_weights
from ..models.saved_outputs import CONTRASTIVE_STAGES, read_description, write_description
from ..paths import check_apart, check_output_dir

MUST_MATCH = ("stage", "base", "mntp_adapter", "r", "target_modules", "lora_alpha", "use_rslora")


def run_merge(config: MergeConfig) -> dict[str, Any]:
    """Merge `config.adapters` into `config.output`; returns the written bg2vec_config.json."""
    check_apart(config.output, "--output", {f"--adapters {a}": a for a in config.adapters} | {"--model": config.model_name_or_path})
    check_output_dir(config.output, config.overwrite, setting="--output", how_to_overwrite="pass --overwrite or pick another folder")
    base = resolve_model(config.model_name_or_path).weights
    facts = [_facts(folder, base) for folder in config.adapters]
    for name in MUST_MATCH:
        for folder, fact in zip(config.adapters[1:], facts[1:]):
            if fact[name] != facts[0][name]:
                raise ConfigError("--adapters", f"{config.adapters[0]} ({name} {facts[0][name]}) vs {folder} ({name} {fact[name]})",
                                  "adapters of one base, stage and rank", fix="merge only adapters trained alike")

    selection = None
    adapters = list(config.adapters)
    if config.select_by:
        adapters, selection = _greedy(config, adapters)
    _write_merge(config, adapters, config.output)
    description = read_description(config.output)
    if selection is not None:
        description["merged_from"]["selection"] = selection
        write_description(config.output, description)
    return description


def _greedy(config: MergeConfig, adapters: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The adapters a greedy soup keeps (best alone first; each next one only if the score does not drop)."""
    import tempfile

    from ..evaluation.mteb_model import Bg2VecMTEB
    from ..evaluation.runner import evaluate_tasks, resolve_tasks

    tasks = resolve_tasks(config.select_by)

    def score(folder: str) -> float:
        results = evaluate_tasks(lambda: Bg2VecMTEB(resolve_model(folder), use_instructions=False), tasks, None, "",
                                 config.batch_size, log=lambda *_: None)
        return sum(r.main_score for r in results) / len(results)

    alone = {folder: score(folder) for folder in adapters}
    ranked = sorted(adapters, key=lambda f: -alone[f])
    chosen, best, tried = [ranked[0]], alone[ranked[0]], []
    with tempfile.TemporaryDirectory() as scratch:
        for number, candidate in enumerate(ranked[1:]):
            trial = str(Path(scratch) / f"trial{number}")
            _write_merge(config, chosen + [candidate], trial)
            value = score(trial)
            tried.append({"added": str(Path(candidate).resolve()), "score": value, "kept": value >= best})
            if value >= best:
                chosen, best = chosen + [candidate], value
    selection = {"select_by": list(config.select_by), "alone": {str(Path(f).resolve()): v for f, v in alone.items()},
                 "tried": tried, "score": best}
    return chosen, selection


def _write_merge(config: MergeConfig, adapters: list[str], folder: str) -> dict[str, Any]:
    adapter_config = read_adapter_config(adapters[0])
    n, r, alpha = len(config.adapters), adapter_config["r"], adapter_config["lora_alpha"]
    scaling = alpha / (math.sqrt(r) if adapter_config.get("use_rslora") else r)
    weights, used = merge_lora_weights([load_adapter_weights(f) for f in adapters], scaling, config.method)

    from safetensors.torch import save_file

    output = Path(folder)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    first = Path(adapters[0])
    for file in first.iterdir():  # tokenizer files and the like; not checkpoints, reports or the adapter itself
        if file.is_file() and file.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
            shutil.copy2(file, output / file.name)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(output / ADAPTER_WEIGHTS))
    # rank n·r, and lora_alpha scaled so that the scale lora_alpha / r (or / sqrt(r)) stays the same
    new_alpha = alpha * (math.sqrt(n) if adapter_config.get("use_rslora") else n)
    (output / "adapter_config.json").write_text(json.dumps({**adapter_config, "r": n * r, "lora_alpha": new_alpha}, indent=2), encoding="utf-8")

    description = read_description(first)
    for key in ("base_model_name_or_path", "mntp_adapter"):
        if description.get(key):
            description[key] = portable_reference(_from(first, description[key]), output)
    description["training_files"] = [r for f in adapters for r in read_description(f).get("training_files", [])]
    description["merged_from"] = {"adapters": [str(Path(f).resolve()) for f in adapters], "method": config.method,
                                  "rank_each": r, "coefficients": used}
    return write_description(output, description)


def _from(folder: Path, reference: str) -> str:
    """A reference recorded in `folder`, as a path from here when it was relative to the folder."""
    candidate = folder / reference
    return str(candidate.resolve()) if not Path(reference).is_absolute() and candidate.exists() else reference


def _facts(folder: str, base: str) -> dict[str, Any]:
    description = read_description(folder)
    if description.get("stage") not in CONTRASTIVE_STAGES or not (Path(folder) / ADAPTER_WEIGHTS).is_file():
        raise ConfigError("--adapters", folder, f"an adapter folder written by bg2vec {' or '.join(CONTRASTIVE_STAGES)}")
    adapter = read_adapter_config(folder)
    recorded = resolve_model(_from(Path(folder), description["base_model_name_or_path"])).weights
    if recorded != base:
        raise ConfigError("--adapters", f"{folder} (base {recorded})", f"adapters trained on --model {base}",
                          fix="give the base they were trained on, or merge only adapters of one base")
    mntp = description.get("mntp_adapter")
    return {"stage": description["stage"], "base": recorded, "mntp_adapter": str(Path(_from(Path(folder), mntp)).resolve()) if mntp else None,
            "r": adapter.get("r"), "target_modules": sorted(adapter.get("target_modules") or []),
            "lora_alpha": adapter.get("lora_alpha"), "use_rslora": adapter.get("use_rslora", False)}
