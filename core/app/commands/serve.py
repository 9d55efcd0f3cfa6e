"""``blender-llm serve``: the ensemble as an OpenAI-compatible endpoint."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Annotated

import typer

from blender_core.app.commands._command import choice

#: uvicorn's log levels (uvicorn.config.LOG_LEVELS)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        config: Annotated[
            Path,
            typer.Option("--config", "-c", help="The TOML config: backends, ranker, fuser, limits, keys."),
        ],
        host: Annotated[
            str, typer.Option(help="Address to listen on; beyond loopback only with [server] api_key_envs.")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
        log_level: Annotated[
            str, choice(LOG_LEVELS, "--log-level", help="How much the server logs (uvicorn's log level).")
        ] = "info",
    ) -> None:
        """Serve several models, ranked and fused, as one OpenAI-compatible model.

        POST /v1/chat/completions (streaming, tools, summed usage; the per-candidate account with
        "blender": {"account": true} in the body), GET /v1/models, GET /health, GET /metrics (Prometheus;
        [server] metrics). Prints what it serves once it listens. Stops on Ctrl-C / SIGTERM after finishing
        the requests in flight. Exit status: 0 after that graceful stop, 1 when a second signal forced it,
        2 when it could not start (one line saying why; the traceback with --log-level debug).
        """
        from blender_core.app.serve.backends import check_serve_packages
        from blender_core.app.serve.config import ConfigError, load_config
        from blender_core.app.serve.run import serve as run
        from blender_core.app.serve.startup import StartupError

        check_serve_packages()  # a missing one: one line naming the extra (the CLI's ImportError hint)
        if not 0 <= port <= 65535:
            raise typer.BadParameter(f"must be 0..65535, got {port}", param_hint="--port")
        try:
            status = run(
                load_config(config),
                host=host,
                port=port,
                log_level=log_level,
                announce=lambda block: typer.echo(block, err=True),
            )
        except (ConfigError, StartupError, ValueError) as exc:  # it could not start
            if log_level in ("debug", "trace"):
                traceback.print_exception(exc)
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        raise typer.Exit(status)
