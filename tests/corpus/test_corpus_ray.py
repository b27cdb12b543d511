"""The Ray engine on a local cluster (2 CPUs, 2 CPU actors, a small object store), started and stopped here:
the same shards and vectors as the local engine, and a re-run that skips them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bg2vec import read_embeddings
from bg2vec.cli import main

from conftest import REPO, CORPUS

import ray  # noqa: E402  (`make test` installs it: the bg2vec-toolkit[ray] extra; never skipped)

OBJECT_STORE_BYTES = 80 * 1024**2


@pytest.fixture
def local_cluster():
    src = str(REPO / "src")  # the actors import this checkout's bg2vec
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_ray_engine_equals_local_engine(tiny_model_dirs, tmp_path, local_cluster, capsys):
    texts = [f"{text} ({number})" for number in range(3) for text in CORPUS]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": i * 7, "text": t, "q": "Q:" if i % 2 else ""}) + "\n"
                              for i, t in enumerate(texts)), encoding="utf-8")
    args = ["encode-corpus", str(source), "--model", str(tiny_model_dirs["mistral"]), "--torch-dtype", "float32",
            "--id-column", "id", "--instruction-column", "q", "--shard-rows", "8", "--max-batch-tokens", "96"]
    assert main([*args, "--output", str(tmp_path / "local")]) == 0
    assert main([*args, "--output", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    local, distributed = read_embeddings(tmp_path / "local"), read_embeddings(tmp_path / "ray", verify=True)
    assert distributed.ids.tolist() == local.ids.tolist() == [i * 7 for i in range(len(texts))]
    np.testing.assert_allclose(distributed.matrix, local.matrix, atol=1e-5)
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert len(manifest["finished"]) == 4 and manifest["provenance"]["instruction_column"] == "q"
    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    assert "4 of 4 shards finished earlier and skipped; 0 to encode" in capsys.readouterr().err
