"""The merge recipe (`bg2vec merge`): LoRA adapters of one base, stage and rank into one output folder. Reads top
to bottom:

1. read each adapter's bg2vec_config.json and adapter_config.json; refuse a different base, stage, MNTP adapter,
   rank or target modules (one line naming both adapters);
2. merge the weight updates exactly (`models.merging`: rank n·r, lora_alpha scaled to keep the scale);
3. write an ordinary output folder: adapter, tokenizer, bg2vec_config.json of the first adapter (references made
   relative to the new folder) with `merged_from` (the adapters, the method, each module's coefficients).
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
                                  f"adapters of one base, stage and rank", fix="merge only adapters trained alike")

    adapter_config = read_adapter_config(config.adapters[0])
    n, r, alpha = len(config.adapters), adapter_config["r"], adapter_config["lora_alpha"]
    scaling = alpha / (math.sqrt(r) if adapter_config.get("use_rslora") else r)
    weights, used = merge_lora_weights([load_adapter_weights(f) for f in config.adapters], scaling, config.method)

    from safetensors.torch import save_file

    output = Path(config.output)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    first = Path(config.adapters[0])
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
    description["training_files"] = [r for f in config.adapters for r in read_description(f).get("training_files", [])]
    description["merged_from"] = {"adapters": [str(Path(f).resolve()) for f in config.adapters], "method": config.method,
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
