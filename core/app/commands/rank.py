"""``blender-llm rank FILE --out OUT``: rank every candidate set of a JSON-lines file (resumable)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from blender_core.app.commands._ranker import device_of, ranker_from_option


def _at_least(low: int) -> Callable[[int], int]:
    """An option callback: a number below ``low`` is a usage error naming the option and the value."""

    def check(value: int) -> int:
        if value < low:
            raise typer.BadParameter(f"must be at least {low}, got {value}")
        return value

    return check


def register(app: typer.Typer) -> None:
    @app.command("rank")
    def rank(
        file: Annotated[
            Path,
            typer.Argument(
                help="Candidate sets, JSON lines (.gz ok): pairs, {instruction, candidates: [{model, output, pref}]}, MixInstruct, or {prompt, candidates: [str]}."
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out", "-o", help="Output JSON lines; records already in it are skipped (resume)."
            ),
        ],
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                "-m",
                help="Ranker: folder, hub id, reward:<model> or built-in name (default: llm-blender/PairRM, from the hub).",
            ),
        ] = None,
        strategy: Annotated[
            str,
            typer.Option(
                help="full (n(n-1) comparisons, every score) | knockout | bubble (2(n-1), for the best) | sort"
            ),
        ] = "full",
        batch_size: Annotated[
            int,
            typer.Option(
                callback=_at_least(1), help="Comparisons per forward pass (a loading option of the ranker)."
            ),
        ] = 32,
        chunk_size: Annotated[
            int,
            typer.Option(callback=_at_least(1), help="Records ranked together, then written and flushed."),
        ] = 32,
        score_key: Annotated[
            str | None,
            typer.Option(
                help="MixInstruct: the candidate score named in the data ('-name' if lower is better)."
            ),
        ] = None,
        errors: Annotated[
            Path | None,
            typer.Option(
                "--errors",
                help="Also write each skipped line to this JSON-lines file, with its line number and reason.",
            ),
        ] = None,
        device: Annotated[
            str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: CUDA when available).")
        ] = None,
        num_threads: Annotated[
            int,
            typer.Option(
                callback=_at_least(0),
                help="CPU threads for torch (0: torch's default); 1 is fastest on a busy shared CPU.",
            ),
        ] = 0,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    ) -> None:
        """Rank the candidates of each record and write scores, ranks and the best candidate per record.

        One output line per record: {"id" (or "line"), "line_hash", "prompt", "scores", "ranks", "best",
        "best_text", "best_model"?}. A pair record is ranked as two candidates (a = 0, b = 1) and marked
        "pair": true. A malformed line (bad bytes too) is reported as "line N: reason" and skipped. Run again
        with the same --out to resume an interrupted run. Exit status: 0 when every readable line was
        handled (bad lines included); 1 when the input is cut short or corrupt (after ranking every line
        before the damage), changed since --out was written, or the ranker cannot be loaded; 2 for a bad
        option or argument.
        """
        from tqdm.auto import tqdm

        from blender_core.batch.output import check_errors_path, check_output_path
        from blender_core.batch.rank_file import (
            BatchRankReport,
            InputChangedError,
            LineError,
            PartialInputError,
            rank_file,
        )
        from blender_core.ranking.strategies import STRATEGIES

        if strategy not in STRATEGIES:
            raise typer.BadParameter(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if num_threads > 0:
            import torch

            torch.set_num_threads(num_threads)
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
        start = time.perf_counter()
        ranker, shown = ranker_from_option(model, device=device, batch_size=batch_size)
        typer.echo(f"ranker: {shown} (loaded in {time.perf_counter() - start:.1f} s, {device_of(ranker)})")

        def on_error(e: LineError) -> None:
            tqdm.write(f"{file}: {e}; skipped", file=sys.stderr)  # above the progress bar

        def summary(report: BatchRankReport) -> None:
            parts = [f"ranked {report.written} records"]
            if report.pairs:
                parts.append(f"{report.pairs} of them pairs")
            if report.skipped:
                parts.append(f"skipped {report.skipped} already in {out}")
            if report.errors:
                parts.append(
                    f"skipped {len(report.errors)} bad lines" + (f" (see {errors})" if errors else "")
                )
            typer.echo(f"{'; '.join(parts)}; {report.elapsed_s:.1f} s -> {out}")

        try:
            report = rank_file(
                ranker,
                file,
                out,
                strategy=strategy,
                chunk_size=chunk_size,
                score_key=score_key,
                errors_path=errors,
                show_progress=not no_progress,
                on_error=on_error,
            )
        except PartialInputError as exc:  # what could be read was ranked: say so, then fail
            summary(exc.report)
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        except InputChangedError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        except OSError as exc:  # e.g. the disk filled up, or the output vanished, while writing
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(1) from exc
        summary(report)
