"""The `bg2vec` command: parse → config → call the library. Input errors print one line and exit 2.

    bg2vec mntp CONFIG.json [--key value ...] [--resume [CHECKPOINT]]
    bg2vec encode [CONFIG.json] --model M --input texts.txt --output embeddings.npy [--batch-size 64 ...]

Each subcommand is one `Command` row in `COMMANDS`: its config dataclass and a function `run(config, args)`.
Its flags are generated from the dataclass's fields (`cli_flags.add_config_flags`: type, help and default
from the field), so every default lives once, in `bg2vec.config`. Training commands take free `--key value`
overrides instead (any TrainingArguments key passes through). docs/cli.md says how to add a command.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .cli_flags import add_config_flags, given, settings_epilog, split_overrides
from .config import EncodeConfig, EncodeCorpusConfig, EvaluateConfig, ExportConfig, MergeConfig, MineNegativesConfig, MNTPConfig
from .config import PrepareConfig, ServeConfig, SimCSEConfig, SupervisedConfig, load_config
from .errors import Bg2VecError, ConfigError, TrainingInterrupted, first_line
from .locks import release_all_locks

EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 1  # the machine refused (disk full, I/O error): one line, no traceback
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
# What Ctrl-C leaves, by command (training interrupted mid-run says where it stopped, and how to resume)
INTERRUPTED = {
    "encode": "interrupted; no output file was written",
    "mine-negatives": "interrupted; no output file was written",
    "prepare": "interrupted; no output folder was written (tokenized documents already cached are kept)",
    "evaluate": "interrupted; no report was written (scores of tasks that finished are in the result cache)",
}


def _train(run: Callable, config: Any, args: argparse.Namespace, final_line: Callable[[dict], str], saved: str,
           after: Callable[[Any], str | None] = lambda result: None) -> None:
    """Run a training recipe and print its summary once (on the main process): the table, the final
    evaluation (`final_line`), anything `after` adds, what was saved and how long it took."""
    from .processes import is_main_process

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


def _run_mntp(config: MNTPConfig, args: argparse.Namespace) -> None:
    from .recipes.mntp import run_mntp

    _train(run_mntp, config, args,
           lambda final: f"final validation: loss {_metric(final, 'eval_loss')} | perplexity "
                         f"{_metric(final, 'eval_perplexity', 2)} | masked-token accuracy {_metric(final, 'eval_accuracy')}",
           "adapter, tokenizer, config, metrics.json and mntp_curves.png")


def _run_simcse(config: SimCSEConfig, args: argparse.Namespace) -> None:
    from .recipes.reporting import format_pair_similarities
    from .recipes.simcse import run_simcse

    def final_line(final: dict) -> str:
        line = (f"final validation: contrastive loss {_metric(final, 'eval_loss')} | alignment "
                f"{_metric(final, 'eval_alignment')} | uniformity {_metric(final, 'eval_uniformity')}")
        return line + (f" | Spearman {final['eval_spearman']:.4f}" if "eval_spearman" in final else "")

    _train(run_simcse, config, args, final_line, "adapter, tokenizer, bg2vec_config.json, metrics.json and simcse_curves.png",
           lambda result: format_pair_similarities(result.pairs, config.eval_pairs_file) if result.pairs else None)


def _run_supervised(config: SupervisedConfig, args: argparse.Namespace) -> None:
    from .recipes.supervised import run_supervised

    _train(run_supervised, config, args,
           lambda final: f"final held-out retrieval: accuracy@1 {_metric(final, 'eval_accuracy')} | MRR "
                         f"{_metric(final, 'eval_mrr')} | loss {_metric(final, 'eval_loss')}",
           "adapter, tokenizer, bg2vec_config.json, metrics.json and supervised_curves.png")


def _run_prepare(config: PrepareConfig, args: argparse.Namespace) -> None:
    from .recipes.prepare import SUMMARY_FILE, prepare_corpus

    started = time.time()
    result = prepare_corpus(config)
    print(f"saved the blocks (save_to_disk) and {SUMMARY_FILE} to {result.output}")
    print(f"train on them with: bg2vec mntp CONFIG.json --dataset_path {result.output}")
    print(f"took {time.time() - started:.0f} s")


def _run_encode(config: EncodeConfig, args: argparse.Namespace) -> None:
    from .encoding.devices import checked_device
    from .encoding.encoder import Bg2Vec
    from .encoding.files import check_paths, encode_file
    from .models.layouts import resolve_model
    from .paths import plan_inputs

    models = {"--model": config.model_name_or_path, "--adapter": config.adapter}
    check_paths(config.input, config.output, models, config.overwrite)
    # the whole chain the model reads (base, adapters, tokenizer): the output may be none of them
    check_paths(config.input, config.output, plan_inputs(resolve_model(config.model_name_or_path, config.adapter), "--model"),
                config.overwrite)
    devices = config.devices()
    for device in [devices] if isinstance(devices, str) else devices or []:
        checked_device(device)  # before the model loads
    started = time.time()
    placement = {"device_map": devices} if isinstance(devices, str) else {}  # one device: load the model there
    encoder = Bg2Vec.from_pretrained(
        config.model_name_or_path, config.adapter, merge_peft=config.merge_adapter, pooling_mode=config.pooling_mode,
        max_length=config.max_length, torch_dtype=config.torch_dtype, trust_remote_code=config.trust_remote_code,
        **placement,
    )
    try:
        rows = encode_file(
            encoder, config.input, config.output, batch_size=config.batch_size, chunk_size=config.chunk_size,
            instruction=config.instruction, normalize_embeddings=config.normalize, device=devices,
            dim=config.dim, max_batch_tokens=config.max_batch_tokens, overwrite=config.overwrite,
        )
    finally:
        encoder.stop_pool()
    seconds = time.time() - started
    print(f"wrote {rows:,} embeddings ({encoder.settings.pooling_mode} pooling) to {config.output} in {seconds:.0f} s")


def _run_encode_corpus(config: EncodeCorpusConfig, args: argparse.Namespace) -> None:
    from .recipes.encode_corpus import encode_corpus

    try:
        summary = encode_corpus(config)
    except KeyboardInterrupt:
        print(f"\nbg2vec encode-corpus: interrupted; the finished shards in {config.output} are kept: run the same "
              "command again to go on", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    print(summary.line())


def _run_mining(config: MineNegativesConfig, args: argparse.Namespace) -> None:
    from .encoding.encoder import Bg2Vec
    from .encoding.mining import MiningSettings, check_mining_paths, mine_file
    from .models.layouts import resolve_model
    from .paths import plan_inputs

    settings = MiningSettings(**config.mining())
    if not Path(config.input).exists():
        raise ConfigError("--input", config.input, "an existing .jsonl file or folder", fix="check the path")
    models = plan_inputs(resolve_model(config.model_name_or_path, config.adapter), "--model")
    check_mining_paths(config.input, config.output, config.pool, config.overwrite, models)
    started = time.time()
    encoder = Bg2Vec.from_pretrained(config.model_name_or_path, config.adapter, torch_dtype=config.torch_dtype,
                                     trust_remote_code=config.trust_remote_code)
    counts = mine_file(encoder, config.input, config.output, settings, config.pool, config.overwrite, models)
    print(f"wrote {counts['rows']:,} rows with {counts['negatives']:,} hard negatives "
          f"({counts['rows_without_negative']:,} rows found none) to {config.output} in {time.time() - started:.0f} s")


def _run_evaluate(config: EvaluateConfig, args: argparse.Namespace) -> None:
    from .recipes.evaluate import run_evaluate

    started = time.time()
    result = run_evaluate(config)
    print()
    print(result.table)
    print()
    print(f"saved evaluation.json, evaluation.md and evaluation.png to {result.output_dir}")
    print(f"took {time.time() - started:.0f} s")


def _run_merge(config: MergeConfig, args: argparse.Namespace) -> None:
    from .recipes.merge import run_merge

    described = run_merge(config)
    merged = described["merged_from"]
    print(f"merged {len(merged['adapters'])} adapters ({merged['method']}, rank {merged['rank_each']} each) into {config.output}")


# --- export (`bg2vec export`) ------------------------------------------------------------------------------------

def _run_export(config: ExportConfig, args: argparse.Namespace) -> None:
    from .encoding.encoder import Bg2Vec
    from .exports import check_target, export_model
    from .exports.common import check_output

    sources = {"--model": config.model_name_or_path, "--adapter": config.adapter}
    check_output(config.output, sources, config.overwrite)  # before the (slow) load
    started = time.time()
    encoder = Bg2Vec.from_pretrained(config.model_name_or_path, config.adapter, merge_peft=True, torch_dtype="float32")
    check_target(encoder, config.to, config.gguf_types)
    result = export_model(encoder, config.to, config.output, config.prompts, config.truncate_dim, config.gguf_types,
                          not config.no_int8, config.overwrite, sources)
    print(f"wrote {', '.join(result.files)} to {result.path} for {config.to} ({encoder.settings.pooling_mode} pooling)")
    for note in result.notes:
        print(f"note: {note}")
    print(f"took {time.time() - started:.0f} s")

# --- end of export -----------------------------------------------------------------------------------------------


def add_resume_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
        help="continue from the last checkpoint in output_dir, or from CHECKPOINT",
    )


# ==== bg2vec serve ======================================================================================

def _run_serve(config: ServeConfig, args: argparse.Namespace) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError("serve", exc.name, "fastapi and uvicorn installed", fix="pip install 'bg2vec-toolkit[serve]'") from None
    from .serving.app import ServeLimits, create_app
    from .serving.batcher import BatchLimits
    from .serving.model import Instructions, ServedModel
    from .serving.server import bind_socket, load_encoders, run_server

    sock = bind_socket(config.host, config.port)  # a busy port fails before the model loads
    try:
        encoder, *replicas = load_encoders(config.model_name_or_path, config.adapter, config.devices(),
                                           config.backend, config.onnx_variant, torch_dtype=config.torch_dtype, pooling_mode=config.pooling_mode,
                                           max_length=config.max_length)
        served = ServedModel(encoder, config.served_model_name or config.model_name_or_path, config.truncate,
                             Instructions(config.query_instruction, config.document_instruction), replicas)
        batching = BatchLimits(config.max_batch_tokens, config.batch_size, config.max_wait_ms / 1000,
                               config.max_queued_requests, config.max_queued_tokens)
        limits = ServeLimits(config.max_inputs, config.max_request_tokens, config.max_body_bytes, batching, config.api_key)
        host, port = sock.getsockname()[:2]
        devices = ", ".join(str(worker.device) for worker in served.workers)
        print(f"bg2vec serve: {served.name} ({served.dimensions} dims, on {devices}) at http://{host}:{port} once warmed up",
              flush=True)
        run_server(create_app(served, limits), sock, config.log_level)
    finally:
        sock.close()


MODEL_FLAG = ("--model", "--model-name-or-path")


@dataclass(frozen=True)
class Command:
    """One subcommand: its config dataclass and what runs it.

    A command's flags are generated from `config_class` (renamed by `flags`), and an optional first argument
    CONFIG.json gives settings the flags then override. A `training` command instead takes free `--key value`
    overrides after CONFIG.json (TrainingArguments keys pass through) and lists its settings in --help.
    """

    help: str
    config_class: type
    run: Callable[[Any, argparse.Namespace], None]  # (the config, the parsed args: e.g. --resume)
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field → option spellings, if not --field-name
    positional: str | None = None  # a list field taken as positional arguments (then no CONFIG.json)
    training: bool = False


COMMANDS: dict[str, Command] = {
    "mntp": Command("Bi-MNTP training of a bidirectional decoder with LoRA.", MNTPConfig, _run_mntp, training=True),
    "simcse": Command(
        "Unsupervised SimCSE on top of Bi-MNTP: contrastive LoRA training of the encoder.", SimCSEConfig, _run_simcse,
        training=True,
    ),
    "supervised": Command(
        "Supervised contrastive training on (query, positive, hard negative) rows with instructions, on top of Bi-MNTP.",
        SupervisedConfig, _run_supervised, training=True,
    ),
    "prepare": Command(
        "Corpus preparation: raw text → tokenized max_seq_length blocks with a validation split (for dataset_path).",
        PrepareConfig, _run_prepare, {"model_name_or_path": MODEL_FLAG, "overwrite_output": ("--overwrite",)},
        positional="inputs",
    ),
    "encode": Command(
        "Embed the texts of a .txt/.jsonl file into a .npy/.parquet file, streaming.", EncodeConfig, _run_encode,
        {"model_name_or_path": MODEL_FLAG},
    ),
    "encode-corpus": Command(
        "Embed a corpus (files, folders, globs) into Parquet shards + manifest.json: resumable, exactly once, local or Ray.",
        EncodeCorpusConfig, _run_encode_corpus, {"model_name_or_path": MODEL_FLAG}, positional="inputs",
    ),
    "mine-negatives": Command(
        "Mine hard negatives for (query, positive) rows with an encoder: JSON lines in, triples out, streamed.",
        MineNegativesConfig, _run_mining, {"model_name_or_path": MODEL_FLAG},
    ),
    "evaluate": Command(
        "Score encoders on MTEB tasks and local task folders; a report (Markdown, PNG, JSON); earlier runs compared.",
        EvaluateConfig, _run_evaluate, {"models": ("--model",), "labels": ("--label",)},
    ),
    "merge": Command(
        "Merge LoRA adapters of one base, stage and rank (average or slerp) into one output folder.",
        MergeConfig, _run_merge, {"model_name_or_path": MODEL_FLAG},
    ),
    "serve": Command(
        "Serve the encoder over HTTP: OpenAI's /v1/embeddings, /v1/rerank, a page at /, /health and /metrics.",
        ServeConfig, _run_serve, {"model_name_or_path": MODEL_FLAG},
    ),
    "export": Command(
        "Write a folder sentence-transformers, ONNX Runtime, llama.cpp, TEI or vLLM reads, adapters merged, with the "
        "attention switch, pooling and instructions that runtime needs.",
        ExportConfig, _run_export,
        {"model_name_or_path": MODEL_FLAG, "instructions": ("--instruction",), "gguf_types": ("--gguf-type",)},
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bg2vec", description="Turn a decoder-only LLM into a text encoder.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=command.help, description=command.help, formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=settings_epilog(command.config_class) if command.training else None,
        )
        # CONFIG.json is taken by `main` from the first leftover argument, so flags alone work too
        if command.training:
            sub.usage = f"bg2vec {name} [CONFIG.json] [--key value ...] [--resume [CHECKPOINT]]"
            add_resume_argument(sub)
        else:
            if command.positional is None:
                sub.usage = f"bg2vec {name} [CONFIG.json] [--flag value ...]  (flags override CONFIG.json's keys)"
            add_config_flags(sub, command.config_class, command.flags, command.positional)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command = COMMANDS[args.command]
    config_path = None
    if command.positional is None and extra and not extra[0].startswith("-"):
        config_path = extra.pop(0)
    if extra and not command.training:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    signal.signal(signal.SIGTERM, _interrupt)  # torchrun and schedulers stop runs with SIGTERM
    try:
        if command.training:
            config = load_config(command.config_class, config_path, split_overrides(extra, parser))
        else:
            config = load_config(command.config_class, config_path, given=given(args, command.config_class))
        command.run(config, args)
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
