"""Evaluation tasks from local files, scored by MTEB's own evaluators (hard triples excepted: MTEB has none).

A task is a folder: `task.json` ({"name", "type", "languages", "description", "source", "license"}) and JSON
lines, one object per line, in `test.jsonl` (and `train.jsonl` for classification):

| type | rows of test.jsonl | main score (MTEB's evaluator) |
| --- | --- | --- |
| `sts` | sentence1, sentence2, score (task.json: min_score, max_score) | Spearman of the cosines |
| `pair_classification` | sentence1, sentence2, label (0/1) | average precision (best of cosine, dot, distances) |
| `retrieval` | query, positive: [texts]; optional corpus.jsonl rows {text}: distractors | nDCG@10 (MRR@10, recall@k too) |
| `reranking` | query, positive: [texts], negative: [texts] | MAP (over each query's candidates) |
| `bitext_mining` | sentence1, sentence2 (languages[0], languages[1]) | F1, mean of both ways (sentence1 → 2 and 2 → 1) |
| `classification` | text, label (train.jsonl too) | accuracy of logistic regression, mean over 10 seeded runs |
| `clustering` | text, label | V-measure of k-means (k = labels), mean over 10 seeded runs |
| `hard_triples` | anchor, positive, negative | mean of cos(a, p) - cos(a, n) (Bg2Vec's metric) |
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.text_files import read_json_lines
from ..errors import ConfigError, DataError

TASK_FILE = "task.json"
TASK_TYPES = {
    "sts": ("sentence1", "sentence2", "score"),
    "pair_classification": ("sentence1", "sentence2", "label"),
    "retrieval": ("query", "positive"),
    "reranking": ("query", "positive", "negative"),
    "bitext_mining": ("sentence1", "sentence2"),
    "classification": ("text", "label"),
    "clustering": ("text", "label"),
    "hard_triples": ("anchor", "positive", "negative"),
}
MAIN_SCORES = {
    "sts": "cosine_spearman", "pair_classification": "max_ap", "retrieval": "ndcg_at_10", "reranking": "map_at_1000",
    "bitext_mining": "f1", "classification": "accuracy", "clustering": "v_measure", "hard_triples": "margin",
}  # fmt: skip
_MTEB_TYPES = {
    "sts": "STS", "pair_classification": "PairClassification", "retrieval": "Retrieval", "reranking": "Reranking",
    "bitext_mining": "BitextMining", "classification": "Classification", "clustering": "Clustering",
}  # fmt: skip


@dataclass
class LocalTask:
    """A task read from a folder: its description and rows per split (`test`, and `train` for classification)."""

    folder: Path
    name: str
    type: str
    languages: list[str]
    description: str
    rows: dict[str, list[dict[str, Any]]]
    corpus: list[str] = field(default_factory=list)  # retrieval distractors
    info: dict[str, Any] = field(default_factory=dict)  # the whole task.json

    @property
    def main_score(self) -> str:
        return MAIN_SCORES[self.type]

    def swapped(self) -> LocalTask:
        """A bitext task the other way round: sentence2 searched for each sentence1 becomes the reverse."""
        rows = [{"sentence1": r["sentence2"], "sentence2": r["sentence1"]} for r in self.rows["test"]]
        return LocalTask(self.folder, self.name, self.type, self.languages[::-1], self.description, {"test": rows},
                         info=self.info)

    def fingerprint(self) -> str:
        """A hash of the task's files: a changed file is a new task for the result cache."""
        digest = hashlib.sha256()
        for path in sorted(self.folder.iterdir()):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:16]


def is_local_task(reference: str) -> bool:
    return (Path(reference) / TASK_FILE).is_file()


def load_local_task(folder: str | Path, setting: str = "tasks") -> LocalTask:
    """Read and check a task folder; a bad file is a `DataError` naming file and line."""
    folder = Path(folder)
    info_path = folder / TASK_FILE
    if not info_path.is_file():
        raise ConfigError(setting, str(folder), f"a task folder with {TASK_FILE}" + (" or an MTEB task name" if setting == "tasks" else ""))
    info = _read_json(info_path)
    kind = info.get("type")
    if kind not in TASK_TYPES:
        raise DataError(f"{info_path}: type {kind!r} is not one of {', '.join(TASK_TYPES)}")
    languages = info.get("languages") or ["bul-Cyrl"]
    if not isinstance(languages, list) or not all(isinstance(code, str) and code for code in languages):
        raise DataError(f'{info_path}: "languages" must be a list of codes such as ["bul-Cyrl"], not {languages!r}')
    if not isinstance(info.get("name", ""), str):
        raise DataError(f'{info_path}: "name" must be a string')
    splits = ["train", "test"] if kind == "classification" else ["test"]
    rows = {split: _read_rows(folder / f"{split}.jsonl", ROW_RULES[kind]) for split in splits}
    if kind in ("classification", "clustering"):
        for split, split_rows in rows.items():
            labels = {str(row["label"]) for row in split_rows}
            if len(labels) < 2:
                raise DataError(f"{folder / f'{split}.jsonl'}: every row has the label {labels.pop()!r}; a {kind} task "
                                "needs at least 2 labels (with one, every model scores 1.0)")
    corpus_file = folder / "corpus.jsonl"
    corpus = [row["text"] for row in _read_rows(corpus_file, {"text": _text})] if corpus_file.exists() else []
    return LocalTask(
        folder=folder, name=str(info.get("name") or folder.name), type=kind, languages=list(languages),
        description=str(info.get("description", "")), rows=rows, corpus=corpus, info=info,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON object ({exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


# --- what a row of each task type holds: field -> a check giving the problem with a value, or None ------------


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"a string, not {type(value).__name__}"


def _texts(value: Any) -> str | None:
    if isinstance(value, str):
        return "a list of strings, not one string (write [\"...\"])"
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return "a non-empty list of strings"
    return None


def _score(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        return f"a finite number, not {value!r}"
    return None


def _binary(value: Any) -> str | None:
    return None if value in (0, 1) and not isinstance(value, (str, float)) else f"0 or 1, not {value!r}"


def _label(value: Any) -> str | None:
    return None if isinstance(value, (str, int)) and not isinstance(value, bool) else f"a string or whole number, not {value!r}"


ROW_RULES = {
    "sts": {"sentence1": _text, "sentence2": _text, "score": _score},
    "pair_classification": {"sentence1": _text, "sentence2": _text, "label": _binary},
    "retrieval": {"query": _text, "positive": _texts},
    "reranking": {"query": _text, "positive": _texts, "negative": _texts},
    "bitext_mining": {"sentence1": _text, "sentence2": _text},
    "classification": {"text": _text, "label": _label},
    "clustering": {"text": _text, "label": _label},
    "hard_triples": {"anchor": _text, "positive": _text, "negative": _text},
}
assert {kind: tuple(rules) for kind, rules in ROW_RULES.items()} == TASK_TYPES


def _read_rows(path: Path, rules: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file, each checked against `rules`; the first bad one is named by file:line."""
    if not path.is_file():
        raise DataError(f"{path} is missing: the task's type needs it")
    rows = []
    for number, row in read_json_lines(path):  # the data layer's reader: FILE:LINE, byte offsets for bad UTF-8
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number} is {type(row).__name__} {row!r}, not an object; rows need {', '.join(rules)}")
        missing = [name for name in rules if name not in row]
        if missing:
            raise DataError(f"{path}:{number} lacks {', '.join(missing)}; rows need {', '.join(rules)}")
        for name, check in rules.items():
            problem = check(row[name])
            if problem:
                raise DataError(f"{path}:{number}: {name!r} must be {problem}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


# --- scoring ----------------------------------------------------------------------------------------------


def as_mteb_task(task: LocalTask):
    """The task as an MTEB `AbsTask` with its data already in place, so MTEB's evaluator scores it."""
    from datasets import Dataset, DatasetDict
    from mteb import abstasks
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=task.name, description=task.description or task.name, type=_MTEB_TYPES[task.type],
        dataset={"path": f"local/{task.name}", "revision": task.fingerprint()}, eval_splits=["test"],
        eval_langs=task.languages if task.type != "bitext_mining" else ["-".join(task.languages)],
        main_score=task.main_score,
    )
    test = task.rows["test"]
    attributes: dict[str, Any] = {"metadata": metadata}
    if task.type == "sts":
        base = abstasks.AbsTaskSTS
        attributes.update(min_score=task.info.get("min_score", 0), max_score=task.info.get("max_score", 5))
        data: Any = DatasetDict({"test": Dataset.from_dict(_columns(test, ("sentence1", "sentence2", "score")))})
    elif task.type == "pair_classification":
        base = abstasks.AbsTaskPairClassification
        columns = _columns(test, ("sentence1", "sentence2", "label"))
        data = DatasetDict({"test": Dataset.from_dict(
            {"sentence1": [columns["sentence1"]], "sentence2": [columns["sentence2"]], "labels": [[int(v) for v in columns["label"]]]}
        )})
    elif task.type == "bitext_mining":
        base = abstasks.AbsTaskBitextMining
        data = DatasetDict({"test": Dataset.from_dict(_columns(test, ("sentence1", "sentence2")))})
    elif task.type == "classification":
        base = abstasks.AbsTaskClassification
        labels = sorted({str(row["label"]) for split in task.rows.values() for row in split})
        data = DatasetDict({
            split: Dataset.from_dict({"text": [r["text"] for r in rows], "label": [labels.index(str(r["label"])) for r in rows]})
            for split, rows in task.rows.items()
        })
    elif task.type == "clustering":
        base = abstasks.AbsTaskClustering
        # every text is embedded, and each of the 10 runs clusters all of them (MTEB's defaults subsample big sets)
        attributes.update(max_fraction_of_documents_to_embed=None, max_documents_per_cluster=len(test))
        data = DatasetDict({"test": Dataset.from_dict({"sentences": [r["text"] for r in test], "labels": [[str(r["label"])] for r in test]})})
    else:  # retrieval, reranking
        base = abstasks.AbsTaskRetrieval if task.type == "retrieval" else abstasks.AbsTaskReranking
        data = {"test": _retrieval_split(task)}
    mteb_task = type(f"Local{task.type.title().replace('_', '')}Task", (base,), attributes)()
    mteb_task.dataset = {"default": data}
    mteb_task.data_loaded = True
    return mteb_task


def _columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in names}


def _retrieval_split(task: LocalTask) -> dict[str, Any]:
    """MTEB's retrieval data: corpus and queries with ids, qrels, and (reranking) each query's candidates."""
    from datasets import Dataset

    documents: dict[str, str] = {}  # text → id, in first-seen order
    def doc_id(text: str) -> str:
        return documents.setdefault(text, f"d{len(documents)}")

    relevant, candidates = {}, {}
    for number, row in enumerate(task.rows["test"]):
        query = f"q{number}"
        relevant[query] = {doc_id(text): 1 for text in row["positive"]}
        if task.type == "reranking":
            candidates[query] = list(relevant[query]) + [doc_id(text) for text in row["negative"]]
    for text in task.corpus:
        doc_id(text)
    corpus = Dataset.from_dict({"id": list(documents.values()), "text": list(documents)})
    queries = Dataset.from_dict({"id": list(relevant), "text": [row["query"] for row in task.rows["test"]]})
    return {"corpus": corpus, "queries": queries, "relevant_docs": relevant, "top_ranked": candidates or None}


def hard_triple_scores(anchors: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> dict[str, float]:
    """Bg2Vec's hard-triple metric over (N, H) embeddings: the mean of cos(a, p) - cos(a, n) (`margin`), and
    the share of triples where the positive is closer (`accuracy`)."""
    def cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # (N,)
        x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        y = y / np.linalg.norm(y, axis=1, keepdims=True).clip(1e-12)
        return (x * y).sum(axis=1)

    gap = cosine(anchors, positives) - cosine(anchors, negatives)  # (N,)
    return {"margin": float(gap.mean()), "accuracy": float((gap > 0).mean()), "main_score": float(gap.mean())}
