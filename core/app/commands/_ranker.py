"""How every command turns its ``--model`` / ``--ranker`` option into a ranker: one call to ``load_ranker``."""

from __future__ import annotations

from typing import Any

import typer

from blender_core.ranking import Ranker, load_ranker
from blender_core.ranking.registry import spec_name


def ranker_from_option(spec: str | None, **options: Any) -> tuple[Ranker, str]:
    """The ranker named on the command line (a folder, hub id or built-in name; None: the default ranker)
    and the name to show. A ranker that cannot be loaded exits with its error message and status 1: a
    command never falls back to another ranker, let alone a random one."""
    shown = spec_name(spec)
    try:
        return load_ranker(spec, **options), shown
    except (OSError, ValueError, ImportError) as exc:
        typer.echo(f"error: could not load the ranker {shown!r}: {exc}", err=True)
        raise typer.Exit(1) from exc


def device_of(ranker: Ranker) -> str:
    """Where the ranker runs, for the log line (rankers that do not say: "n/a")."""
    return str(getattr(ranker, "device", "n/a"))
