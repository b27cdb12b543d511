"""`bg2vec mine-negatives` (issue 12): with designed embeddings, the closest non-positive below the guards is
taken; near-duplicates and the positive itself never; the CLI streams triples out and refuses bad paths."""

from __future__ import annotations

import json
import math

import torch

from bg2vec.cli import main
from bg2vec.data.triples import Triple
from bg2vec.encoding.mining import MiningSettings, mine_negatives


class Designed:
    def __init__(self, vectors):
        self.vectors = vectors

    def encode_tensor(self, sentences, batch_size=32, show_progress_bar=False, **kwargs):
        texts = [s if isinstance(s, str) else s[1] for s in sentences]
        return torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32)


def angle(t):
    return [math.cos(t), math.sin(t)]


def test_takes_the_closest_candidate_below_the_guards():
    # q0's positive p0 scores cos(0.3); "dup" (cos 0.05 from q0) is above the 0.95 ratio: skipped;
    # "near" (angle 0.5) is the first real negative, "far" the second
    vectors = {"q0": angle(0.0), "p0": angle(0.3), "dup": angle(0.05), "near": angle(0.5), "far": angle(1.4),
               "q1": angle(1.4), "p1": angle(1.4)}
    rows = [Triple("q0", "p0"), Triple("q1", "p1")]
    mined = list(mine_negatives(Designed(vectors), rows, MiningSettings(negatives=2), pool=["dup", "near", "far"],
                                show_progress_bar=False))
    assert mined[0].negatives == ("near", "far")
    assert "p1" not in mined[1].negatives and mined[1].negatives[0] != "p1"
    unguarded = MiningSettings(negatives=1, max_score_ratio=2.0, margin=-1.0)  # even candidates above the positive
    assert list(mine_negatives(Designed(vectors), rows, unguarded, pool=["dup", "near", "far"], show_progress_bar=False))[0].negatives == ("dup",)
    at_the_positive = MiningSettings(negatives=1, max_score_ratio=1.0)  # margin 0: nothing scoring above the positive
    assert list(mine_negatives(Designed(vectors), rows, at_the_positive, pool=["dup", "near", "far"], show_progress_bar=False))[0].negatives == ("near",)


def test_cli_mines_a_file(tiny_model_dirs, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    words = "ябълка круша слива дюля череша вишна праскова кайсия".split()
    pairs.write_text("".join(json.dumps({"query": f"Какво е {w}?", "positive": f"{w} е плод."}, ensure_ascii=False) + "\n"
                             for w in words), encoding="utf-8")
    out = tmp_path / "triples.jsonl"
    argv = ["mine-negatives", "--model", str(tiny_model_dirs["mistral"]), "--input", str(pairs), "--output", str(out),
            "--max-score-ratio", "1.0"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8 and all(len(r["negative"]) == 1 and r["negative"][0] != r["positive"] for r in rows)
    assert all(r["negative"][0] in {f"{w} е плод." for w in words} for r in rows)
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*argv[:-4], "--output", str(pairs), "--max-score-ratio", "1.0"]) == 2
    assert "--input" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not list(tmp_path.glob(".*.partial"))
