"""Score an encoder on tasks (MTEB tasks by name, or local task folders), with results cached per
(model, task, settings): a re-run computes nothing it has computed before.

The cache key of a model is what decides its embeddings: the files of its weights, tokenizer and adapters
(names, sizes, modification times; a Hub snapshot by its commit), and the settings (pooling, max length,
dtype, instructions). A task's key is its name and, for a local task, a hash of its files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..models.layouts import ModelPlan
from ..paths import default_cache_dir
from .items import task_items
from .local_tasks import LocalTask, as_mteb_task, hard_triple_scores, is_local_task, load_local_task

RESULT_FORMAT_VERSION = 2  # 2: local tasks store per-item scores (for bootstrap intervals)
# MTEB's Bulgarian tasks (Bg2Vec's table), and the bitext mining sets that pair Bulgarian with English.
BULGARIAN_BENCHMARK = (
    "BulgarianStoreReviewSentimentClassfication", "LanguageClassification", "MultilingualSentimentClassification",
    "SIB200Classification", "SIB200ClusteringS2S", "BelebeleRetrieval", "WikipediaRetrievalMultilingual", "XNLI",
    "WikipediaRerankingMultilingual", "MultiEURLEXMultilabelClassification", "FloresBitextMining",
    "NTREXBitextMining", "Tatoeba",
)  # fmt: skip
BENCHMARKS = {"bulgarian": BULGARIAN_BENCHMARK}


@dataclass(frozen=True)
class TaskScore:
    """One task's result: its main score, every score MTEB reported (as plain JSON values), the per-item scores a
    bootstrap resamples (local tasks; `items.py`), and whether it came from the cache."""

    task: str
    type: str
    main_score: float
    scores: dict[str, Any]
    cached: bool = False
    items: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", json.loads(json.dumps(self.scores, default=_json_default)))

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "type": self.type, "main_score": self.main_score, "scores": self.scores, "items": self.items}


def resolve_tasks(names: list[str], benchmark: str | None = None) -> list[Any]:
    """Local task folders (`LocalTask`) and MTEB tasks by name (Bulgarian subsets where a task has several).
    MTEB tasks load their data from the Hugging Face cache when offline (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1)."""
    import mteb

    wanted = list(BENCHMARKS[benchmark]) if benchmark else []
    wanted += [name for name in names if name not in wanted]
    local = [load_local_task(name) for name in wanted if is_local_task(name)]
    remote = [name for name in wanted if not is_local_task(name)]
    found, missing = [], []
    for name in remote:
        try:
            # the Bulgarian subsets of a multilingual task; a task without Bulgarian comes whole
            found += mteb.get_tasks(tasks=[name], languages=["bul"]) or mteb.get_tasks(tasks=[name])
        except KeyError:
            missing.append(name)
    if missing:
        raise ConfigError("tasks", ", ".join(missing), "MTEB task names, or local task folders (with task.json)",
                          fix=_close_matches(missing))
    return local + found


def _close_matches(names: list[str]) -> str | None:
    """'did you mean ...?' for misspelled MTEB task names (difflib over MTEB's task list)."""
    import difflib

    import mteb

    known = sorted({task.metadata.name for task in mteb.get_tasks()})
    lowered = {name.lower(): name for name in known}
    hints = []
    for name in names:
        close = difflib.get_close_matches(name.lower(), list(lowered), n=2, cutoff=0.8)
        if close:
            hints.append(f"{name}: did you mean {' or '.join(lowered[c] for c in close)}?")
    return "; ".join(hints) or None


def model_key(plan: ModelPlan, settings: dict[str, Any]) -> str:
    """A hash of what decides the embeddings: the model's files and the encoder settings."""
    parts: list[Any] = [RESULT_FORMAT_VERSION, sorted(settings.items())]
    for reference in (plan.weights, plan.tokenizer, *plan.adapters):
        folder = Path(reference)
        if folder.is_dir():
            parts.append([(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(folder.iterdir()) if p.is_file()])
            parts.append(str(folder.resolve()))
        else:
            parts.append(reference)
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def external_key(identity: dict[str, str]) -> str:
    """A hash of an off-the-shelf encoder's identity: reference, package name and version."""
    parts = [RESULT_FORMAT_VERSION, sorted(identity.items())]
    return "external-" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def task_key(task: Any) -> str:
    """A hash of the task's name and content (a local task's files, an MTEB task's revision): a file name derived
    from user text, never joined from it (a task.json name "../../x" stays inside the cache)."""
    if isinstance(task, LocalTask):
        parts = ["local", task.name, task.fingerprint()]
    else:
        parts = ["mteb", task.metadata.name, task.metadata.revision or "main"]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class ResultCache:
    """JSON results under `root/<model key>/<task key>.json`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir() / "evaluate"

    def path(self, model: str, task: str) -> Path:
        return self.root / model / f"{task}.json"

    def get(self, model: str, task: str) -> TaskScore | None:
        path = self.path(model, task)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        return TaskScore(saved["task"], saved["type"], saved["main_score"], saved["scores"], cached=True, items=saved.get("items"))

    def put(self, model: str, task: str, score: TaskScore) -> None:
        path = self.path(model, task)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(score.as_dict(), indent=1), encoding="utf-8")
        os.replace(partial, path)


def evaluate_tasks(
    load_model: Callable[[], Any],
    tasks: list[Any],
    cache: ResultCache | None,
    key: str,
    batch_size: int = 32,
    log: Callable[[str], None] = print,
) -> list[TaskScore]:
    """Score every task; `load_model()` (a `Bg2VecMTEB`) is called only if some task is not in the cache."""
    results, model = [], None
    for task in tasks:
        name = task.name if isinstance(task, LocalTask) else task.metadata.name
        cached = cache.get(key, task_key(task)) if cache else None
        if cached is not None:
            log(f"{name}: {cached.main_score:.4f} (cached)")
            results.append(cached)
            continue
        model = model or load_model()
        score = score_task(model, task, batch_size)
        log(f"{name}: {score.main_score:.4f}")
        if cache:
            cache.put(key, task_key(task), score)
        results.append(score)
    return results


def score_task(model: Any, task: Any, batch_size: int = 32) -> TaskScore:
    """One task scored with `model` (a `Bg2VecMTEB` or `ExternalMTEB`): MTEB's evaluator, or the hard-triple
    metric; a local task also gets its per-item scores, from the very vectors its evaluator used."""
    if not isinstance(task, LocalTask):
        return _score(model, task, batch_size)
    with _Recording(model) as seen:
        score = _score(model, task, batch_size)
        items = task_items(task, seen.vectors)
    return TaskScore(score.task, score.type, score.main_score, score.scores, items=items)


class _Recording:
    """Keeps every vector `model.encode` returns, by (role, text), while in the `with` block."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seen: dict[tuple[str, str], np.ndarray] = {}

    def __enter__(self) -> _Recording:
        original, original_texts = self.model.encode, self.model.encode_texts

        def encode(inputs: Any, *args: Any, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            batches = list(inputs)
            out = original(batches, *args, prompt_type=prompt_type, **kwargs)
            texts = [text for batch in batches for text in batch["text"]]
            self.seen.update(zip(((_role(prompt_type), text) for text in texts), np.asarray(out)))
            return out

        def encode_texts(texts: list[str], batch_size: int = 32) -> np.ndarray:
            out = original_texts(texts, batch_size)
            self.seen.update(zip((("query", text) for text in texts), np.asarray(out)))
            return out

        self.model.encode, self.model.encode_texts = encode, encode_texts
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.model.encode, self.model.encode_texts

    def vectors(self, texts: list[str], role: str) -> np.ndarray:
        """(N, H) recorded vectors; a document falls back to its query-role vector (a symmetric task), and a text
        the evaluator never encoded (MTEB's classification subsamples its train rows) is encoded here, plainly."""
        found = [self.seen.get((role, t), self.seen.get(("query", t))) for t in texts]
        missing = list(dict.fromkeys(t for t, v in zip(texts, found) if v is None))
        if missing:
            self.model.encode_texts(missing)  # recorded as it goes (the patched method)
            found = [self.seen.get((role, t), self.seen.get(("query", t))) for t in texts]
        return np.stack(found).astype(np.float32)


def _role(prompt_type: Any) -> str:
    return "document" if str(getattr(prompt_type, "value", prompt_type)) == "document" else "query"


def _score(model: Any, task: Any, batch_size: int) -> TaskScore:
    import mteb

    if isinstance(task, LocalTask) and task.type == "hard_triples":
        rows = task.rows["test"]
        embed = lambda key: model.encode_texts([r[key] for r in rows], batch_size=batch_size)  # noqa: E731
        scores = hard_triple_scores(embed("anchor"), embed("positive"), embed("negative"))
        return TaskScore(task.name, task.type, scores["main_score"], scores)
    if isinstance(task, LocalTask) and task.type == "bitext_mining":  # both ways: 1 -> 2, then 2 -> 1
        forward = _mteb_scores(model, as_mteb_task(task), batch_size)
        backward = _mteb_scores(model, as_mteb_task(task.swapped()), batch_size)
        scores = {"forward": forward, "backward": backward}
        main = (forward["test"][0]["main_score"] + backward["test"][0]["main_score"]) / 2
        return TaskScore(task.name, task.type, float(main), scores)
    mteb_task = as_mteb_task(task) if isinstance(task, LocalTask) else task
    kind = task.type if isinstance(task, LocalTask) else mteb_task.metadata.type
    result = mteb.evaluate(model, [mteb_task], cache=None, show_progress_bar=False,
                           encode_kwargs={"batch_size": batch_size}).task_results[0]
    return TaskScore(mteb_task.metadata.name, kind, float(result.get_score()), result.scores)


def _mteb_scores(model: Any, mteb_task: Any, batch_size: int) -> dict[str, Any]:
    import mteb

    return mteb.evaluate(model, [mteb_task], cache=None, show_progress_bar=False,
                         encode_kwargs={"batch_size": batch_size}).task_results[0].scores


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)

