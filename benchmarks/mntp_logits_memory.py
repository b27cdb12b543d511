"""Peak memory and step time of the MNTP loss: full-sequence logits (the reference), logits gathered at the
labelled positions, and bg2vec's chunked loss (256 positions at a time, each chunk's gradients taken right after its logits).

The reference is what a causal-LM head does (transformers' ForCausalLM, llm2vec's run_mntp): logits for every
position, upcast to float32, shifted, cross-entropy with -100 ignored. "gathered" selects the positions that
carry a label first (bg2vec before chunking); "chunked" is `chunked_mntp_loss`, what training runs now (the
labelled positions, in chunks); "all-pos" is its variant that runs every position and never waits on the device. Both run forward + backward w.r.t. the decoder output (the LM head is
frozen, as in bg2vec's default). Each measurement runs in a fresh process; memory is the growth of peak RSS
(CPU) or of `torch.cuda.max_memory_allocated` (GPU) over the state after setup.

    python benchmarks/mntp_logits_memory.py [--hidden 1024 --batch 4 --seq 512 --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VOCABULARIES = {"BgGPT / Mistral (38,000)": 38_000, "Gemma 3 (262,144)": 262_144}
MASK_RATES = (0.2, 0.8)  # llm2vec's Llama recipes, and the Mistral/BgGPT all_mask recipe


def measure(variant: str, vocab: int, rate: float, hidden: int, batch: int, seq: int, dtype: str) -> dict:
    """One forward + backward in this process; returns peak extra memory (MiB) and seconds."""
    import torch
    import torch.nn.functional as F

    from bg2vec.objectives.masking import IGNORE_INDEX
    from bg2vec.objectives.mntp import chunked_mntp_loss, mntp_logits_at_labels, mntp_loss

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    head = torch.nn.Linear(hidden, vocab, bias=False, device=device, dtype=torch_dtype).requires_grad_(False)
    states = torch.randn(batch, seq, hidden, device=device, dtype=torch_dtype, requires_grad=True)  # (B, T, H)
    ids = torch.randint(vocab, (batch, seq), device=device)
    labels = torch.where(torch.rand(batch, seq, device=device) < rate, ids, IGNORE_INDEX)  # (B, T)

    def step() -> None:
        if variant == "full":
            logits = head(states).float()  # (B, T, V)
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
            )
        elif variant == "gathered":
            loss = mntp_loss(*mntp_logits_at_labels(states, labels, head))
        elif variant == "chunked":
            loss = chunked_mntp_loss(states, labels, head)[0]
        else:  # every position, nothing waits on the device
            loss = chunked_mntp_loss(states, labels, head, gather=False)[0]
        loss.backward()
        states.grad = None

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.max_memory_allocated()
    else:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = time.perf_counter() - started
    return {"peak_mib": (peak - baseline) / 2**20, "seconds": seconds, "device": device}


def run_isolated(*args) -> dict:
    """`measure` in a fresh interpreter so peak RSS belongs to this one measurement."""
    command = [sys.executable, __file__, "--child", json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--dtype", default="float32", help="dtype of states and head (logits are float32 always)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return

    print(f"B={args.batch} T={args.seq} H={args.hidden} dtype={args.dtype}; forward + backward of the loss only")
    header = (f"{'vocabulary':<26} {'masked':>6} | {'full MiB':>9} {'gathered':>9} {'chunked':>9} | {'gathered':>8} "
              f"{'chunked':>8} | {'full s':>7} {'gathered s':>10} {'chunked s':>9} {'all-pos s':>9}")
    print(header)
    print("-" * len(header))
    for name, vocab in VOCABULARIES.items():
        for rate in MASK_RATES:
            common = (vocab, rate, args.hidden, args.batch, args.seq, args.dtype)
            full = run_isolated("full", *common)
            gathered = run_isolated("gathered", *common)
            chunked = run_isolated("chunked", *common)
            synced_free = run_isolated("all-positions", *common)
            print(
                f"{name:<26} {rate:>6.0%} | {full['peak_mib']:>9.0f} {gathered['peak_mib']:>9.0f} "
                f"{chunked['peak_mib']:>9.0f} | {gathered['peak_mib'] / full['peak_mib']:>8.2f} "
                f"{chunked['peak_mib'] / full['peak_mib']:>8.2f} | {full['seconds']:>7.2f} {gathered['seconds']:>10.2f} "
                f"{chunked['seconds']:>9.2f} {synced_free['seconds']:>9.2f}"
            )
    print(f"device: {full['device']}, torch threads: {_threads()}. The two ratio columns: peak memory / full "
          "(lower is better). MiB columns: peak memory growth of one forward + backward of the loss.")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
