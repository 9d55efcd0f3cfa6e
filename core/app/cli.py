"""The ``blender-llm`` command line. Each command lives in ``blender_core.app.commands.<name>``.

Example:
    $ blender-llm rank sets.jsonl --out ranked.jsonl
    $ python -m blender_core.app.cli rank sets.jsonl --out ranked.jsonl   # the same
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from collections.abc import Callable
from typing import Any

import typer

from blender_core.app import commands

app = typer.Typer(help="blender-llm: rank and fuse the answers of several LLMs.", no_args_is_help=True)

# One module per command in blender_core.app.commands (modules starting with "_" are helpers); each defines
# ``register(app)``. A command imports its optional dependencies when it runs, so that a missing one only
# breaks that command (see ``_extra_hint``).
COMMAND_MODULES = tuple(
    m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")
)


def _extra_hint(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with a missing optional dependency reported as one error line naming the extra to
    install (the library's ``ImportError`` says which: ``pip install "blender-llm[eval]"``), exit status 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ImportError as exc:
            if "blender-llm[" not in str(exc):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc

    return run


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"blender_core.app.commands.{name}").register(app)
    for command in app.registered_commands:
        if command.callback is not None:
            command.callback = _extra_hint(command.callback)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


_register_all()

if __name__ == "__main__":  # python -m blender_core.app.cli (e.g. under accelerate launch -m)
    app()
