"""A real `bg2vec serve` process on 127.0.0.1 and a free port, for the server tests (one per test module)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import bg2vec

START_TIMEOUT = 180  # seconds: importing torch on a busy two-core machine is most of it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`bg2vec serve --model MODEL ARGS...` started and waited for (until /health answers 200)."""

    def __init__(self, model: Path, *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(bg2vec.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
        env.pop("BG2VEC_API_KEY", None)
        self.log_path = log
        self._log = open(log, "w")
        command = [sys.executable, "-m", "bg2vec.cli", "serve", "--model", str(model), "--port", str(self.port),
                   "--torch-dtype", "float32", *args]
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the server did not become ready in {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
