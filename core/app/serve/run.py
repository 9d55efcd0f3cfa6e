"""Running the server: where it may listen, and uvicorn with a graceful shutdown.

Without API keys the server answers anyone who can reach it, so it listens on loopback only
(:func:`check_bind`). On SIGINT / SIGTERM uvicorn stops accepting connections and lets the requests in
flight finish, for at most ``shutdown_timeout`` seconds (default: the request deadline, so that none is cut).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from blender_core.app.serve.config import ServeConfig

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


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve the ensemble until SIGINT / SIGTERM (then finish the requests in flight).

    Raises:
        ValueError: a non-loopback ``host`` without API keys (checked before anything is loaded).
        ConfigError: an environment variable the config names is not set.
    """
    check_bind(host, config)
    import uvicorn

    from blender_core.app.serve.app import create_app
    from blender_core.app.serve.redaction import install_log_filter

    app = create_app(config)
    server = uvicorn.Server(uvicorn_config(app, config, host=host, port=port, log_level=log_level))
    install_log_filter(app.state.served.redactor)  # after uvicorn set up its log handlers
    server.run()
