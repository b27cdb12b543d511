"""The GPU check: one short script (under 8 minutes on one H200) that proves the GPU path and measures a 7B step.

    python benchmarks/gpu_check.py                 # on the GPU machine: smoke runs + the 7B-shaped step
    python benchmarks/gpu_check.py --smoke-only    # the smoke runs only (also what the CPU test runs)

1. Smoke: the MNTP and SimCSE recipes and `encode` on a tiny random Mistral, bf16, with sdpa and (when the
   flash-attn package is installed) flash_attention_2: each trains 3 steps, saves, reloads and encodes.
2. A 7B-shaped Mistral with random weights (hidden 4096, 32 layers, 32/8 heads, MLP 14336, vocabulary 38,000),
   bf16, sdpa (FA2 if installed), LoRA r = 16 on q,k,v,o,gate,up,down, gradient checkpointing, the MNTP step at
   batch 32 x 512 (all_mask, p = 0.8): tokens/s, MFU and peak GPU memory; and the SimCSE step at 32 x 128.

MFU convention: LoRA training with frozen base weights costs about 4·N FLOPs per token (forward 2·N, backward
2·N for the activation gradients, no weight gradients; LoRA's own FLOPs and attention's T² term are left out,
and so is the recomputation gradient checkpointing adds), N = parameters of the decoder layers plus the LM head.
Peak bf16 dense throughput of the GPU is taken from --peak-tflops (H200 / H100 SXM: 989).
3. With --runtimes: `bg2vec export --to vllm` run by vLLM (installed here if missing) on the parity set.

Figures go to stdout and, as JSON, to $OUT/gpu_check.json when OUT is set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SEVEN_B = dict(vocab_size=38_000, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096, sliding_window=None,
               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def attention_kinds() -> list[str]:
    return ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])


def smoke(workdir: Path, device: str) -> list[dict]:
    """MNTP → SimCSE → encode on a tiny random Mistral for each attention kernel, bf16."""
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import CORPUS, build_tokenizer, tiny_config

    from bg2vec import Bg2Vec
    from bg2vec.config import MNTPConfig, SimCSEConfig
    from bg2vec.recipes.mntp import run_mntp
    from bg2vec.recipes.simcse import run_simcse

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    base = workdir / "tiny-mistral"
    AutoModelForCausalLM.from_config(tiny_config("mistral", len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    texts = workdir / "texts.txt"
    texts.write_text("\n".join(f"{i}. {line}" for i in range(8) for line in CORPUS) + "\n", encoding="utf-8")
    results = []
    for attention in attention_kinds():
        started = time.perf_counter()
        common = dict(model_name_or_path=str(base), train_file=str(texts), max_seq_length=32, max_steps=3,
                      per_device_train_batch_size=8, eval_steps=3, save_steps=3, lora_r=4, torch_dtype="bfloat16",
                      bf16=True, attn_implementation=attention, gradient_checkpointing=True)
        mntp_out, simcse_out = workdir / f"mntp-{attention}", workdir / f"simcse-{attention}"
        mntp = run_mntp(MNTPConfig(**common, output_dir=str(mntp_out), validation_split_percentage=20), log=lambda *_: None)
        simcse = run_simcse(SimCSEConfig(**common, output_dir=str(simcse_out), peft_model_name_or_path=str(mntp_out),
                                         mini_batch_size=4, validation_split_percentage=20), log=lambda *_: None)
        encoder = Bg2Vec.from_pretrained(str(simcse_out), torch_dtype="bfloat16", attn_implementation=attention)
        embeddings = encoder.encode(CORPUS, batch_size=4, device=device)
        results.append({
            "attention": attention, "mntp_eval_loss": mntp.final.get("eval_loss"), "simcse_eval_loss": simcse.final.get("eval_loss"),
            "encode_shape": list(embeddings.shape), "finite": bool(torch.isfinite(torch.as_tensor(embeddings)).all()),
            "seconds": round(time.perf_counter() - started, 1),
        })
        print(f"smoke {attention}: {results[-1]}", flush=True)
    return results


def seven_b_step(peak_tflops: float, steps: int) -> list[dict]:
    """The 7B-shaped MNTP (32 x 512) and SimCSE (32 x 128) steps on the GPU: tokens/s, MFU, peak memory."""
    import gc

    import torch

    results = []
    for workload, batch, seq in (("mntp", 32, 512), ("simcse", 32, 128)):
        for attention in attention_kinds():
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            results.append(_measure(workload, batch, seq, attention, peak_tflops, steps))  # its model is freed on return
            print(f"7B {workload} {attention}: {results[-1]}", flush=True)
    return results


def _measure(workload: str, batch: int, seq: int, attention: str, peak_tflops: float, steps: int) -> dict:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, MistralConfig

    from bg2vec.models.bidirectional import enable_bidirectional
    from bg2vec.objectives.mntp import MNTPModel
    from bg2vec.models.lora import add_lora
    from bg2vec.models.training_memory import enable_checkpointing
    from bg2vec.objectives.contrastive import info_nce_loss
    from bg2vec.objectives.simcse import SimCSEModel, set_attention_dropout, two_views

    device = torch.device("cuda")
    config = MistralConfig(**SEVEN_B, attn_implementation=attention, use_cache=False)
    torch.manual_seed(0)
    with device:
        if workload == "mntp":
            causal = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            decoder, lm_head = causal.get_decoder(), causal.get_output_embeddings().requires_grad_(False)
        else:
            decoder, lm_head = AutoModel.from_config(config, dtype=torch.bfloat16), None
    started = time.perf_counter()
    enable_bidirectional(decoder)
    check_seconds = time.perf_counter() - started
    counted = sum(p.numel() for name, p in decoder.named_parameters() if "embed_tokens" not in name)
    counted += config.vocab_size * config.hidden_size if workload == "mntp" else 0
    enable_checkpointing(decoder)
    if workload == "simcse":
        set_attention_dropout(decoder, 0.3)
    decoder = add_lora(decoder, 16, 32, 0.05)
    model = (MNTPModel(decoder, lm_head) if workload == "mntp" else SimCSEModel(decoder, "mean")).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(10, config.vocab_size, (batch, seq), device=device)
    mask = torch.ones_like(ids)
    labels = torch.where(torch.rand(batch, seq, device=device) < 0.8, ids, -100)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if workload == "mntp":
                loss = model(input_ids=torch.where(labels != -100, 5, ids), attention_mask=mask, labels=labels)["loss"]
            else:
                views = two_views({"input_ids": ids, "attention_mask": mask, "pooling_mask": mask})
                anchors, positives = model(**views).chunk(2)
                loss = info_nce_loss(anchors, positives, 20.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    tokens = batch * seq * (2 if workload == "simcse" else 1)
    return {
        "workload": workload, "attention": attention, "batch": f"{batch}x{seq}", "step_seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds), "mfu": round(4 * counted * tokens / seconds / (peak_tflops * 1e12), 3),
        "bidirectional_check_seconds": round(check_seconds, 2),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1), "counted_parameters": counted,
    }


def vllm_parity(workdir: Path) -> dict:
    """`bg2vec export --to vllm` of a tiny random Mistral, served by vLLM itself (pip-installed here when missing):
    the parity set's vectors against bg2vec pooling every token of the joined input (what vLLM computes: it has
    no instruction exclusion), and against bg2vec's own (skip_instruction) vectors. A separate process, so
    vLLM's CUDA setup cannot disturb the runs above."""
    import subprocess

    if importlib.util.find_spec("vllm") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "vllm"], check=True)
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT / 'tests')!r}); sys.path.insert(0, {str(ROOT / 'src')!r})
from dataclasses import replace
import numpy as np, torch
from transformers import AutoModelForCausalLM
from conftest import build_tokenizer, tiny_config
from bg2vec import Bg2Vec
from bg2vec.exports import export_model
from bg2vec.exports.parity import PARITY_SET, cosines, joined
tokenizer = build_tokenizer(); torch.manual_seed(0)
AutoModelForCausalLM.from_config(tiny_config("mistral", len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)).save_pretrained({str(workdir / 'm')!r})
tokenizer.save_pretrained({str(workdir / 'm')!r})
encoder = Bg2Vec.from_pretrained({str(workdir / 'm')!r}, torch_dtype="float32", device_map="cpu")
export_model(encoder, "vllm", {str(workdir / 'vllm')!r})
every = Bg2Vec(encoder.model, encoder.tokenizer, replace(encoder.settings, skip_instruction=False), encoder.name_or_path)
from vllm import LLM
llm = LLM({str(workdir / 'vllm')!r}, runner="pooling", dtype="float32", enforce_eager=True, gpu_memory_utilization=0.2)
got = np.array([o.outputs.embedding for o in llm.embed(joined(PARITY_SET))], dtype=np.float32)
print(json.dumps({{"vs_all_tokens_pooled": float(cosines(got, every.encode(joined(PARITY_SET))).min()),
                  "vs_bg2vec": float(cosines(got, encoder.encode(PARITY_SET)).min())}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    line = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else None
    result = json.loads(line) if line else {"error": done.stderr.strip().splitlines()[-5:]}
    print(f"vllm parity: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke-only", action="store_true", help="only the tiny smoke runs")
    parser.add_argument("--steps", type=int, default=5, help="timed 7B steps per workload")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's peak bf16 dense TFLOPS")
    parser.add_argument("--runtimes", action="store_true", help="also the vLLM export's parity set (pip installs vllm)")
    args = parser.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "flash_attn": importlib.util.find_spec("flash_attn") is not None}
    print(report, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report["smoke"] = smoke(Path(tmp), device)
    if not args.smoke_only:
        if device != "cuda":
            raise SystemExit("the 7B-shaped step needs a GPU (run with --smoke-only here)")
        report["seven_b"] = seven_b_step(args.peak_tflops, args.steps)
    if args.runtimes:
        with tempfile.TemporaryDirectory() as tmp:
            report["vllm_parity"] = vllm_parity(Path(tmp))
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print("gpu_check: done")


if __name__ == "__main__":
    main()
