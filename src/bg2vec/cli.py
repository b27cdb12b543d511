"""The `bg2vec` command: parse → config → call the library. Input errors print one line and exit 2.

    bg2vec mntp CONFIG.json [--key value ...] [--resume [CHECKPOINT]]
"""

from __future__ import annotations

import argparse
import sys
import time
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


COMMANDS: dict[str, tuple[str, type, Callable]] = {
    "mntp": ("Bi-MNTP training of a bidirectional decoder with LoRA.", MNTPConfig, _run_mntp),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bg2vec", description="Turn a decoder-only LLM into a text encoder.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, config_class, _) in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, epilog=_settings_epilog(config_class),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("config", nargs="?", help="JSON config file (llm2vec's keys accepted)")
        sub.add_argument(
            "--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
            help="continue from the last checkpoint in output_dir, or from CHECKPOINT",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = _split_overrides(extra, parser)
    _, _, handler = COMMANDS[args.command]
    try:
        handler(args, overrides)
    except Bg2VecError as exc:
        print(f"bg2vec {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
