"""How every ``blender-llm`` command reads and shows its arguments: :class:`Command`, the click command class the
CLI gives each command (the usage line in click's words, ``FILES...``; option names renamed in this release
still accepted, hidden from ``--help``, with a warning), and :func:`choice`, an option that takes one of a
few words and lists them in ``--help``.

A helper module, not a command (the CLI registers no module whose name starts with ``_``). It imports typer
only: ``blender-llm --help`` imports every command module, and must not wait for torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

import typer
from typer.core import TyperCommand


class Command(TyperCommand):
    """A ``blender-llm`` command: plain click help (one line per option, flags shown as flags), the usage
    line and the argument list naming ``FILES...`` (typer writes ``{files}...``), its first sentence whole in
    the list of commands, and :attr:`renamed`."""

    #: option names renamed in this release: old -> new. The old name is still accepted, hidden from --help,
    #: with a warning, until the next release (subclasses set it: see :func:`command_class`).
    renamed: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = {opt for param in self.params for opt in param.opts}
        unknown = sorted(new for new in self.renamed.values() if new not in names)
        if unknown:  # a mistake in this package, found when the CLI is built
            raise ValueError(f"{self.name}: renamed to options it does not have: {', '.join(unknown)}")

    def get_short_help_str(self, limit: int = 45) -> str:
        """The first sentence of the help, whole, for the list of commands (click cuts it at ``limit``, "...")."""
        if self.short_help:
            return self.short_help
        paragraph = " ".join(inspect.cleandoc(self.help or "").split("\n\n")[0].split())
        end = paragraph.find(". ")
        return paragraph if end < 0 else paragraph[: end + 1]

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [usage_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:  # hidden
                continue
            if param.param_type_name == "argument":
                arguments.append((usage_name(param), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._new_names(ctx, args))

    def _new_names(self, ctx: Any, args: Sequence[str]) -> list[str]:
        """``args`` with each renamed option (``--old`` or ``--old=value``) under its new name, said once."""
        out: list[str] = []
        for k, arg in enumerate(args):
            if arg == "--":  # what follows is arguments, never options
                return out + list(args[k:])
            old, eq, value = arg.partition("=")
            new = self.renamed.get(old)
            if new is not None:
                if not ctx.resilient_parsing:  # not while completing a command line
                    typer.echo(f"warning: {old} is now {new}; the old name goes in the next release", err=True)
                arg = new + eq + value
            out.append(arg)
        return out


def command_class(*, renamed: Mapping[str, str]) -> type[Command]:
    """A :class:`Command` class whose options ``renamed`` (old -> new) are also accepted under their old
    names: ``@app.command("eval-fusion", cls=command_class(renamed={"--threads": "--num-threads"}))``."""
    return type("Command", (Command,), {"renamed": dict(renamed)})


def usage_name(param: Any) -> str:
    """An argument as click writes it: ``FILES...``, ``[FILE]`` when optional."""
    name = param.metavar or param.name.upper()
    if not param.required:
        name = f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


def choice(values: Sequence[str], *param_decls: str, help: str, **options: Any) -> Any:
    """A typer option that takes one of ``values``: ``--help`` lists them (``[full|knockout|bubble|sort]``),
    and any other value is a usage error naming the option and the choices (before anything is loaded)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value

    return typer.Option(*param_decls, metavar=f"[{'|'.join(values)}]", callback=check, help=help, **options)


N = TypeVar("N", int, float)


def at_least(low: N) -> Callable[[N | None], N | None]:
    """An option callback: a number below ``low`` is a usage error naming the option and the value."""

    def check(value: N | None) -> N | None:
        if value is not None and value < low:
            raise typer.BadParameter(f"must be at least {low}, got {value}")
        return value

    return check


NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]
