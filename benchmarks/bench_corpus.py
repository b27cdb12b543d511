"""Generated Bulgarian-looking text for the `bg2vec prepare` benchmarks (written to /tmp, never to the repo).

Documents are random word sequences drawn (seeded) from the words of data/bg/train.txt, one per line,
40 to 200 words each (about 250 to 1,300 UTF-8 bytes, a Wikipedia paragraph), so every document is unique
and the tokenizer sees real Cyrillic words at realistic frequencies.
"""

from __future__ import annotations

import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path("/tmp/bg2vec-bench")


def generated_corpus(megabytes: int) -> Path:
    """A text file of `megabytes` MB (10**6 bytes) of generated documents; made once, then reused."""
    path = BENCH_DIR / f"generated-{megabytes}MB.txt"
    if path.exists() and path.stat().st_size >= megabytes * 10**6:
        return path
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    words = (REPO / "data" / "bg" / "train.txt").read_text(encoding="utf-8").split()
    rng = random.Random(megabytes)
    written = 0
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        while written < megabytes * 10**6:
            line = " ".join(rng.choices(words, k=rng.randint(40, 200))) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
    partial.rename(path)
    return path
