"""The demo's MNTP on a free machine and with another process busy on one core, by cpu_threads setting.

    python benchmarks/busy_machine.py              # 10 MNTP steps of configs/demo.json per run, 4 runs: minutes
    python benchmarks/busy_machine.py --full       # the whole `make demo` (MNTP + SimCSE) per run: ~20 minutes

Each run is the real command (`bg2vec mntp configs/demo.json ...`), timed from start to exit (loading
included). The busy process is a Python busy loop pinned to core 0. For each setting it prints the idle time,
the busy time and their ratio; the target is busy <= 1.5x idle. Last line, machine-readable:
`busy_machine: auto_ratio=R fixed_ratio=R auto_vs_best_idle=R` (those measured).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def busy_loop() -> subprocess.Popen:
    pin = (lambda: os.sched_setaffinity(0, {0})) if hasattr(os, "sched_setaffinity") else None
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)


def run_demo(workdir: Path, threads: str, steps: int | None) -> tuple[float, str]:
    """Seconds the demo takes with `cpu_threads` = threads, and the thread lines it printed."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["HF_HUB_OFFLINE"] = "1"
    mntp = [str(BIN / "bg2vec"), "mntp", str(ROOT / "configs/demo.json"), "--cpu_threads", threads,
            "--output_dir", str(workdir / "mntp"), "--overwrite_output_dir", "true"]
    commands = [mntp + (["--max_steps", str(steps), "--eval_strategy", "no", "--save_steps", str(steps)] if steps else [])]
    if steps is None:
        commands.append([str(BIN / "bg2vec"), "simcse", str(ROOT / "configs/demo-simcse.json"), "--cpu_threads", threads,
                         "--peft_model_name_or_path", str(workdir / "mntp"), "--output_dir", str(workdir / "simcse"),
                         "--overwrite_output_dir", "true"])
    started, notes = time.perf_counter(), []
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        notes += [line for line in done.stderr.splitlines() if line.startswith("cpu_threads auto")]
    return time.perf_counter() - started, "; ".join(dict.fromkeys(notes)) or "no change"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the whole make demo per run instead of 10 MNTP steps")
    parser.add_argument("--steps", type=int, default=10, help="MNTP steps per run without --full [default: 10]")
    parser.add_argument("--settings", default="auto,cores", help="cpu_threads values to compare [default: auto,cores]")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    steps = None if args.full else args.steps
    print(f"{'make demo' if args.full else f'bg2vec mntp configs/demo.json, {steps} steps, no evaluation'} | "
          f"{cores} cores | busy process: a Python loop pinned to core 0")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in [str(cores) if s == "cores" else s for s in args.settings.split(",")]:
            idle, idle_note = run_demo(Path(tmp), threads, steps)
            loop = busy_loop()
            try:
                time.sleep(1.0)
                busy, busy_note = run_demo(Path(tmp), threads, steps)
            finally:
                loop.kill()
                loop.wait()
            results[threads] = (idle, busy)
            print(f"cpu_threads {threads:>4}: idle {idle:6.1f} s | one core busy {busy:6.1f} s | ratio {busy / idle:.2f} "
                  f"(target <= 1.5) | busy run: {busy_note}")
    ratios = {f"{'fixed' if name != 'auto' else 'auto'}_ratio": busy / idle for name, (idle, busy) in results.items()}
    if "auto" in results and len(results) > 1:
        ratios["auto_vs_best_idle"] = results["auto"][1] / min(idle for idle, _ in results.values())
    print("busy_machine: " + " ".join(f"{key}={value:.2f}" for key, value in ratios.items()))


if __name__ == "__main__":
    main()
