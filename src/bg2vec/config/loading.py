"""Configs from JSON files and `--key value` strings: llm2vec's keys accepted, types checked, unknown keys named.

Keys of transformers' `TrainingArguments` that a training config does not model pass through to it unchanged
(in `extra_training_args`); for every other config an unknown key is an error that names it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

CONFIG_FORMAT_VERSION = 1

# Old names that llm2vec's and Bg2Vec's configs use, mapped to ours.
KEY_ALIASES = {"evaluation_strategy": "eval_strategy"}

C = TypeVar("C")


def config_from_dict(config_class: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build `config_class` from a dict of llm2vec-style keys.

    Aliases are renamed; for a training config (one with `extra_training_args`), keys that `TrainingArguments`
    knows but the dataclass does not go there; any other key raises `ConfigError` naming all of them.
    """
    known = {f.name: f for f in dataclasses.fields(config_class)}
    passes_through = "extra_training_args" in known
    training_arg_names = _training_argument_names() if passes_through else set()
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = dict(values.get("extra_training_args", {}))
    unknown = []
    for key, value in values.items():
        if (passes_through and key == "extra_training_args") or key.startswith("#"):
            continue  # "#..." keys are comments in presets
        name = KEY_ALIASES.get(key, key)
        if name in known:
            kwargs[name] = value
        elif name in training_arg_names:
            extra[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            "config keys",
            ", ".join(sorted(unknown)),
            f"keys of {config_class.__name__}" + (" or transformers TrainingArguments" if passes_through else ""),
            fix=f"remove or rename them in {source} (see `bg2vec {_command_name(config_class)} --help`)",
        )
    for name, value in kwargs.items():
        kwargs[name] = _coerce(name, value, known[name].type)
    if passes_through:
        kwargs["extra_training_args"] = extra
    return config_class(**kwargs)


def _training_argument_names() -> set[str]:
    from transformers import TrainingArguments  # only training configs pay for this import

    return {f.name for f in dataclasses.fields(TrainingArguments)}


def load_config(
    config_class: type[C], path: str | Path | None, overrides: dict[str, str] | None = None, given: dict[str, Any] | None = None
) -> C:
    """Read a JSON config file (optional), then apply `--key value` overrides given as strings (parsed as JSON
    where they can be) and `given` values already typed (by the flags `bg2vec.cli` generates); later ones win."""
    values: dict[str, Any] = {}
    source = "the command line"
    if path is not None:
        source = str(path)
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config file", str(path), "an existing JSON file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError("config file", str(path), "a readable JSON object", fix=str(exc).splitlines()[0]) from None
        if not isinstance(values, dict):
            raise ConfigError("config file", str(path), "a JSON object of key: value pairs")
    for key, text in (overrides or {}).items():
        values[key.replace("-", "_")] = _parse_cli_value(text)
    values.update(given or {})
    return config_from_dict(config_class, values, source)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config, with the format version."""
    return {"config_format_version": CONFIG_FORMAT_VERSION, **dataclasses.asdict(config)}


def config_help(config_class: type) -> list[tuple[str, str, Any]]:
    """(name, help, default) for every field, for `--help` output."""
    rows = []
    for f in dataclasses.fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f.name, f.metadata.get("help", ""), default))
    return rows


def _command_name(config_class: type) -> str:
    """The command a config belongs to, as its docstring names it: "... (`bg2vec mine-negatives`) ..."."""
    named = re.search(r"`bg2vec ([a-z-]+)`", config_class.__doc__ or "")
    return named.group(1) if named else config_class.__name__.removesuffix("Config").lower()


def _parse_cli_value(text: str) -> Any:
    """'true' → True, '3' → 3, '[1,2]' → list; anything that is not JSON stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check a JSON value against a field's type annotation, converting where lossless."""
    hint = _resolve(annotation)
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(name, None, f"a value of type {_type_name(options)}")
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, list):
            return value
        if origin is list and isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if origin is dict and isinstance(value, dict):
            return value
    raise ConfigError(name, value, f"a value of type {_type_name(options)}")


def _resolve(annotation: Any) -> Any:
    if isinstance(annotation, str):
        return eval(annotation, {**vars(typing), "Any": Any})  # annotations here are our own, simple types
    return annotation


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(options: tuple) -> str:
    return " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))

