"""How every command names and loads its ranker: the options every command that ranks shares (``--model``,
``--strategy``, ``--device``), declared once here, and one call to ``load_ranker`` (:func:`ranker_from_option`),
whose errors are told in the command line's words.

A helper module, not a command. It imports the library only when a command runs (``--help`` imports every
command module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from blender_core.app.commands._command import choice

if TYPE_CHECKING:
    from blender_core.ranking import Ranker

#: the --strategy choices: blender_core.ranking.strategies.STRATEGIES (a test checks), named here so that
#: ``--help`` need not import the library
STRATEGIES = ("full", "bubble", "knockout", "sort")
#: the --strategy default of every command: the reference (every score, what `rank` writes and the paper
#: evaluates); knockout and bubble are cheaper ways to the best candidate alone
DEFAULT_STRATEGY = "full"
#: the built-in offline ranker, named in the advice of an error (blender_core.ranking.BUILTIN_RANKER)
BUILTIN_RANKER = "builtin:pairrm-minilm-l6"

Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=f"Ranker: folder, hub id, reward:<model> or built-in name ({BUILTIN_RANKER}, offline). "
        "Default: llm-blender/PairRM, from the hub.",
    ),
]
Strategy = Annotated[
    str,
    choice(
        STRATEGIES,
        "--strategy",
        help="How candidates are compared: full (all n(n-1) ordered pairs, every score; the reference), bubble "
        "or knockout (about 2(n-1) or n-1 comparisons, for the best candidate only: scores are not an order), "
        "sort (about 2 n log2 n).",
    ),
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: CUDA when available).")]


def ranker_from_option(spec: str | None, **options: Any) -> tuple[Ranker, str]:
    """The ranker named on the command line (a folder, hub id or built-in name; None: the default ranker)
    and the name to show. A ranker that cannot be loaded exits with its error message, in terms of
    ``--model``, and status 1: a command never falls back to another ranker, let alone a random one."""
    from blender_core.ranking import load_ranker
    from blender_core.ranking.registry import spec_name

    shown = spec_name(spec)
    try:
        return load_ranker(spec, **options), shown
    except (OSError, ValueError, ImportError) as exc:
        typer.echo(f"error: could not load the ranker {shown!r}: {in_cli_terms(exc)}", err=True)
        raise typer.Exit(1) from exc


def in_cli_terms(exc: BaseException) -> str:
    """An error of ``load_ranker`` as the command line says it: the default ranker's advice names
    ``--model`` rather than the Python argument."""
    from blender_core.ranking.registry import DefaultRankerUnavailableError

    if isinstance(exc, DefaultRankerUnavailableError):
        return exc.explain(lambda spec: f"--model {spec}")
    return str(exc)


def device_of(ranker: Ranker) -> str:
    """Where the ranker runs, for the log line (rankers that do not say: "n/a")."""
    return str(getattr(ranker, "device", "n/a"))
