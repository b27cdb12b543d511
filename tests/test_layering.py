"""The package's layers: imports point down only, and no library module reaches up to the recipes, config or CLI.

Read from the source (every `import`, module-level or inside a function), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "bg2vec"

# Bottom first. A module may import from its own layer's package and from lower layers only.
LAYERS = [
    {"_version", "errors"},
    {"paths", "processes", "locks"},
    {"models"},
    {"data"},
    {"encoding"},
    {"objectives", "evaluation"},
    {"serving", "corpus", "exports"},
    {"config"},  # typed settings: read the choice lists below, stop at the recipes
    {"recipes"},
    {"cli_flags"},  # command-line options generated from the config dataclasses
    {"cli", "__init__", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def package_of(path: Path) -> str:
    """The top-level part of bg2vec a file belongs to: a subpackage's name, or a top-level module's."""
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return parts[0]


def imported_parts(path: Path) -> set[str]:
    """Top-level parts of bg2vec that `path` imports (relative or absolute imports)."""
    own = path.relative_to(SOURCE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(own[:-1])[: len(own) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            else:  # `from . import x` at the top level: x is the part
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bg2vec":
            parts = node.module.split(".")
            found.update([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "bg2vec" and len(parts) > 1:
                    found.add(parts[1])
    return found


FILES = sorted(SOURCE.rglob("*.py"))


def test_every_part_has_a_layer():
    unknown = {package_of(path) for path in FILES} - set(RANK)
    assert not unknown, f"add {sorted(unknown)} to LAYERS in {Path(__file__).name}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_down(path):
    own = package_of(path)
    upward = sorted(
        part for part in imported_parts(path) - {own}
        if part in RANK and RANK[part] >= RANK[own]
    )
    assert not upward, f"{path.relative_to(SOURCE)} (layer {own}) imports {upward} from its own layer or above"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a models file importing recipes is reported."""
    fake = SOURCE / "models" / "_layering_probe.py"
    tree = ast.parse("from ..recipes.trainer import x\n")
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: ast.unparse(tree))
    assert imported_parts(fake) == {"recipes"}
    assert RANK["recipes"] > RANK["models"]
