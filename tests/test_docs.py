"""The README and docs/ pages: every relative link and every repository file path they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
FILE_SUFFIXES = (".py", ".json", ".md", ".txt", ".png", ".toml")
# Places a page names that a run creates, or that belong to other projects (llm2vec's train_configs).
NOT_IN_THE_TREE = ("outputs/", "output_dir/", "train_configs/", "path/to/", "http")


def named_paths(text: str) -> list[str]:
    """Code spans that name a file of this repository: a path with a file suffix, no wildcard or placeholder."""
    return [span for span in CODE.findall(text)
            if "/" in span and span.endswith(FILE_SUFFIXES) and not any(c in span for c in "*<>{}$")
            and not span.startswith(NOT_IN_THE_TREE)]


def exists(span: str, page: Path) -> bool:
    """A named path resolves from the repository root, the package root, or the page's folder."""
    return any((base / span).exists() for base in (ROOT, ROOT / "src" / "bg2vec", page.parent))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_named_files_exist(page):
    text = page.read_text(encoding="utf-8")
    broken = [link for link in LINK.findall(text)
              if not link.startswith(("http://", "https://", "#", "mailto:"))
              and not (page.parent / link.split("#")[0]).exists()]
    missing = [span for span in named_paths(text) if not exists(span, page)]
    assert not broken, f"{page.name}: links to missing files {broken}"
    assert not missing, f"{page.name}: names files that do not exist {missing}"


def test_readme_first_screen_is_short():
    """What bg2vec is, the two Quick start commands, a Python example and the commands table: no reference."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 60
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make \w+", quick, flags=re.M) == ["make demo", "make test"]


def test_every_command_has_a_row_and_a_page():
    from bg2vec.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `bg2vec ([a-z-]+)", text, flags=re.M))
    assert listed == commands, f"README commands table: add {commands - listed}, drop {listed - commands}"


def test_the_check_sees_a_missing_file(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see `benchmarks/no_such_bench.py` and [x](nowhere.md)", encoding="utf-8")
    assert named_paths(page.read_text()) == ["benchmarks/no_such_bench.py"]
    assert not exists("benchmarks/no_such_bench.py", page)


def test_the_layout_table_names_every_module():
    """docs/development.md's layout table lists each module of src/bg2vec under its package (and no other)."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `?([a-z_ ]+?)/?`? \| (.+) \|$", text, flags=re.M))
    source = ROOT / "src" / "bg2vec"
    missing = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        row = rows.get(folder.name, "")
        missing += [f"{folder.name}/{m.stem}" for m in folder.glob("*.py")
                    if m.stem != "__init__" and f"`{m.stem}`" not in row]
    top = rows.get("top level", "")
    missing += [m.stem for m in source.glob("*.py") if m.stem != "__init__" and f"`{m.stem}`" not in top]
    assert not missing, f"add to the layout table in docs/development.md: {missing}"
