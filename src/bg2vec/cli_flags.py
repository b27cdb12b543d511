"""Command-line options from a config dataclass: generated flags, and free `--key value` overrides.

`add_config_flags` turns each field into one option (type, help and default read from the field), so a
command's defaults live once, in its config dataclass; `given` collects what the command line set.
Training commands take free `--key value` overrides instead (`split_overrides`), listed by `settings_epilog`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence

from .config import config_help


def split_overrides(extra: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
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


def settings_epilog(config_class: type) -> str:
    lines = ["settings (JSON keys, or --key value to override):"]
    for name, text, default in config_help(config_class):
        lines.append(f"  {name:<32} {text} [default: {default}]")
    return "\n".join(lines)


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, flags: dict[str, tuple[str, ...]],
                     positional: str | None = None) -> None:
    """One option per field of `config_class`: type, help and default read from the field, nothing else.

    `flags` renames options (field → spellings; default `--field-name`); `positional` is a list field taken
    as positional arguments. Lists take several values (`--tasks a b`, or `--model a --model b`); booleans are
    `--flag`/`--no-flag` (a field already named no_... is one `--no-...` flag). Unset options stay out of the
    namespace (argparse.SUPPRESS), so the config file, then the dataclass, decide what they do not give.
    """
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        text = f.metadata.get("help", "")
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `int | None` → int
            hint = next(t for t in typing.get_args(hint) if t is not type(None))
        kind = typing.get_origin(hint) or hint
        if f.name == positional:
            parser.add_argument(f.name, nargs="+", metavar=f.name.rstrip("s").upper(), help=text)
            continue
        names = flags.get(f.name, ("--" + f.name.replace("_", "-"),))
        metavar = names[0].lstrip("-").replace("-", "_").upper()
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = " [required]" if default == "" else "" if default in (None, False, []) else f" [default: {default}]"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text + shown}
        if kind is bool:
            kwargs["action"] = "store_true" if f.name.startswith("no_") else argparse.BooleanOptionalAction
        elif kind is list:
            kwargs.update(action="extend", nargs="+", type=(typing.get_args(hint) or (str,))[0], metavar=metavar.rstrip("S"))
        else:
            kwargs.update(type=kind, metavar=metavar)
        parser.add_argument(*names, **kwargs)


def given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The settings the command line gave (the generated flags leave the others out)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return {name: value for name, value in vars(args).items() if name in names}
