"""The evaluation recipe (`bg2vec evaluate`): resolve the tasks, score each model (from the cache where it
can), write the report. Reads top to bottom.

1. check the output folder (apart from every model and task folder) and the tasks (MTEB names or local folders);
2. for each model: resolve it once, for its cache key (files + settings) and, only if a task is missing from the
   cache, to load it;
3. write evaluation.json / .md / .png with these runs and any earlier ones (`--compare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..config import EvaluateConfig
from ..evaluation.mteb_model import Bg2VecMTEB
from ..evaluation.report import read_runs, write_report
from ..evaluation.runner import ResultCache, evaluate_tasks, model_key, resolve_tasks
from ..models.layouts import resolve_model
from ..paths import check_apart, check_output_dir, plan_inputs, record_written


@dataclass
class EvaluateResult:
    output_dir: str
    runs: list[dict[str, Any]]
    table: str


def run_evaluate(config: EvaluateConfig, log: Callable[[str], None] = print) -> EvaluateResult:
    """Score `config.models` on `config.tasks` and write the report (see the module docstring)."""
    inputs = {f"--model {m}": m for m in config.models} | {"--adapter": config.adapter}
    inputs |= {f"--tasks {t}": t for t in config.tasks} | {f"--compare {c}": c for c in config.compare}
    plans = [resolve_model(reference, config.adapter) for reference in config.models]
    for reference, plan in zip(config.models, plans):  # the whole chain each model reads: base, adapters, tokenizer
        inputs |= plan_inputs(plan, f"--model {reference}")
    check_apart(config.output_dir, "--output-dir", inputs)
    if config.cache_dir and not config.no_cache:
        check_apart(config.cache_dir, "--cache-dir", inputs)
    check_output_dir(config.output_dir, config.overwrite, setting="--output-dir",
                     how_to_overwrite="pass --overwrite to replace the earlier report, or pick another folder")
    earlier = read_runs(config.compare)
    tasks = resolve_tasks(config.tasks, config.benchmark) if config.models else []
    cache = None if config.no_cache else ResultCache(config.cache_dir)

    runs = []
    for number, (reference, plan) in enumerate(zip(config.models, plans)):
        overrides = {"pooling_mode": config.pooling_mode, "max_length": config.max_length}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        settings = {**plan.settings, **overrides, "torch_dtype": config.torch_dtype, "instructions": config.instructions}
        if config.causal:
            settings["bidirectional"] = False
        log(f"model {reference}" + (f" + {config.adapter}" if config.adapter else ""))
        load = lambda plan=plan: Bg2VecMTEB(  # noqa: E731 - the plan resolved above: the model is resolved once
            plan, torch_dtype=config.torch_dtype, trust_remote_code=config.trust_remote_code,
            use_instructions=config.instructions, enable_bidirectional=False if config.causal else None, **overrides,
        )
        scores = evaluate_tasks(load, tasks, cache, model_key(plan, settings), config.batch_size, log=log)
        runs.append({
            "model": reference, "adapter": config.adapter,
            "label": config.labels[number] if config.labels else None, "settings": settings,
            "tasks": [score.as_dict() for score in scores],
        })
    table = write_report(config.output_dir, earlier + runs)
    record_written(config.output_dir)
    return EvaluateResult(config.output_dir, earlier + runs, table)
