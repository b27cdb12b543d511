"""The README.md every bg2vec output carries: what the folder is, what it was made from, how well it did, and
the exact lines that load it with bg2vec, llm2vec and sentence-transformers, under YAML metadata the Hub reads.
What each stage is and which lines load it come from `models/saved_outputs.STAGES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.references import PYPI_PREFIX
from ..models.saved_outputs import STAGES, is_adapter, read_description


def write_model_card(
    folder: str | Path,
    description: dict[str, Any] | None = None,
    table: str | None = None,
    data: str | None = None,
    steps: int | None = None,
) -> Path:
    """Write `folder`/README.md from its bg2vec_config.json `description` (read from the folder if not given;
    and, for a run, its metrics table, data and step count); returns the file.

    >>> write_model_card("outputs/mntp", json.load(open("outputs/mntp/bg2vec_config.json")), table, "train.txt", 1000)
    """
    folder = Path(folder)
    description = read_description(folder) if description is None else description
    stage = description.get("stage", "encoder")
    base = description.get("base_model_name_or_path") or "unknown"
    mntp = description.get("mntp_adapter")
    adapter = is_adapter(description)
    hub_base = base if _is_hub_id(base) else None
    metadata = ["---"]
    if hub_base:
        metadata.append(f"base_model: {hub_base}")
    metadata += ["language:", *(f"- {code}" for code in description["language"])] if description.get("language") else []
    metadata += [
        f"library_name: {'peft' if adapter else 'transformers'}",
        "pipeline_tag: feature-extraction",
        "tags:",
        *(f"- {tag}" for tag in ("bg2vec", "llm2vec", "sentence-embeddings", "text-embeddings", stage)),
        "---",
    ]
    rows = [
        ("what", STAGES[stage].what if stage in STAGES else stage),
        ("base model", f"`{base}`"),
        ("MNTP adapter merged first", f"`{mntp}`" if mntp else None),
        ("bidirectional attention", "yes" if description.get("bidirectional", True) else "no"),
        ("pooling", f"`{description.get('pooling_mode', 'mean')}` over the text's own tokens"),
        ("mask token", f"`{description['mask_token']}` (id {description.get('mask_token_id')})" if "mask_token" in description else None),
        ("training data", f"`{data}`" if data else None),
        ("optimisation steps", f"{steps:,}" if steps is not None else None),
    ]
    versions = description.get("versions", {})
    lines = [
        *metadata,
        f"# {folder.resolve().name}",
        "",
        f"Made with [bg2vec](https://pypi.org/project/bg2vec-toolkit/) {description.get('bg2vec_version', '')} "
        "(the LLM2Vec recipe, arXiv 2404.05961, on transformers 5).",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows if value),
        "",
    ]
    if table:
        lines += ["## Results", "", "```", table.rstrip(), "```", ""]
    lines += _usage(folder.resolve().name, stage, base, mntp, adapter)
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + "."]
    file = folder / "README.md"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file


def _usage(name: str, stage: str, base: str, mntp: str | None, adapter: bool) -> list[str]:
    """The loading lines: this folder alone (bg2vec), the CLI, llm2vec's call (where llm2vec reads the stage),
    and sentence-transformers after an export."""
    ref = f"path/to/{name}"
    under = _beside(ref, mntp or base)
    # llm2vec's two-step call: the folder under the adapter (an MNTP output holds config.json, tokenizer, adapter)
    llm2vec = (
        f'LLM2Vec.from_pretrained("{under}", peft_model_name_or_path="{ref}", enable_bidirectional=True)'
        if adapter and stage != "mntp"
        else f'LLM2Vec.from_pretrained("{ref}", enable_bidirectional=True)'
    )
    llm2vec_lines = [
        "llm2vec 0.2.3 (transformers 4.44, peft 0.12) reads it as well:",
        "",
        "```python",
        "from llm2vec import LLM2Vec",
        "",
        f"encoder = {llm2vec}",
        "```",
        "",
    ] if "llm2vec" in STAGES.get(stage, STAGES["encoder"]).loads_with else []
    return [
        "## Use",
        "",
        "```python",
        "from bg2vec import Bg2Vec",
        "",
        f'encoder = Bg2Vec.from_pretrained("{ref}")  # or a Hub id; the base and adapters it records are loaded',
        'embeddings = encoder.encode(["София е столицата на България.", ["Намери подобни изречения:", "Пловдив е стар град."]])',
        "```",
        "",
        "```bash",
        f"bg2vec encode --model {ref} --input texts.txt --output embeddings.npy",
        "```",
        "",
        *llm2vec_lines,
        "sentence-transformers: export once, then load with its own modules only:",
        "",
        "```python",
        "from bg2vec import Bg2Vec",
        "from bg2vec.encoding.export import export_sentence_transformers",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'export_sentence_transformers(Bg2Vec.from_pretrained("{ref}"), "{name}-st")',
        f'model = SentenceTransformer("{name}-st")',
        "```",
    ]


def _beside(ref: str, recorded: str) -> str:
    """A reference recorded in the folder as the card shows it: a relative local path joined to the folder's."""
    if recorded.startswith(PYPI_PREFIX) or _is_hub_id(recorded) or Path(recorded).is_absolute() or recorded == "unknown":
        return recorded
    return f"{ref}/{recorded}"


def _is_hub_id(reference: str) -> bool:
    parts = reference.split("/")
    return not reference.startswith((PYPI_PREFIX, "/", ".", "~")) and len(parts) == 2 and all(parts)
