"""Per-item contributions of a local task's main score, from the vectors its evaluator used: what the bootstrap
resamples (`bootstrap.py`).

| type | items | statistic on a resample |
| --- | --- | --- |
| retrieval | nDCG@10 of each query (ranked over every document) | mean (= MTEB's nDCG@10) |
| reranking | average precision of each query over its candidates | mean (= MAP) |
| sts | (cosine, gold score) of each pair | Spearman |
| pair_classification | (cosine, dot, -euclidean, -manhattan, label) of each pair | best average precision |
| bitext_mining | (row, nearest neighbour forward, backward) | weighted F1 (as MTEB), mean of both ways |
| hard_triples | cos(a, p) - cos(a, n) of each triple | mean |
| classification | each test row right or wrong (one logistic regression fitted on every train row) | mean |
| clustering | (k-means cluster, label) of each row (one seeded k-means) | V-measure |

The last two are stand-ins: MTEB's main score averages 10 subsampled runs, so `bootstrap.py` shifts the interval to
MTEB's score and takes only its width from these items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Vectors = Callable[[list[str], str], np.ndarray]  # (texts, role "query"/"document") -> (N, H)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def task_items(task: Any, vectors: Vectors) -> dict[str, Any]:
    """{"statistic": name, "values": per-item rows} for a `LocalTask`, from `vectors` (the embeddings MTEB used)."""
    rows = task.rows["test"]
    kind = task.type
    if kind in ("retrieval", "reranking"):
        return {"statistic": "mean", "values": _ranking_items(task, vectors)}
    if kind in ("sts", "pair_classification"):
        a = vectors([r["sentence1"] for r in rows], "query")  # (N, H)
        b = vectors([r["sentence2"] for r in rows], "query")  # (N, H)
        cosine = (_unit(a) * _unit(b)).sum(-1)  # (N,)
        if kind == "sts":
            return {"statistic": "spearman", "values": np.stack([cosine, [float(r["score"]) for r in rows]], 1).tolist()}
        columns = [cosine, (a * b).sum(-1), -np.linalg.norm(a - b, axis=-1), -np.abs(a - b).sum(-1), [int(r["label"]) for r in rows]]
        return {"statistic": "average_precision", "values": np.stack(columns, 1).tolist()}
    if kind == "bitext_mining":
        a = _unit(vectors([r["sentence1"] for r in rows], "query"))  # (N, H)
        b = _unit(vectors([r["sentence2"] for r in rows], "query"))  # (N, H)
        similarity = a @ b.T  # (N, N): row i's match is column i
        found = np.stack([np.arange(len(rows)), similarity.argmax(1), similarity.argmax(0)], 1)  # (N, 3)
        return {"statistic": "bitext_f1", "values": found.tolist()}
    if kind == "hard_triples":
        anchor, positive, negative = (_unit(vectors([r[k] for r in rows], "query")) for k in ("anchor", "positive", "negative"))
        return {"statistic": "mean", "values": ((anchor * positive).sum(-1) - (anchor * negative).sum(-1)).tolist()}
    if kind == "classification":
        from sklearn.linear_model import LogisticRegression

        train = task.rows["train"]
        classifier = LogisticRegression(max_iter=1000).fit(vectors([r["text"] for r in train], "query"), [str(r["label"]) for r in train])
        predicted = classifier.predict(vectors([r["text"] for r in rows], "query"))
        return {"statistic": "mean", "values": [float(p == str(r["label"])) for p, r in zip(predicted, rows)]}
    if kind == "clustering":
        from sklearn.cluster import KMeans

        labels = sorted({str(r["label"]) for r in rows})
        clusters = KMeans(n_clusters=len(labels), n_init=10, random_state=0).fit_predict(vectors([r["text"] for r in rows], "query"))
        return {"statistic": "v_measure", "values": [[int(c), labels.index(str(r["label"]))] for c, r in zip(clusters, rows)]}
    raise ValueError(f"no per-item scores for task type {kind!r}")


def _ranking_items(task: Any, vectors: Vectors) -> list[float]:
    """nDCG@10 per query over every document (retrieval), or AP per query over its candidates (reranking)."""
    rows = task.rows["test"]
    queries = _unit(vectors([r["query"] for r in rows], "query"))  # (Q, H)
    documents = list(dict.fromkeys([t for r in rows for t in r["positive"]] + [t for r in rows for t in r.get("negative", [])] + task.corpus))
    index = {text: i for i, text in enumerate(documents)}
    docs = _unit(vectors(documents, "document"))  # (D, H)
    similarity = queries @ docs.T  # (Q, D)
    values = []
    for q, row in enumerate(rows):
        relevant = {index[t] for t in row["positive"]}
        if task.type == "reranking":
            candidates = [index[t] for t in dict.fromkeys(row["positive"] + row["negative"])]
            order = [candidates[i] for i in np.argsort(-similarity[q, candidates], kind="stable")]
            hits = np.array([d in relevant for d in order], dtype=float)
            values.append(float((np.cumsum(hits) / np.arange(1, len(hits) + 1) * hits).sum() / max(len(relevant), 1)))
        else:
            order = np.argsort(-similarity[q], kind="stable")[:10]
            gains = np.array([float(d in relevant) for d in order])
            dcg = (gains / np.log2(np.arange(2, len(gains) + 2))).sum()
            ideal = (1 / np.log2(np.arange(2, min(len(relevant), 10) + 2))).sum()
            values.append(float(dcg / ideal) if ideal else 0.0)
    return values
