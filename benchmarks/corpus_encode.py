"""`bg2vec encode-corpus`: rows/s of the local engine vs Ray at 1 and 2 CPU workers, peak memory at two corpus
sizes, and the time a finished re-run takes to skip everything.

Every figure comes from a fresh `bg2vec encode-corpus` process on generated one-line documents (10 to 40 seeded
random words of the test suite's corpus, which its tokenizer knows: about 20 to 80 tokens) and the test suite's
tiny random Mistral (hidden 64, 2 layers), so the engines' own costs show at their largest (next to a real
model's forward passes they only shrink):
- throughput (shards of 500 rows): the same corpus through `--engine local` (THREADS torch threads), `--engine ray --workers 1`
  (one actor, THREADS CPUs) and `--workers 2` (two actors, THREADS / 2 CPUs each: the same cores in all three); rows/s over the whole command
  (imports, model loading and, for Ray, cluster start included), with start-up (from the model loaded / the
  actor pool started), and after the first batch (steady state). Target: Ray at 1 worker within 15% of local.
- memory: peak RSS (ru_maxrss) and peak anonymous RSS (sampled) of the local engine at two corpus sizes (of
  3-to-10-word documents, so that 100,000 rows take a minute or two).
  Target: flat, not growing with the corpus.
- skip: the wall time of the same command once everything is finished (nothing to encode: no model is loaded).

    python benchmarks/corpus_encode.py [--rows 4000] [--memory-rows 10000 100000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench_corpus import BENCH_DIR, REPO
from prepare_memory import anonymous_rss

MIB = 2**20
MEMORY_WORDS = (3, 10)  # shorter documents for the memory runs: what grows with the corpus is rows, not their length
WORK = BENCH_DIR / "corpus_encode"


sys.path.insert(0, str(REPO / "tests"))


def tiny_model(folder: Path) -> Path:
    """The test suite's tiny random Mistral (hidden 64, 2 layers) and tokenizer, saved once."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from conftest import build_tokenizer, tiny_config
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = tiny_config("mistral", len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def corpus(rows: int, words: tuple[int, int] = (10, 40)) -> Path:
    """`rows` generated documents of `words` (least, most) words, one per line; made once, then reused."""
    from conftest import CORPUS

    path = WORK / f"docs-{rows}-{words[0]}-{words[1]}.txt"
    if path.exists():
        return path
    vocabulary = " ".join(CORPUS).split()
    rng = random.Random(rows)
    lines = (" ".join(rng.choices(vocabulary, k=rng.randint(*words))) + "\n" for _ in range(rows))
    path.write_text("".join(lines), encoding="utf-8")
    return path


def encode(source: Path, output: Path, model: Path, threads: int, *extra: str, shard_rows: int = 2000) -> dict:
    """Run one `bg2vec encode-corpus`; its wall time, encoding time (summary line) and peak memory."""
    command = [sys.executable, "-m", "bg2vec.cli", "encode-corpus", str(source), "--output", str(output), "--model", str(model),
               "--torch-dtype", "float32", "--shard-rows", str(shard_rows), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = psutil.Process(child.pid)
    peak_anonymous = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        peak_anonymous = max(peak_anonymous, anonymous_rss(watcher))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    out, err = child.stdout.read(), child.stderr.read()
    if child.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    match = re.search(r"encoded ([\d,]+) rows .* in ([\d.]+) s \(([\d,]+) rows/s(?:, ([\d,]+) rows/s after the first batch)?", out)
    rows, encoding_seconds = int(match.group(1).replace(",", "")), float(match.group(2))
    steady = float(match.group(4).replace(",", "")) if match.group(4) else None
    return {"wall_s": seconds, "rows": rows, "encode_s": encoding_seconds, "steady_rows_per_s": steady,
            "rows_per_s_wall": rows / seconds, "rows_per_s": rows / encoding_seconds if encoding_seconds else 0.0,
            "peak_rss_mib": usage.ru_maxrss * 1024 / MIB, "peak_anonymous_mib": peak_anonymous / MIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000, help="rows of the throughput corpus")
    parser.add_argument("--memory-rows", type=int, nargs=2, default=[10_000, 100_000], help="the two corpus sizes of the memory runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the local engine and of the one Ray actor (halved for two)")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)  # corpora and model of another version of this script
    WORK.mkdir(parents=True)
    model = tiny_model(WORK / "model")
    results: dict = {"threads": args.threads, "cpus": os.cpu_count()}

    source = corpus(args.rows)
    half = str(max(1, args.threads // 2))
    for name, extra in (("local", []),
                        ("ray, 1 worker", ["--engine", "ray", "--workers", "1", "--cpus-per-worker", str(args.threads)]),
                        ("ray, 2 workers", ["--engine", "ray", "--workers", "2", "--cpus-per-worker", half])):
        output = WORK / "throughput"
        shutil.rmtree(output, ignore_errors=True)
        results[name] = encode(source, output, model, args.threads, *extra, shard_rows=500)
        run = results[name]
        print(f"{name:<16} {run['steady_rows_per_s'] or 0:8,.0f} rows/s after the first batch | {run['rows_per_s']:8,.0f} rows/s "
              f"with start-up | {run['rows_per_s_wall']:8,.0f} rows/s whole command ({run['wall_s']:.1f} s)", flush=True)
    for name in ("ray, 1 worker", "ray, 2 workers"):
        overhead = results["local"]["steady_rows_per_s"] / results[name]["steady_rows_per_s"] - 1
        results[f"overhead, {name}"] = overhead
        print(f"local / {name} steady rows/s - 1: {overhead:+.0%}" + (" (target <= 15%)" if "1" in name else ""))

    for rows in args.memory_rows:
        output = WORK / f"memory-{rows}"
        shutil.rmtree(output, ignore_errors=True)
        run = results[f"local, {rows} rows"] = encode(corpus(rows, MEMORY_WORDS), output, model, args.threads)
        print(f"local, {rows:>7,} rows: peak RSS {run['peak_rss_mib']:,.0f} MiB, peak anonymous {run['peak_anonymous_mib']:,.0f} MiB, "
              f"{run['rows_per_s']:,.0f} rows/s", flush=True)
    small, large = (results[f"local, {rows} rows"] for rows in args.memory_rows)
    print(f"peak RSS ratio {args.memory_rows[1]:,} / {args.memory_rows[0]:,} rows: {large['peak_rss_mib'] / small['peak_rss_mib']:.2f} "
          "(target: about 1)")
    skip = results["skip"] = encode(corpus(args.memory_rows[1], MEMORY_WORDS), WORK / f"memory-{args.memory_rows[1]}", model, args.threads)
    print(f"re-run of the finished {args.memory_rows[1]:,}-row run: {skip['wall_s']:.1f} s (nothing encoded, no model loaded)")
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results in {WORK / 'results.json'}")


if __name__ == "__main__":
    main()
