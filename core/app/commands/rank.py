"""``blender-llm rank FILE --out OUT``: rank every candidate set of a JSON-lines file (resumable)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from blender_core.app.commands._ranker import device_of, ranker_from_option


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
                help="Ranker: folder, hub id or built-in name (default: the built-in ranker).",
            ),
        ] = None,
        strategy: Annotated[
            str,
            typer.Option(
                help="full (n(n-1) comparisons, every score) | knockout | bubble (2(n-1), for the best) | sort"
            ),
        ] = "full",
        batch_size: Annotated[
            int, typer.Option(help="Comparisons per forward pass (a loading option of the ranker).")
        ] = 32,
        chunk_size: Annotated[
            int, typer.Option(help="Records ranked together, then written and flushed.")
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
                help="CPU threads for torch (0: torch's default); 1 is fastest on a busy shared CPU."
            ),
        ] = 0,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    ) -> None:
        """Rank the candidates of each record and write scores, ranks and the best candidate per record.

        One output line per record: {"id" (or "line"), "prompt", "scores", "ranks", "best", "best_text",
        "best_model"?}. A pair record is ranked as two candidates (a = 0, b = 1) and marked "pair": true.
        A malformed line is reported as "line N: reason" and skipped. Run again with the same --out to
        resume an interrupted run.
        """
        from tqdm.auto import tqdm

        from blender_core.batch.rank_file import LineError, rank_file
        from blender_core.ranking.strategies import STRATEGIES

        if strategy not in STRATEGIES:
            raise typer.BadParameter(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if num_threads > 0:
            import torch

            torch.set_num_threads(num_threads)
        if not file.is_file():
            raise typer.BadParameter(f"{file} does not exist", param_hint="FILE")
        start = time.perf_counter()
        ranker, shown = ranker_from_option(model, device=device, batch_size=batch_size)
        typer.echo(f"ranker: {shown} (loaded in {time.perf_counter() - start:.1f} s, {device_of(ranker)})")

        def on_error(e: LineError) -> None:
            tqdm.write(f"{file}: {e}; skipped", file=sys.stderr)  # above the progress bar

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
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        parts = [f"ranked {report.written} records"]
        if report.pairs:
            parts.append(f"{report.pairs} of them pairs")
        if report.skipped:
            parts.append(f"skipped {report.skipped} already in {out}")
        if report.errors:
            parts.append(f"skipped {len(report.errors)} bad lines" + (f" (see {errors})" if errors else ""))
        typer.echo(f"{'; '.join(parts)}; {report.elapsed_s:.1f} s -> {out}")
