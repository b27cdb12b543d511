"""Supervised contrastive data: (query, positive, hard negatives, instruction) rows, grouped by dataset.

A JSON-lines file is one dataset (named by its file's stem); a folder is one dataset per `*.jsonl` file, which is
llm2vec's E5 layout (`cache/echo-data/{allnli,fever,...}.jsonl`) read as it is; a `save_to_disk` folder or
`hub:NAME` (a Hub dataset, its train split) with the same columns, grouped by a `dataset` column where it has one. A row is
`{"query": ..., "positive": ..., "negative": ... or [...], "instruction": ...}`; `negative` and `instruction` are
optional. Without its own instruction, a row of an E5 dataset gets llm2vec's instruction for it (alternating
between the two where llm2vec has two), written as llm2vec writes it ("...; " before the query).

Batches hold one dataset at a time (llm2vec's sampler): each dataset's rows are shuffled and cut into full
batches, the remainder is dropped, and the batches of all datasets are shuffled together, so in-batch negatives
come from the same task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, first_line
from .saved_datasets import load_saved
from .text_files import read_json_lines

# llm2vec 0.2.3's E5_EMBEDDING_PROMPTS (llm2vec/dataset/E5Data.py): the instruction of each E5 dataset.
E5_INSTRUCTIONS: dict[str, str | tuple[str, str]] = {
    "allnli": ("Given a premise, retrieve a hypothesis that is entailed by the premise", "Retrieve semantically similar text"),
    "dureader": "Given a Chinese search query, retrieve web passages that answer the question",
    "eli5_question_answer": "Provided a user question, retrieve the highest voted answers on Reddit ELI5 forum",
    "fever": "Given a claim, retrieve documents that support or refute the claim",
    "hotpot_qa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "miracl": "Given a question, retrieve Wikipedia passages that answer the question",
    "mrtydi": "Given a question, retrieve Wikipedia passages that answer the question",
    "msmarco_passage": "Given a web search query, retrieve relevant passages that answer the query",
    "msmarco_document": "Given a web search query, retrieve relevant documents that answer the query",
    "nq": "Given a question, retrieve Wikipedia passages that answer the question",
    "quora_duplicates": ("Given a question, retrieve questions that are semantically equivalent to the given question",
                         "Find questions that have the same meaning as the input question"),
    "squad": "Retrieve Wikipedia passages that answer the question",
    "t2ranking": "Given a Chinese search query, retrieve web passages that answer the question",
    "trivia_qa": "Retrieve Wikipedia passages that answer the question",
}  # fmt: skip
INSTRUCTION_END = "; "
HUB_PREFIX = "hub:"  # as bg2vec prepare names Hub datasets  # llm2vec's E5 queries read "{instruction}; {query}"


@dataclass(frozen=True)
class Triple:
    """One training row: the query (with its instruction, left out of pooling), a positive, hard negatives."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str = ""
    dataset: str = ""
    row: int = field(default=-1, compare=False)  # its place in the source (files in name order): teacher rows align to it


@dataclass
class TripleData:
    """Rows per dataset, in file order."""

    datasets: dict[str, list[Triple]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.datasets.values())


def read_triples(path: str | Path, setting: str = "train_file") -> TripleData:
    """The rows of a .jsonl file or of every .jsonl file in a folder (llm2vec's E5 layout), checked."""
    source = Path(path)
    if str(path).startswith(HUB_PREFIX) or (source / "dataset_info.json").is_file() or (source / "dataset_dict.json").is_file():
        return _from_dataset(str(path), setting)
    if source.is_dir():
        files = sorted(source.glob("*.jsonl"))
        if not files:
            raise ConfigError(setting, str(path), "a .jsonl file, or a folder of them (one per dataset)")
    elif source.is_file():
        files = [source]
    else:
        raise ConfigError(setting, str(path), "an existing .jsonl file or folder", fix="check the path")
    data = TripleData()
    for file in files:
        dataset = file.stem.replace("_split1", "").replace("_split2", "")  # llm2vec joins the split halves
        data.datasets.setdefault(dataset, []).extend(_read_file(file, dataset, first_row=len(data)))
    if len(data) == 0:
        raise DataError(f"{setting}={str(path)!r} holds no rows")
    return data


def _from_dataset(path: str, setting: str) -> TripleData:
    """Rows of a saved or Hub dataset (train split): query, positive, [negative, instruction, dataset] columns."""
    from datasets import DatasetDict, load_dataset

    if path.startswith(HUB_PREFIX):
        try:
            loaded = load_dataset(path[len(HUB_PREFIX):])
        except (OSError, ValueError) as exc:
            raise ConfigError(setting, path, "a reachable hub:NAME dataset", fix=first_line(exc)) from None
    else:
        loaded = load_saved(path, setting)
    table = loaded["train"] if isinstance(loaded, DatasetDict) else loaded
    missing = [c for c in ("query", "positive") if c not in table.column_names]
    if missing:
        raise DataError(f"{setting}={path!r} lacks the column(s) {', '.join(missing)}; it has {', '.join(table.column_names)}")
    data, name = TripleData(), Path(path.removeprefix(HUB_PREFIX)).name
    for number, row in enumerate(table, start=1):
        negatives = row.get("negative") or []
        dataset = str(row.get("dataset") or name)
        rows = data.datasets.setdefault(dataset, [])
        instruction = row.get("instruction")
        rows.append(Triple(row["query"], row["positive"], tuple([negatives] if isinstance(negatives, str) else negatives),
                           _e5_instruction(dataset, len(rows)) if instruction is None else instruction, dataset, number - 1))
    if len(data) == 0:
        raise DataError(f"{setting}={path!r} holds no rows")
    return data


def _read_file(file: Path, dataset: str, first_row: int = 0) -> list[Triple]:
    rows = []
    for number, row in read_json_lines(file):
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not isinstance(row.get("positive"), str):
            raise DataError(f'{file}:{number} needs "query" and "positive" strings (and may have "negative", "instruction")')
        negatives = row.get("negative", [])
        negatives = [negatives] if isinstance(negatives, str) else negatives
        if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
            raise DataError(f'{file}:{number}: "negative" must be a string or a list of strings')
        instruction = row.get("instruction")
        if instruction is None:
            instruction = _e5_instruction(dataset, len(rows))
        elif not isinstance(instruction, str):
            raise DataError(f'{file}:{number}: "instruction" must be a string, not {type(instruction).__name__}')
        rows.append(Triple(row["query"], row["positive"], tuple(negatives), instruction, dataset, first_row + len(rows)))
    return rows


def _e5_instruction(dataset: str, index: int) -> str:
    known = E5_INSTRUCTIONS.get(dataset)
    if known is None:
        return ""
    text = known if isinstance(known, str) else known[index % 2]
    return text + INSTRUCTION_END


def nothing_to_learn(data: TripleData, batch_size: int) -> str | None:
    """Why a contrastive loss over `data` in batches of `batch_size` would be 0 at every step (the run would end
    with exit 0 and an adapter that learned nothing), or None. A row's own positive is never its negative, nor are
    duplicates of it, so a batch needs a second distinct positive or a hard negative different from the positive."""
    rows = [t for dataset in data.datasets.values() for t in dataset]
    negatives = any(t.negatives for t in rows)
    if all(not t.positive.strip() for t in rows):
        return "every positive is empty"
    if all(negative == t.positive for t in rows for negative in t.negatives) and negatives:
        return "every hard negative is the same text as its row's positive"
    if negatives:
        return None
    if batch_size == 1:
        return "batches of 1 row without hard negatives hold no negative at all (per_device_train_batch_size 1)"
    if len({t.positive for t in rows}) == 1:
        return "every positive is the same text and no row has a hard negative: no batch holds a negative"
    return None


def dataset_batches(data: TripleData, batch_size: int, seed: int) -> list[list[Triple]]:
    """Batches of `batch_size` rows of one dataset each, in a seeded random order (llm2vec's sampler)."""
    generator = random.Random(seed)
    batches = []
    for name in sorted(data.datasets):
        rows = list(data.datasets[name])
        generator.shuffle(rows)
        batches += [rows[start : start + batch_size] for start in range(0, len(rows) - batch_size + 1, batch_size)]
    generator.shuffle(batches)
    return batches
