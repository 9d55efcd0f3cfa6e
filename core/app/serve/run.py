"""Running the server: where it may listen, and uvicorn with a graceful shutdown.

Without API keys the server answers anyone who can reach it, so it listens on loopback only
(:func:`check_bind`). On SIGINT / SIGTERM uvicorn stops accepting connections and lets the requests in
flight finish, for at most ``shutdown_timeout`` seconds (default: the request deadline, so that none is cut).
A second SIGTERM or SIGINT during that wait stops it at once (:func:`make_server`): the connections still
open are closed, which cancels their backend calls.

:func:`serve` returns the process's exit status: 0 after a graceful stop (uvicorn alone raises the signal
again once stopped, so that the process ends by it: 143 after SIGTERM, 130 after Ctrl-C, which systemd and
Kubernetes read as a failure), 1 when a second signal forced the exit. Whatever keeps it from starting is a
:class:`~blender_core.app.serve.startup.StartupError`, found before it listens (exit status 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from functools import cache
from types import FrameType
from typing import Any

from blender_core.app.serve.config import ConfigError, ServeConfig
from blender_core.app.serve.startup import StartupError, bind, load_ranker, unexpected

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, config: ServeConfig) -> None:
    """Refuse to listen beyond loopback without API keys.

    Raises:
        ValueError: ``host`` is not loopback and ``[server] api_key_envs`` is empty.
    """
    if config.server.api_key_envs or is_loopback(host):
        return
    raise ValueError(
        f"refusing to listen on {host!r} without API keys: anyone who can reach it could use the backends' "
        "keys. Set [server] api_key_envs to the names of environment variables holding the accepted keys, "
        "or listen on 127.0.0.1"
    )


def uvicorn_config(app: Any, config: ServeConfig, *, host: str, port: int, **options: Any) -> Any:
    """The uvicorn config of the server: the graceful shutdown's time limit, no server header."""
    import uvicorn

    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "timeout_graceful_shutdown": config.shutdown_timeout,
        "server_header": False,
        "lifespan": "on",
    }
    settings.update(options)
    return uvicorn.Config(app, **settings)


@cache
def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, where a second SIGTERM (not only a second SIGINT, as in uvicorn) forces the
        exit; forcing also closes the open connections, so that the requests in flight end now. A stop by
        signal is not raised again at the end (uvicorn's way): the caller chooses the exit status.
        ``announce`` is called once it listens."""

        loop: asyncio.AbstractEventLoop | None = None
        announce: Callable[[], None] | None = None
        exit_when_forced = False  # the process's own server: a forced stop ends the process, status 1

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and self.announce is not None:
                self.announce()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():  # signals: main thread only
                yield
                return
            from uvicorn.server import HANDLED_SIGNALS

            previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)
            if self.force_exit and self.exit_when_forced:
                # at once, as the signal itself would: the tasks left (the requests cut) are not unwound
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            again = self.should_exit and sig in (signal.SIGINT, signal.SIGTERM)
            super().handle_exit(sig, frame)
            if again:
                self.force_exit = True
                if self.loop is not None:  # from a signal handler: only this is safe to call
                    self.loop.call_soon_threadsafe(self.drop_connections)

        def drop_connections(self) -> None:
            open_now = list(self.server_state.connections)
            logger.warning("a second signal: stopping now, closing %d open connections", len(open_now))
            for connection in open_now:
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.close()

    return Server


def make_server(config: Any) -> Any:
    """The uvicorn server for a ``uvicorn.Config``: on SIGTERM / SIGINT it stops gracefully (the requests
    in flight finish); a second SIGTERM or SIGINT during that wait forces the exit at once."""
    return _server_class()(config)


def serve(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    announce: Callable[[str], None] | None = None,
) -> int:
    """Serve the ensemble until SIGINT / SIGTERM (then finish the requests in flight; a second signal
    stops it at once).

    Args:
        config: the validated config.
        host: the address to listen on.
        port: the port to listen on (0: any free one; the start-up block says which).
        log_level: uvicorn's log level.
        announce: called once with the start-up block (:mod:`~blender_core.app.serve.summary`) when the
            server listens.

    Returns:
        0, after a graceful stop. When a second signal forces the stop, the process ends at once with
        status 1 (the requests cut are not unwound), and this does not return.

    Raises:
        ValueError: a non-loopback ``host`` without API keys (checked before anything is loaded).
        ConfigError: an environment variable the config names is not set, or a local model cannot load.
        StartupError: anything else that keeps it from starting (the port, the ranker, a package), in the
            config's or the flags' terms.
    """
    check_bind(host, config)
    sock = bind(host, port)
    try:
        app, stop_metrics = _start(config)
    except (StartupError, ConfigError):
        sock.close()
        raise
    except Exception as exc:
        sock.close()
        raise unexpected(exc) from exc
    from blender_core.app.serve.redaction import install_log_filter
    from blender_core.app.serve.summary import startup_block, url

    server = make_server(uvicorn_config(app, config, host=host, port=port, log_level=log_level))
    server.exit_when_forced = True
    if announce is not None:
        block = startup_block(config, api_url=url(host, sock.getsockname()[1]))
        server.announce = lambda: announce(block)
    install_log_filter(app.state.served.redactor)  # after uvicorn set up its log handlers
    try:
        server.run(sockets=[sock])
    finally:
        stop_metrics()
    return 0


def _start(config: ServeConfig) -> tuple[Any, Callable[[], None]]:
    """The app with its ranker loaded, and the metrics listener started (with ``metrics = "port"``); the
    second item stops that listener."""
    from blender_core.app.serve.app import create_app
    from blender_core.app.serve.backends import INSTALL_SERVE

    try:
        app = create_app(config)
    except ImportError as exc:
        hint = "" if "blender-llm[" in str(exc) else f"; install with: {INSTALL_SERVE}"
        raise StartupError(f"{exc}{hint}") from exc
    load_ranker(app.state.served, config.ensemble.ranker)
    s = config.server
    if s.metrics != "port" or s.metrics_port is None:
        return app, lambda: None
    from blender_core.app.serve.metrics_http import serve_metrics_port

    return app, serve_metrics_port(app.state.metrics, s.metrics_host, s.metrics_port)
