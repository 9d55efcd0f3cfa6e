"""Running the server: where it may listen, and uvicorn with a graceful shutdown.

Without API keys the server answers anyone who can reach it, so it listens on loopback only
(:func:`check_bind`). On SIGINT / SIGTERM uvicorn stops accepting connections and lets the requests in
flight finish, for at most ``shutdown_timeout`` seconds (default: the request deadline, so that none is cut).
A second SIGTERM or SIGINT during that wait stops it at once (:func:`make_server`): the connections still
open are closed, which cancels their backend calls.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from functools import cache
from types import FrameType
from typing import Any

from blender_core.app.serve.config import ServeConfig

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
        exit; forcing also closes the open connections, so that the requests in flight end now."""

        loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

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


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve the ensemble until SIGINT / SIGTERM (then finish the requests in flight; a second signal
    stops it at once).

    Raises:
        ValueError: a non-loopback ``host`` without API keys (checked before anything is loaded).
        ConfigError: an environment variable the config names is not set.
    """
    check_bind(host, config)
    from blender_core.app.serve.app import create_app
    from blender_core.app.serve.redaction import install_log_filter

    app = create_app(config)
    server = make_server(uvicorn_config(app, config, host=host, port=port, log_level=log_level))
    install_log_filter(app.state.served.redactor)  # after uvicorn set up its log handlers
    server.run()
