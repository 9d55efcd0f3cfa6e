"""The ``blender-llm`` command line. Each command lives in ``blender_core.app.commands.<name>``."""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(help="blender-llm: rank and fuse the answers of several LLMs.", no_args_is_help=True)

# One module per command group; each defines ``register(app)``. Imported lazily so that a missing
# optional dependency only breaks its own command, with a message saying which extra to install.
COMMAND_MODULES = ("rank_demo", "train_ranker", "eval_ranker", "train_fuser", "eval_fusion", "demo", "rank")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"blender_core.app.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("blender_core.app.commands"):
                continue  # a command not written yet
            raise
        module.register(app)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


_register_all()
