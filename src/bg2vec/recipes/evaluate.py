"""The evaluation recipe (`bg2vec evaluate`): resolve the tasks, score each model (from the cache where it
can), write the report. Reads top to bottom.

1. check the output folder (apart from every model and task folder) and the tasks (MTEB names or local folders);
2. for each model: resolve it once, for its cache key (files + settings) and, only if a task is missing from the
   cache, to load it (an off-the-shelf `encoder:`/`python:` reference is keyed by its package and version);
3. with --contamination, the share of each task's texts found in each model's recorded training files (checked
   before anything is scored, so a model without a record stops the run with nothing written);
4. write evaluation.json / .md / .png with these runs and any earlier ones (`--compare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..config import EvaluateConfig
from ..errors import ConfigError
from ..evaluation.contamination import overlap, read_training_texts, task_texts, training_files
from ..evaluation.external import describe_external, is_external, load_external
from ..evaluation.local_tasks import LocalTask
from ..evaluation.mteb_model import Bg2VecMTEB, ExternalMTEB
from ..evaluation.report import read_runs, write_report
from ..evaluation.runner import ResultCache, evaluate_tasks, external_key, model_key, resolve_tasks
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
    plans = [None if is_external(reference) else resolve_model(reference, config.adapter) for reference in config.models]
    for reference, plan in zip(config.models, plans):  # the whole chain each model reads: base, adapters, tokenizer
        if plan is not None:
            inputs |= plan_inputs(plan, f"--model {reference}")
    check_apart(config.output_dir, "--output-dir", inputs)
    if config.cache_dir and not config.no_cache:
        check_apart(config.cache_dir, "--cache-dir", inputs)
    check_output_dir(config.output_dir, config.overwrite, setting="--output-dir",
                     how_to_overwrite="pass --overwrite to replace the earlier report, or pick another folder")
    earlier = read_runs(config.compare)
    tasks = resolve_tasks(config.tasks, config.benchmark) if config.models else []
    cache = None if config.no_cache else ResultCache(config.cache_dir)
    contamination = {m: _contamination(m, tasks, config.contamination_threshold, log) for m in config.models} if config.contamination else {}

    runs = []
    for number, (reference, plan) in enumerate(zip(config.models, plans)):
        if is_external(reference):  # an off-the-shelf encoder: keyed by its package's name and version
            settings = describe_external(reference)
            log(f"model {reference} ({settings['package']} {settings['version']})")
            load = lambda reference=reference: ExternalMTEB(load_external(reference))  # noqa: E731
            scores = evaluate_tasks(load, tasks, cache, external_key(settings), config.batch_size, log=log)
            runs.append({"model": reference, "adapter": None, "label": config.labels[number] if config.labels else None,
                         "settings": settings, "tasks": [score.as_dict() for score in scores]})
            if contamination:
                runs[-1]["contamination"] = contamination[reference]
            continue
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
        if contamination:
            runs[-1]["contamination"] = contamination[reference]
    table = write_report(config.output_dir, earlier + runs)
    record_written(config.output_dir)
    return EvaluateResult(config.output_dir, earlier + runs, table)


def _contamination(reference: str, tasks: list[Any], threshold: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Per task, the shares of its texts in `reference`'s recorded training files; warns above `threshold`."""
    records = None if is_external(reference) else training_files(reference)
    if records is None:
        raise ConfigError("--contamination", reference, "training outputs that recorded their training files (bg2vec mntp, simcse, supervised)",
                          fix="this model recorded none, so its overlap is unknown: leave it out of --contamination runs")
    training, unreadable = read_training_texts(records)
    shares: dict[str, Any] = {}
    for task in tasks:
        if not isinstance(task, LocalTask):
            shares[task.metadata.name] = None  # an MTEB hub task: its texts are not read here
            continue
        shares[task.name] = found = overlap(task_texts(task), training)
        if max(found["exact"], found["ngram"]) > threshold:
            log(f"warning: {task.name}: {found['exact']:.1%} of its texts occur in {reference}'s training text "
                f"({found['ngram']:.1%} share a {found['ngram_n']}-gram)")
    return {"files": [r["path"] for r in records], "unreadable": unreadable, "tasks": shares}
