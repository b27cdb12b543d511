"""The pieces every config dataclass is made of: a field with its help text, and the checks `__post_init__` runs."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from ..errors import ConfigError

TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32")


def setting(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field with its help text (shown by `bg2vec COMMAND --help`, and as the flag's help)."""
    return field(default=default, metadata={"help": text}, **kwargs)


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(choices))


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(name, value, "a positive whole number (>= 1)")
