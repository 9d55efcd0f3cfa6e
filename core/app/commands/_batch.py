"""What every batch command (``rank``, ``label-pairs``) shares: its options (the inputs, the output, the
ranker and its loading options, the engine and its Ray settings), declared once here and gathered into
:class:`BatchOptions`; the checks made before a ranker is loaded; the bad-line lines and the summary; and how
a job runs (:func:`run_command`: the library's job with ``engine=``) and fails.

A helper module, not a command (the CLI registers no module whose name starts with ``_``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# the options every command that ranks shares, here with the batch commands' own (re-exported)
from blender_core.app.commands._command import NoProgress as NoProgress
from blender_core.app.commands._command import at_least as _at_least
from blender_core.app.commands._command import choice
from blender_core.app.commands._ranker import Device as Device
from blender_core.app.commands._ranker import Model as Model
from blender_core.app.commands._ranker import Strategy as Strategy
from blender_core.app.commands._threads import NumThreads as NumThreads
from blender_core.app.commands._threads import set_torch_threads

if TYPE_CHECKING:
    from blender_core.batch.plan import LineError
    from blender_core.batch.ray_cluster import RaySettings
    from blender_core.batch.settings import SettingsMismatchError
    from blender_core.batch.sharded import ShardedReport

# ---------------------------------------------------------------------------- options of every batch command
Files = Annotated[
    list[Path],
    typer.Argument(
        help='Input files: JSON lines (.gz ok) or Parquet (.parquet); pairs, {instruction, candidates: [{model, output, pref}]}, MixInstruct, or {prompt, candidates: [str]}. With several, records without an id are keyed by (file, line) and each output line says its "file".'
    ),
]
Out = Annotated[
    Path, typer.Option("--out", "-o", help="Output JSON lines; records already in it are skipped (resume).")
]
BatchSize = Annotated[
    int,
    typer.Option(
        callback=_at_least(1), help="Comparisons per forward pass (a loading option of the ranker)."
    ),
]
ChunkSize = Annotated[
    int,
    typer.Option(callback=_at_least(1), help="Records per rank call (their comparisons batched together)."),
]
ScoreKey = Annotated[
    str | None,
    typer.Option(help="MixInstruct: the candidate score named in the data ('-name' if lower is better)."),
]
Errors = Annotated[
    Path | None,
    typer.Option(
        "--errors",
        help="Also write each skipped line to this JSON-lines file, with its line number and reason.",
    ),
]
#: the --engine choices: blender_core.batch.jobs.ENGINES (a test checks)
ENGINES = ("local", "ray")
Engine = Annotated[
    str,
    choice(
        ENGINES,
        "--engine",
        help='local (this process) or ray (Ray Data and a pool of Ray actors; pip install "blender-llm[ray]"). '
        "With ray, --num-threads 0 lets Ray size each actor's threads from --cpus-per-actor.",
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        help="--engine ray: the cluster to join (what `ray start --head` prints; 'auto': the one started here). Default: $RAY_ADDRESS, else a new Ray on this machine."
    ),
]
Actors = Annotated[
    int | None,
    typer.Option(
        callback=_at_least(1),
        help="--engine ray: actors ranking at once, each loading the ranker once (default: one per GPU, else 1).",
    ),
]
GpusPerActor = Annotated[
    float | None,
    typer.Option(
        callback=_at_least(0.0),
        help="--engine ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0).",
    ),
]
CpusPerActor = Annotated[
    float,
    typer.Option(
        callback=_at_least(0.0),
        help="--engine ray: CPUs each actor reserves (below 1 to share a small machine).",
    ),
]
ShardSize = Annotated[
    int,
    typer.Option(
        callback=_at_least(1),
        help="Input lines per shard: the unit of work, of retry (--engine ray) and of resume; written to --out a shard at a time, so a stopped run loses at most the shards in progress.",
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Start over: delete --out, what it remembers, its settings, --errors and its parts first. Without it, an --out written with other settings (--model, --strategy, --pairs, --margin…) is refused.",
    ),
]
MaxRetries = Annotated[
    int,
    typer.Option(
        callback=_at_least(-1),
        help="--engine ray: times a shard is retried when its actor dies (then the run stops, keeping its work; -1: no limit).",
    ),
]

# ---------------------------------------------------------------------------- what every batch command does


@dataclass(frozen=True)
class BatchOptions:
    """The options every batch command takes, as given (each command declares them in its signature, which
    Typer reads, with the types above)."""

    files: list[Path]
    out: Path
    model: str | None
    strategy: str
    batch_size: int
    chunk_size: int
    score_key: str | None
    errors: Path | None
    device: str | None
    num_threads: int
    no_progress: bool
    engine: str
    address: str | None
    actors: int | None
    gpus_per_actor: float | None
    cpus_per_actor: float
    shard_size: int
    max_retries: int
    overwrite: bool

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> BatchOptions:
        """The batch options among a command's arguments (``locals()``, taken first thing in the command)."""
        return cls(**{f.name: given[f.name] for f in fields(cls)})


def check_paths(files: Sequence[Path], out: Path, errors: Path | None) -> None:
    """The checks made before a ranker is loaded: the inputs exist, the output and errors file can be written."""
    from blender_core.batch.output import check_errors_path, check_output_path

    if len(set(map(str, files))) != len(files):
        raise typer.BadParameter("an input is given more than once; pass each file once", param_hint="FILE")
    for file in files:
        if not file.is_file():
            raise typer.BadParameter(f"{file} does not exist", param_hint="FILE")
        try:  # before the ranker is loaded, which may take minutes
            check_output_path(out, file)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--out'") from exc
        if errors is not None:
            try:
                check_errors_path(errors, file, out)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="'--errors'") from exc


def ray_settings(opts: BatchOptions) -> RaySettings | None:
    """The Ray settings of ``--engine ray`` (None for the local engine, where a Ray option is a usage error)."""
    from blender_core.batch.jobs import ENGINES

    if opts.engine not in ENGINES:
        raise typer.BadParameter(
            f"unknown engine {opts.engine!r}; choose one of {', '.join(ENGINES)}", param_hint="'--engine'"
        )
    if opts.engine == "local":
        given = {"--address": opts.address, "--actors": opts.actors, "--gpus-per-actor": opts.gpus_per_actor}
        for name, value in given.items():
            if value is not None:
                raise typer.BadParameter(f"{name} is an option of --engine ray", param_hint=f"'{name}'")
        return None
    from blender_core.batch.ray_cluster import RaySettings

    try:
        return RaySettings(
            address=opts.address,
            actors=opts.actors,
            gpus_per_actor=opts.gpus_per_actor,
            cpus_per_actor=opts.cpus_per_actor,
            max_task_retries=opts.max_retries,
            num_threads=opts.num_threads,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def prepare_job(opts: BatchOptions) -> RaySettings | None:
    """What a batch command does before a ranker is loaded: check the engine and its Ray options, and the
    paths; set torch's threads in this process (a Ray actor sets its own). Returns the Ray
    settings (None: the local engine)."""
    settings = ray_settings(opts)
    if settings is None:
        set_torch_threads(opts.num_threads)
    check_paths(opts.files, opts.out, opts.errors)
    return settings


def ranker_options(opts: BatchOptions, settings: RaySettings | None) -> dict[str, Any]:
    """Check that the ranker can be one (exit 1 when it cannot) and return the loading options the job passes to
    ``load_ranker``; nothing is loaded (see :func:`announce_ranker`)."""
    from blender_core.ranking.registry import check_ranker_spec, spec_name

    try:
        check_ranker_spec(opts.model)
    except (TypeError, ValueError) as exc:
        typer.echo(f"error: could not load the ranker {spec_name(opts.model)!r}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if settings is None:
        return {"device": opts.device, "batch_size": opts.batch_size}
    options: dict[str, Any] = {"batch_size": opts.batch_size}
    if opts.device is not None:
        options["device"] = opts.device
    return options


def announce_ranker(opts: BatchOptions, settings: RaySettings | None) -> None:
    """Say which ranker runs, once the job has checked its output (a refused run loads nothing). The local engine
    loads it now, announced with its loading time and device (the job then finds it in ``load_ranker``'s cache;
    exit 1 when it cannot be loaded); with Ray, each actor loads it."""
    from blender_core.app.commands._ranker import device_of, ranker_from_option
    from blender_core.ranking.registry import spec_name

    if settings is None:
        start = time.perf_counter()
        ranker, shown = ranker_from_option(opts.model, device=opts.device, batch_size=opts.batch_size)
        typer.echo(f"ranker: {shown} (loaded in {time.perf_counter() - start:.1f} s, {device_of(ranker)})")
        return
    actors = settings.actors if settings.actors is not None else "one per GPU (else 1)"
    typer.echo(f"ranker: {spec_name(opts.model)} (loaded by each Ray actor; actors: {actors})")


#: how the CLI names each recorded setting (:mod:`blender_core.batch.settings`)
SETTING_FLAGS = {
    "job": "the command",
    "ranker": "--model",
    "revision": "the ranker's revision",
    "ranker_options": "the ranker's loading options",
    "strategy": "--strategy",
    "score_key": "--score-key",
    "pairs": "--pairs",
    "margin": "--margin",
}


def settings_refused(exc: SettingsMismatchError) -> str:
    """The refusal of a run whose settings differ from those its --out records, in the command's terms."""

    def shown(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, float):
            return f"{value:g}"
        return value if isinstance(value, str) else json.dumps(value)

    said = ", ".join(
        f"{SETTING_FLAGS.get(name, name)} {shown(old)} (this run: {shown(new)})" for name, old, new in exc.differences
    )
    return (
        f"{exc.out} was written with other settings: {said}. Nothing was loaded, ranked or written. Run with the "
        f"settings it was written with (they are in {exc.path}), add --overwrite to start over (it deletes "
        f"{exc.out}, its errors file and its parts), or write to another --out"
    )


def error_printer(files: Sequence[Path]) -> Callable[[LineError], None]:
    """Prints each skipped line as ``FILE: line N: reason; skipped``, above the progress bar."""
    from tqdm.auto import tqdm

    def on_error(e: LineError) -> None:
        tqdm.write(f"{e.file or files[0]}: {e}; skipped", file=sys.stderr)

    return on_error


def summary(report: ShardedReport, out: Path, errors: Path | None, *, what: str, rows: str) -> None:
    """The last line: what was ranked, skipped and reused, and where it went."""
    parts = [f"{what} {report.written} records"]
    if rows:
        parts[0] += f" into {report.rows} {rows}"
    if report.pairs:
        parts.append(f"{report.pairs} of them pair records" if rows else f"{report.pairs} of them pairs")
    if report.skipped:
        parts.append(f"skipped {report.skipped} already in {out}")
    if report.errors:
        parts.append(f"skipped {len(report.errors)} bad lines" + (f" (see {errors})" if errors else ""))
    if report.shards_reused:
        parts.append(f"took {report.shards_reused} shards ranked by an interrupted run")
    typer.echo(f"{'; '.join(parts)}; {report.elapsed_s:.1f} s -> {out}")


def run_command(
    job: Callable[..., ShardedReport],
    opts: BatchOptions,
    *,
    what: str = "ranked",
    rows: str = "",
    **job_args: Any,
) -> None:
    """Run a batch command: check its options, load (or check) the ranker, run the library's ``job``
    (``rank_files`` or ``label_pairs``, with ``job_args``) on the engine chosen, and print the summary; errors
    as one line and exit status 1 (2 for a usage error)."""
    from blender_core.batch.parts import OutputBusyError, PartStore
    from blender_core.batch.resume import InputChangedError
    from blender_core.batch.settings import SettingsMismatchError
    from blender_core.batch.sharded import JobInterrupted, PartialInputError, ShardJobError

    settings = prepare_job(opts)
    try:
        PartStore(opts.out).check_free()  # before the ranker is loaded, which may take minutes
        loading = ranker_options(opts, settings)
        report = job(
            list(opts.files),
            opts.out,
            opts.model,  # the spec, not the object: parts are named after it
            engine=opts.engine,
            ranker_options=loading,
            ray_settings=settings,
            strategy=opts.strategy,
            shard_size=opts.shard_size,
            chunk_size=opts.chunk_size,
            score_key=opts.score_key,
            errors_path=opts.errors,
            show_progress=not opts.no_progress,
            on_error=error_printer(opts.files),
            overwrite=opts.overwrite,
            on_start=lambda: announce_ranker(opts, settings),  # once --out is checked: a refused run loads nothing
            **job_args,
        )
    except JobInterrupted as exc:  # Ctrl-C: say what is saved, and how to go on
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(130) from exc
    except SettingsMismatchError as exc:
        typer.echo(f"error: {settings_refused(exc)}", err=True)
        raise typer.Exit(1) from exc
    except PartialInputError as exc:  # what could be read was ranked: say so, then fail
        summary(exc.report, opts.out, opts.errors, what=what, rows=rows)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (InputChangedError, ShardJobError, OutputBusyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except OSError as exc:  # e.g. the disk filled up, or the output vanished, while writing
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary(report, opts.out, opts.errors, what=what, rows=rows)
