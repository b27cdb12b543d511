"""The server process: bind the port, load the model, then serve until SIGTERM/SIGINT, draining the queue first.

The socket is bound before the model loads, so a port in use or a host that cannot be bound fails at once; it
listens only once the model is loaded and a warm-up batch has run (uvicorn runs the app's lifespan first).
Every start-up failure is a `ConfigError`: the CLI prints one line and exits 2, and nothing has listened.
"""

from __future__ import annotations

import logging
import signal
import socket
from typing import Any

from ..errors import ConfigError, first_line


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound (not yet listening) to host:port, or a `ConfigError` naming which one failed."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError("host", host, "an address this machine has (127.0.0.1, 0.0.0.0, ::1, a hostname)",
                          fix=first_line(exc)) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is reusable
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        setting, value = ("port", port) if exc.errno in (98, 13) else ("host", host)  # EADDRINUSE, EACCES
        raise ConfigError(setting, value, "a free port on an address of this machine",
                          fix=f"cannot bind {host}:{port}: {exc.strerror or first_line(exc)}") from None
    return sock


def load_encoders(model: str, adapter: str | None, devices: list[str] | None, backend: str = "torch",
                  onnx_variant: str = "fp32", **options: Any) -> list[Any]:
    """The encoder (`Bg2Vec.from_pretrained(model, adapter, **options)`) on each of `devices` (None: where it
    loads), resolved once; with `backend="onnx"`, one ONNX Runtime encoder of an exported folder; or a one-line
    `ConfigError`."""
    from ..encoding.backends import load_encoder
    from ..encoding.encoder import Bg2Vec
    from ..models.layouts import resolve_model

    try:
        if backend != "torch":
            return [load_encoder(model, backend, adapter, variant=onnx_variant)]
        plan = resolve_model(model, adapter)
        encoders = []
        for device in devices or [None]:
            encoder = Bg2Vec.from_plan(plan, **options)
            encoders.append(encoder if device is None else encoder.to(device))
    except ConfigError:
        raise
    except Exception as exc:  # a model that does not load fails here in many ways; the user sees one line
        raise ConfigError("model", model if adapter is None else f"{model} + {adapter}", "a model that loads",
                          fix=first_line(exc)) from None
    return encoders


def run_server(app: Any, sock: socket.socket, log_level: str = "info") -> None:
    """Serve `app` on the bound `sock` until SIGTERM or SIGINT; in-flight and queued requests are answered."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn re-raises the stop signal once it has drained; by then there is nothing left to interrupt.
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    config = uvicorn.Config(app, log_config=None, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise ConfigError("model", "warm-up", "a model that embeds a first batch", fix="see the log above")


def _stopped(signum: int, frame: object) -> None:
    logging.getLogger("bg2vec.serve").info("stopped")
