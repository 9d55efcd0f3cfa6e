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
from blender_core.app.commands._command import Command

# Plain click help (rich_markup_mode=None): one line per option, flags as flags, the docstrings' paragraphs
# rewrapped to the terminal. No local variables in a traceback: they may hold keys.
app = typer.Typer(
    help="blender-llm: rank and fuse the answers of several LLMs.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)

# One module per command in blender_core.app.commands (modules starting with "_" are helpers); each defines
# ``register(app)``. Registering is cheap: a command imports torch, transformers and the rest of the library
# when it runs, so that ``--help`` answers at once and a missing optional dependency only breaks the command
# that needs it (see ``_errors``).
COMMAND_MODULES = tuple(
    m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")
)


def _errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with the errors a user can fix told as one line, exit status 1: a missing optional
    dependency (the library's ``ImportError`` names the extra: ``pip install "blender-llm[eval]"``), and data
    or settings the library refuses (``ValueError``, ``FileNotFoundError``: their messages say what was wrong
    and what to do). With ``-v``, the traceback instead."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ImportError as exc:
            if "blender-llm[" not in str(exc):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        except (ValueError, FileNotFoundError) as exc:
            if _verbose:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc

    return run


def _quiet(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with transformers' own output (its "Loading weights" bars, its warnings) silenced when it
    runs, unless ``-v`` was given. Hub downloads keep their bars: a first download can take minutes."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not _verbose:
            quiet_transformers()
        return command(*args, **kwargs)

    return run


def quiet_transformers() -> None:
    """No progress bars and no logs below ERROR from transformers; huggingface_hub's download bars as they were."""
    import huggingface_hub.utils as hub
    import transformers.utils.logging as hf_logging

    hub_bars = not hub.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # which also turns off the hub's bars
    if hub_bars:
        hub.enable_progress_bars()


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"blender_core.app.commands.{name}").register(app)
    for command in app.registered_commands:
        if command.cls is None or not issubclass(command.cls, Command):  # typer's default class
            command.cls = Command
        if command.callback is not None:
            command.callback = _quiet(_errors(command.callback))


_verbose = False  # -v: set by the group's callback, before the command runs


@app.callback()
def _main(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log at INFO level, and show transformers' loading bars and warnings."
    ),
) -> None:
    global _verbose
    _verbose = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


_register_all()

if __name__ == "__main__":  # python -m blender_core.app.cli (e.g. under accelerate launch -m)
    app()
