"""The CI environment is pinned: every package pyproject asks for has an exact version in constraints.txt, and
`make install` installs through it, so a fresh clone resolves what CI tested (pyproject's ranges stay loose)."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            found[canonicalize_name(name)] = version
    return found


def test_every_requirement_is_pinned_within_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = pins(REPO / "constraints.txt")
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    missing = sorted({r.name for r in wanted if canonicalize_name(r.name) not in pinned})
    assert not missing, f"pin these in constraints.txt (make constraints): {missing}"
    outside = [f"{r} (pinned {pinned[canonicalize_name(r.name)]})" for r in wanted
               if not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)]
    assert not outside, f"constraints.txt pins versions pyproject does not allow: {outside}"


def test_make_install_goes_through_the_pins():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    installs = re.findall(r"^\t.*\$\(BIN\)/python -m pip install (.*)$", makefile, flags=re.M)
    package_installs = [line for line in installs if "--upgrade pip" not in line]
    assert package_installs and all("-c $(CONSTRAINTS)" in line for line in package_installs), package_installs
    assert "-c $(LLM2VEC_CONSTRAINTS)" in makefile
    assert pins(REPO / "constraints-llm2vec.txt")["llm2vec"] == "0.2.3"
