"""One run at a time per output folder: an exclusive lock that a second run meets as one line naming the holder.

The lock is a file beside the output (`parent/.NAME.bg2vec-lock`, so taking it creates no output folder) holding
who took it (PID, host, command, time), locked with `flock`: the operating system drops the lock when the holder
exits, however it exits, so a lock can never outlive its run. A lock file whose PID is no longer running (a run
that was killed) is a stale one: it is named and taken over.

    with output_lock("outputs/mntp", "output_dir"):
        ...  # write the output

Training recipes hold the lock from `start_run` to `finish_run` (`hold_output_lock` / `release_output_lock`); a
process may take again a lock it already holds (a library user running one recipe after another that failed).
Under torchrun only the main process (RANK 0) takes it.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, first_line

_HELD: dict[str, tuple[int, Path]] = {}  # lock file -> (fd, created parent folders to remove on release)


def lock_path(folder: str | Path) -> Path:
    path = Path(folder).absolute()
    return path.parent / f".{path.name}.bg2vec-lock"


def hold_output_lock(folder: str | Path, setting: str, log=print) -> None:
    """Take the lock of `folder` for this process (kept until `release_output_lock` or exit), or raise
    `ConfigError` naming the run that holds it."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    path = lock_path(folder)
    if str(path) in _HELD:
        return
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            _remove_empty(created)
            raise ConfigError(setting, str(folder), "a folder this user can create and write in", fix=first_line(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            _remove_empty(created)
            raise ConfigError(setting, str(folder), "a folder no other bg2vec run is writing",
                              fix=f"{holder} is writing it; wait for it to end, or pick another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    earlier = _read(fd)
    if earlier.get("pid") and earlier.get("pid") != os.getpid():
        log(f"warning: {setting}={str(folder)!r} had a stale lock of {_describe(earlier)}, which is no longer "
            "running (killed?); taking it over")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": " ".join(sys.argv[:4])}).encode(), 0)
    _HELD[str(path)] = (fd, created)


def release_output_lock(folder: str | Path) -> None:
    """Give back the lock of `folder` if this process holds it (the file goes; parent folders it created too)."""
    path = lock_path(folder)
    held = _HELD.pop(str(path), None)
    if held is None:
        return
    fd, created = held
    path.unlink(missing_ok=True)
    os.close(fd)
    _remove_empty(created)


@contextmanager
def output_lock(folder: str | Path, setting: str, log=print) -> Iterator[None]:
    """The lock of `folder` for the block (see the module docstring)."""
    hold_output_lock(folder, setting, log)
    try:
        yield
    finally:
        release_output_lock(folder)


def _read(fd: int) -> dict:
    try:
        value = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return value if isinstance(value, dict) else {}
    except ValueError:
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another bg2vec run"
    return f"PID {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`, since {holder.get('started')})"


def _remove_empty(created: list[Path]) -> None:
    for folder in created:  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@atexit.register
def release_all_locks() -> None:
    """Give back every lock this process holds (the CLI calls it when a command ends, however it ends)."""
    for name in list(_HELD):
        release_output_lock(Path(name).parent / Path(name).name[1:].removesuffix(".bg2vec-lock"))
