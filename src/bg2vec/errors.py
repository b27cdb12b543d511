"""Errors that a user can fix: each says which setting, which value, what is allowed, and what to do."""

from __future__ import annotations

from typing import Any


class Bg2VecError(ValueError):
    """Base class of bg2vec's user-facing errors; the CLI prints them as one line and exits with status 2."""


class ConfigError(Bg2VecError):
    """A setting has a value we cannot use."""

    def __init__(self, setting: str, value: Any, allowed: str, fix: str | None = None) -> None:
        self.setting, self.value, self.allowed, self.fix = setting, value, allowed, fix
        message = f"{setting}={value!r} is not valid: expected {allowed}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class DataError(Bg2VecError):
    """The input data cannot give what a run needs (empty corpus, blocks too short, missing column...)."""


class TrainingDiverged(Bg2VecError):
    """Training reached a state it cannot learn from (a NaN or infinite loss or gradient, a gradient stuck at 0)."""


class NonFiniteEmbeddings(Bg2VecError):
    """A model gave NaN or infinite embeddings: its weights are broken, and no result computed from them is."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM at `step` of `total`; `checkpoint` is the last complete one (or None)."""

    def __init__(self, step: int, total: int, checkpoint: str | None) -> None:
        self.step, self.total, self.checkpoint = step, total, checkpoint
        super().__init__(f"interrupted at step {step} of {total}")
