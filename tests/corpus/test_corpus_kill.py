"""Exactly once under SIGKILL: a run killed at random points (inside a shard write, after a shard's rename but
before it is recorded, while the manifest is replaced), then resumed, holds every id once, with the vectors of
a run never interrupted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bg2vec import read_embeddings
from bg2vec.cli import main
from bg2vec.corpus.provenance import file_digest

from conftest import REPO, CORPUS

SRC = REPO / "src"

# Runs `bg2vec ARGS...` and kills itself (SIGKILL) at the WHEN-th time the run reaches POINT.
KILLING_RUN = textwrap.dedent('''
    import os, signal, sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    point, when = sys.argv[1], int(sys.argv[2])
    reached = 0

    def maybe_die():
        global reached
        reached += 1
        if reached == when:
            os.kill(os.getpid(), signal.SIGKILL)

    real_write, real_replace = pq.write_table, os.replace

    def write_table(table, where, **kwargs):  # half of the file's bytes on disk, then killed
        sink = pa.BufferOutputStream()
        real_write(table, sink, **kwargs)
        data = sink.getvalue().to_pybytes()
        where.write(data[: len(data) // 2])
        where.flush()
        if point == "write":
            maybe_die()
        where.write(data[len(data) // 2 :])

    def replace(source, target):
        if point == "manifest" and str(target).endswith("manifest.json"):
            maybe_die()  # the new manifest is complete under its temporary name, the old one still in place
        real_replace(source, target)
        if point == "rename" and str(target).endswith(".parquet"):
            maybe_die()  # the shard is in place, not yet recorded

    pq.write_table, os.replace = write_table, replace
    from bg2vec.cli import main
    sys.exit(main(sys.argv[3:]))
''')


def test_sigkill_at_random_points_then_resume_gives_every_id_once(tiny_model_dirs, tmp_path):
    texts = [f"{text} ({number})" for number in range(3) for text in CORPUS]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    args = ["encode-corpus", str(source), "--model", str(tiny_model_dirs["mistral"]), "--torch-dtype", "float32",
            "--id-column", "id", "--shard-rows", "3"]
    assert main([*args, "--output", str(tmp_path / "uninterrupted")]) == 0
    reference = read_embeddings(tmp_path / "uninterrupted")

    script = tmp_path / "killing_run.py"
    script.write_text(KILLING_RUN, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "killed"
    rng = random.Random(21)
    points = ["write", "rename", "manifest"]
    rng.shuffle(points)
    for point in points:
        when = rng.randint(1, 3)
        run = subprocess.run([sys.executable, str(script), point, str(when), *args, "--output", str(out)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == -9, f"{point} {when}: {run.stderr[-2000:]}"
        if (out / "manifest.json").exists():  # every recorded shard is whole
            manifest = json.loads((out / "manifest.json").read_text())
            for index, entry in manifest["finished"].items():
                assert file_digest(out / f"shard-{int(index):05d}.parquet") == entry["sha256"]
    assert main([*args, "--output", str(out)]) == 0
    got = read_embeddings(out, verify=True)
    assert got.ids.tolist() == reference.ids.tolist() == [f"d{i}" for i in range(len(texts))]
    np.testing.assert_allclose(got.matrix, reference.matrix, atol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == [".cache", "manifest.json"] + [f"shard-{i:05d}.parquet" for i in range(9)]
