"""bg2vec against llm2vec 0.2.3, the same workloads in one run: the Bi-MNTP train step (all_mask, p = 0.8 and
p = 0.2), the SimCSE train step (time and peak memory each) and `encode` throughput on 2,000 real sentences.

    python benchmarks/vs_llm2vec.py                 # the default run: minutes on 2 CPU cores
    python benchmarks/vs_llm2vec.py --layers 8 --steps 10 --batch 16   # a bigger run

Both sides train the same random-weight Mistral shape (BgGPT's 38,000-token vocabulary, hidden 256, 4 layers,
GQA 8/2 heads), batch 8 x 128 tokens, LoRA r = 16 on q,k,v,o,gate,up,down, AdamW, float32, sdpa, the same
inputs (saved once, loaded by both). Each side does what it does by default:
- MNTP: llm2vec's `MistralBiForMNTP` (its run_mntp.py model: full-sequence logits, the LM head trainable, as
  its script leaves it) against bg2vec's `MNTPModel` (chunked fused cross-entropy, LM head frozen).
- SimCSE: llm2vec's `LLM2Vec` wrapper and `HardNegativeNLLLoss` over two forward passes (its run_simcse.py
  step) against bg2vec's `SimCSEModel` (both views in one forward) and `info_nce_loss`; attention dropout 0.3.
Every measurement runs in a fresh process (llm2vec's in `.venv-llm2vec`: transformers 4.44.2, peft 0.12.0, the
same torch), both sides alternating for `--rounds` rounds. Time is each side's fastest step after warm-up
over all rounds (noise on a shared machine only ever adds time; the ratio of each round's own fastest steps is
printed too). Memory is the peak of live tensor bytes during one more step, summed from the profiler's allocation
events (the CPU counterpart of `torch.cuda.max_memory_allocated`, which a GPU run uses): the ratio of record.
The growth of peak RSS is printed too; it also holds what the C allocator keeps after a free, so it tells less
about the library. Both sides use the same number of torch threads (printed).
The last line is machine-readable (ratios bg2vec / llm2vec; for memory and time lower is better, for
throughput higher).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
MASK_TOKEN_ID = 5
TARGETS = "mntp_time <= 0.8, mntp_memory <= 0.5, simcse_time <= 0.8, simcse_memory <= 0.5, encode_throughput >= 1.5"


def shape(args: argparse.Namespace) -> dict:
    return dict(
        vocab_size=38_000, hidden_size=args.hidden, intermediate_size=args.hidden * 7 // 2, num_hidden_layers=args.layers,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512, sliding_window=None,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )


def make_inputs(path: Path, batch: int, seq: int, rate: float, seed: int = 0) -> None:
    """Token ids, the all_mask masking at `rate` (masked ids become MASK_TOKEN_ID, labels keep the originals)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 38_000, (batch, seq), generator=generator)
    masked = torch.rand(batch, seq, generator=generator) < rate
    masked[:, 0] = False  # position 0 is never predicted (nothing precedes it)
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    torch.save({"input_ids": torch.where(masked, MASK_TOKEN_ID, ids), "clean_ids": ids, "labels": labels,
                "attention_mask": torch.ones_like(ids)}, path)


# --- one measurement, in its own process -------------------------------------------------------------------


def measure(side: str, workload: str, inputs: str, config: dict, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = torch.load(inputs)
    model, step = (_llm2vec_step if side == "llm2vec" else _bg2vec_step)(workload, batch, config)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    cuda = torch.cuda.is_available()
    baseline = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = []
    for number in range(steps + 2):  # two warm-up steps
        started = time.perf_counter()
        step().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if number >= 2:
            seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss = (peak - baseline) / 2**20
    return {"seconds": min(seconds), "peak_mib": rss if cuda else peak_tensor_mib(step, optimizer),
            "rss_mib": rss, "threads": torch.get_num_threads(), "trainable": sum(p.numel() for p in parameters)}


def peak_tensor_mib(step, optimizer) -> float:
    """Most tensor memory alive at once during one train step on the CPU, from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        step().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    changes = sorted(
        (event.time_range.start, event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage)
        for event in recorded.events()
    )
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak / 2**20


LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, bias="none", task_type=None,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def _llm2vec_step(workload: str, batch: dict, values: dict):
    """llm2vec 0.2.3's model and step, as its run_mntp.py / run_simcse.py build them."""
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig

    config = MistralConfig(**values, attention_dropout=0.3 if workload == "simcse" else 0.0)
    config._attn_implementation = "sdpa"
    if workload == "mntp":
        from llm2vec.models import MistralBiForMNTP

        model = MistralBiForMNTP(config)
        model.model = get_peft_model(model.model, LoraConfig(**LORA))  # llm2vec's initialize_peft
        model.train()
        return model, lambda: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    from llm2vec import LLM2Vec
    from llm2vec.loss.utils import load_loss
    from llm2vec.models import MistralBiModel

    from types import SimpleNamespace

    tokenizer = SimpleNamespace(padding_side="left")  # the step reads only this (inputs come tokenized)
    model = LLM2Vec(get_peft_model(MistralBiModel(config), LoraConfig(**LORA)), tokenizer, pooling_mode="mean")
    model.train()
    loss = load_loss("HardNegativeNLLLoss", scale=20.0)
    features = {"input_ids": batch["clean_ids"], "attention_mask": batch["attention_mask"], "embed_mask": batch["attention_mask"]}
    return model, lambda: loss(model(dict(features)), model(dict(features)))


def _bg2vec_step(workload: str, batch: dict, values: dict):
    """bg2vec's model and step, as its recipes build them (the Trainer's step around them)."""
    from transformers import AutoModel, AutoModelForCausalLM, MistralConfig

    from bg2vec.models.bidirectional import enable_bidirectional
    from bg2vec.objectives.mntp import MNTPModel
    from bg2vec.models.lora import add_lora
    from bg2vec.objectives.contrastive import info_nce_loss
    from bg2vec.objectives.simcse import SimCSEModel, set_attention_dropout, two_views

    config = MistralConfig(**values, attn_implementation="sdpa", use_cache=False)
    if workload == "mntp":
        causal = AutoModelForCausalLM.from_config(config)
        decoder = causal.get_decoder()
        enable_bidirectional(decoder)
        lm_head = causal.get_output_embeddings().requires_grad_(False)
        model = MNTPModel(add_lora(decoder, LORA["r"], LORA["lora_alpha"], LORA["lora_dropout"]), lm_head).train()
        return model, lambda: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])["loss"]
    decoder = AutoModel.from_config(config)
    enable_bidirectional(decoder)
    set_attention_dropout(decoder, 0.3)
    model = SimCSEModel(add_lora(decoder, LORA["r"], LORA["lora_alpha"], LORA["lora_dropout"]), "mean").train()
    inputs = {"input_ids": batch["clean_ids"], "attention_mask": batch["attention_mask"], "pooling_mask": batch["attention_mask"]}

    def step():
        anchors, positives = model(**two_views(inputs)).chunk(2)  # (B, H) each
        return info_nce_loss(anchors, positives, 20.0)

    return model, step


def run_isolated(python: str, *arguments) -> dict:
    done = subprocess.run([python, __file__, "--child", json.dumps(arguments)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")} if "llm2vec" not in python
                          else {**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{python} {arguments[:2]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def encode_folder(workdir: Path, values: dict) -> Path:
    """The benchmark shape with random weights and the test tokenizer, saved as a model folder for `encode`."""
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    folder = workdir / "bench-mistral"
    AutoModelForCausalLM.from_config(MistralConfig(**values)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 2 warm-up steps)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of both sides per workload")
    parser.add_argument("--sentences", type=int, default=2000, help="sentences for the encode workload")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="torch threads, each side")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-llm2vec", help="llm2vec's virtual environment")
    parser.add_argument("--workloads", default="mntp,simcse,encode", help="which to run, comma-separated [default: all]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return

    import torch
    from encode_vs_llm2vec import compare_encode, ensure_llm2vec_venv, sentences

    theirs_python = str(ensure_llm2vec_venv(args.venv))
    ours_python = sys.executable
    values = shape(args)
    print(f"Mistral shape: vocabulary 38,000, hidden {args.hidden}, {args.layers} layers, heads 8/2 | batch {args.batch} x "
          f"{args.seq} tokens | LoRA r=16 | float32, sdpa | {args.threads} torch threads each side | torch {torch.__version__}")
    ratios, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        chosen = set(args.workloads.split(","))
        for workload, rate in [(w, r) for w, r in (("mntp", 0.8), ("mntp", 0.2), ("simcse", None)) if w in chosen]:
            inputs = workdir / f"inputs-{rate}.pt"
            make_inputs(inputs, args.batch, args.seq, rate if rate is not None else 0.0)
            common = (workload, str(inputs), values, args.steps, args.threads)
            rounds = [(run_isolated(ours_python, "bg2vec", *common), run_isolated(theirs_python, "llm2vec", *common))
                      for _ in range(args.rounds)]  # alternating, so a slow spell of the machine hits both sides
            ours, theirs = rounds[0]
            ours["ratios"] = [o["seconds"] / t["seconds"] for o, t in rounds]
            for side, key in ((ours, 0), (theirs, 1)):
                side["seconds"] = min(pair[key]["seconds"] for pair in rounds)
            time_ratio = ours["seconds"] / theirs["seconds"]
            name = workload + (f" p={rate}" if rate is not None else "")
            rows.append((name, ours, theirs, time_ratio))
            if rate in (0.8, None):  # the ratios of record: the Bg2Vec recipe's p = 0.8, and SimCSE
                ratios[f"{workload}_time"] = time_ratio
                ratios[f"{workload}_memory"] = ours["peak_mib"] / theirs["peak_mib"]
        texts = sentences(args.sentences)
        if "encode" in chosen:
            encoded = compare_encode(encode_folder(workdir, values), texts, 32, args.threads, 3, "mean", args.venv)
            ratios["encode_throughput"] = encoded["llm2vec_seconds"] / encoded["bg2vec_seconds"]

    header = (f"{'workload':<14} | {'bg2vec s':>9} {'llm2vec s':>9} {'ratio':>6} | {'bg2vec MiB':>10} {'llm2vec MiB':>11} "
              f"{'ratio':>6} | RSS MiB (ours / theirs) | trainable (ours / theirs)")
    print(header)
    print("-" * len(header))
    for name, ours, theirs, time_ratio in rows:
        print(f"{name:<14} | {ours['seconds']:>9.3f} {theirs['seconds']:>9.3f} {time_ratio:>6.2f} | "
              f"{ours['peak_mib']:>10.0f} {theirs['peak_mib']:>11.0f} {ours['peak_mib'] / theirs['peak_mib']:>6.2f} | "
              f"{ours['rss_mib']:.0f} / {theirs['rss_mib']:.0f} | {ours['trainable']:,} / {theirs['trainable']:,}")
    if rows:
        print("time ratio within each round: " + "; ".join(
            f"{name} " + " ".join(f"{ratio:.2f}" for ratio in ours["ratios"]) for name, ours, _, _ in rows))
    if "encode" in chosen:
        print(f"{'encode':<14} | {len(texts) / encoded['bg2vec_seconds']:>7.0f}/s {len(texts) / encoded['llm2vec_seconds']:>7.0f}/s "
              f"{ratios['encode_throughput']:>6.2f} | {len(texts):,} sentences of data/bg/train.txt, batch 32, fastest of 3; "
              f"positions run incl. padding: bg2vec {encoded['padded']['bg2vec']:,}, llm2vec {encoded['padded']['llm2vec']:,}")
    used = f"bg2vec {rows[0][1]['threads']}, llm2vec {rows[0][2]['threads']}" if rows else f"{args.threads} each side"
    print(f"threads (torch, as measured in each process): {used}. targets: {TARGETS}")
    print("vs_llm2vec: " + " ".join(f"{key}={value:.2f}" for key, value in ratios.items()))


if __name__ == "__main__":
    main()
