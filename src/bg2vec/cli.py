"""The `bg2vec` command: parse → config → call the library. Input errors print one line and exit 2.

    bg2vec mntp CONFIG.json [--key value ...] [--resume [CHECKPOINT]]

Each subcommand is one `Command` row: how to add its arguments, and how to run it. Commands driven by a
JSON config (mntp, simcse) share `add_config_arguments`; their unknown `--key value` pairs are overrides.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .config import MNTPConfig, config_help, load_config
from .errors import Bg2VecError

EXIT_BAD_INPUT = 2


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


def _run_mntp(args: argparse.Namespace, overrides: dict[str, str]) -> None:
    from .train_mntp import run_mntp

    config = load_config(MNTPConfig, args.config, overrides)
    started = time.time()
    result = run_mntp(config, resume=args.resume)
    print()
    print(result.table)
    print()
    final = result.final
    if final:
        print(
            f"final validation: loss {final.get('eval_loss', float('nan')):.4f} | perplexity "
            f"{final.get('eval_perplexity', float('nan')):.2f} | masked-token accuracy "
            f"{final.get('eval_accuracy', float('nan')):.4f}"
        )
    print(f"saved adapter, tokenizer, config, metrics.json and mntp_curves.png to {result.output_dir}")
    print(f"took {time.time() - started:.0f} s")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="JSON config file (llm2vec's keys accepted)")
    parser.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
        help="continue from the last checkpoint in output_dir, or from CHECKPOINT",
    )


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, how it adds arguments, and what runs it (given args and `--key value` extras)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, dict[str, str]], None]
    config_class: type | None = None  # for config-driven commands: listed in --help, extras are overrides


COMMANDS: dict[str, Command] = {
    "mntp": Command("Bi-MNTP training of a bidirectional decoder with LoRA.", add_config_arguments, _run_mntp, MNTPConfig),
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
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command = COMMANDS[args.command]
    if extra and command.config_class is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    overrides = _split_overrides(extra, parser) if command.config_class else {}
    try:
        command.run(args, overrides)
    except Bg2VecError as exc:
        print(f"bg2vec {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
