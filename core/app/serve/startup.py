"""Why ``blender-llm serve`` could not start, said in one line in the terms the user typed: a config key
(``ensemble.ranker: ...``) or a flag (``--port 8000: ...``).

Everything that can fail is tried before the server accepts a request, in this order: the listening
socket (:func:`bind`: a port in use fails at once, before seconds of model loading), the ensemble (the
environment variables the config names, local models, packages), the ranker (:func:`load_ranker`) and the
metrics listener. Each failure is a :class:`StartupError`; ``blender-llm serve`` prints it as one line and
exits 2 (the traceback only with ``--log-level debug``).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from blender_core.ranking.registry import BUILTIN_RANKER, DEFAULT_RANKER, DefaultRankerUnavailableError


class StartupError(RuntimeError):
    """The server could not start; the message names the config key or flag at fault and what to do."""


def bind(host: str, port: int, *, host_is: str = "--host", port_is: str = "--port") -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet: connections are refused until the server
    starts). ``host_is`` / ``port_is`` name where the values came from, for the error.

    Raises:
        StartupError: the port is in use or not allowed, or the address is not one of this machine's.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise StartupError(
            f"{host_is} {host!r}: not an address or a name this machine resolves ({exc}); pass an address of "
            "this machine, e.g. 127.0.0.1"
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart reuses the port
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise listen_error(exc, host, port, host_is=host_is, port_is=port_is) from exc
    sock.set_inheritable(True)
    return sock


def listen_error(
    exc: OSError, host: str, port: int, *, host_is: str = "--host", port_is: str = "--port"
) -> StartupError:
    """Why ``host:port`` could not be listened on, naming the setting to change."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"{port_is} {port}: {where} is already in use (another server?); stop it or choose another port"
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"{port_is} {port}: not allowed to listen on {where} (ports below 1024 need privileges); choose "
            "a port above 1023"
        )
    return StartupError(
        f"{host_is} {host!r}: cannot listen on {where} ({exc.strerror or exc}); pass an address of this "
        "machine, e.g. 127.0.0.1"
    )


def load_ranker(served: Any, spec: str | None) -> None:
    """Load the served ensemble's ranker (``spec``: the config's ``ensemble.ranker``) now, before the first
    request would pay for it.

    Raises:
        StartupError: it cannot be loaded; the message names ``ensemble.ranker`` and what to set.
    """
    try:
        served.warm_up()
    except DefaultRankerUnavailableError as exc:
        raise StartupError(
            f"ensemble.ranker: not set, and the default ranker {DEFAULT_RANKER!r} cannot be loaded ({exc.why}); "
            f'set ranker = "{BUILTIN_RANKER}" in [ensemble] (shipped with this package, needs '
            "blender-llm[local]; a small stand-in, no better than 'the longer answer wins' on human labels) or "
            "the folder of a PairRM checkpoint"
        ) from exc
    except (OSError, ValueError, ImportError) as exc:
        raise StartupError(
            f"ensemble.ranker: {spec!r} could not be loaded: {exc}. Set ranker in [ensemble] to a checkpoint "
            'folder, a hub id that is reachable (or cached), or "builtin:pairrm-minilm-l6" offline'
        ) from exc


def unexpected(exc: BaseException) -> StartupError:
    """A failure nothing above foresaw, as one line (its traceback comes with ``--log-level debug``)."""
    error = StartupError(
        f"could not start: {type(exc).__name__}: {exc} (run with --log-level debug for the traceback)"
    )
    error.__cause__ = exc
    return error
