"""``blender-llm calibrate``: the cost–quality curve of an adaptive-ensemble policy, simulated over a pool of
known answers, and the threshold to set."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from blender_core.app.commands._command import NoProgress, at_least, choice
from blender_core.app.commands._ranker import Device, Model
from blender_core.app.commands._threads import NumThreads, set_torch_threads

#: the --policy choices: blender_core.evaluation.calibrate.POLICIES (a test checks), named here so that
#: ``--help`` need not import the library
POLICIES = ("cascade", "quorum", "all", "single")
#: comparisons the ranker remembers across the sweep (its own logit cache: a subset's ranking reuses them)
RANKER_CACHE = 1_000_000


def _thresholds(text: str | None) -> list[float | None] | None:
    if text is None:
        return None
    out: list[float | None] = []
    for part in text.split(","):
        word = part.strip()
        try:
            out.append(None if word.lower() == "none" else float(word))
        except ValueError:
            raise typer.BadParameter(f"{word!r} is not a number or 'none'", param_hint="'--thresholds'") from None
    return out


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate(
        data: Annotated[Path, typer.Option("--data", exists=True, dir_okay=False, help="AlpacaEval pool file (.jsonl[.gz]): instructions with every model's answer and the judge's preference.")],
        prices: Annotated[Path, typer.Option("--prices", exists=True, dir_okay=False, help="Price table (TOML): per model price_in, price_out, optional tier and latency proxy (see scripts/prices.example.toml); its models form the ensemble.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, report.md and curve.png.")],
        policy: Annotated[str, choice(POLICIES, "--policy", help="What to sweep: cascade (accept_score, models in tiers), quorum (k = 1..n), all (the m cheapest models), single (each model alone).")] = "cascade",
        model: Model = None,
        target_cost: Annotated[float | None, typer.Option(callback=at_least(0.0), help="Recommend the best win rate at most this cost per instruction ($).")] = None,
        target_quality: Annotated[float | None, typer.Option(help="Recommend the cheapest setting with at least this win rate. Default (neither target): the best single model's win rate.")] = None,
        thresholds: Annotated[str | None, typer.Option(help="Cascade: the accept_score values to try, comma-separated ('none' for no rule). Default: from the pool.")] = None,
        limit: Annotated[int | None, typer.Option(callback=at_least(1), help="Only the first N instructions (a slow ranker on a CPU).")] = None,
        batch_size: Annotated[int, typer.Option(help="Comparisons per forward pass (a loading option of the ranker).")] = 32,
        device: Device = None,
        num_threads: NumThreads = 0,
        plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw curve.png beside the report.")] = True,
        no_progress: NoProgress = False,
    ) -> None:
        """Simulate an adaptive-ensemble policy over known answers and recommend its threshold.

        Each instruction's backends are the price table's models answering what the pool says they answered
        (cost from token counts and the prices); the engine's own policy flow, ranker and acceptance rule
        decide. The report gives selection win rate and cost per instruction for each threshold, beside the
        best single model, calling everything and the oracle (--model oracle: the judge's labels as
        ranker), and the config lines ([ensemble], [[backends]]) of the recommended setting."""
        from blender_core.data.alpacaeval import load_alpacaeval
        from blender_core.evaluation.calibrate import (
            ORACLE,
            OracleRanker,
            build_report,
            calibrate,
            load_prices,
            recommend,
            write_report,
        )
        from blender_core.ranking import Ranker

        if target_cost is not None and target_quality is not None:
            raise typer.BadParameter("give --target-cost or --target-quality, not both")
        if thresholds is not None and policy != "cascade":
            raise typer.BadParameter(f"--thresholds sets a cascade's accept_score; --policy {policy} sweeps its own")
        grid = _thresholds(thresholds)
        start = time.perf_counter()
        records = load_alpacaeval(data)[:limit]
        table = load_prices(prices)
        ranker: Ranker
        if model == ORACLE:
            ranker = OracleRanker(records)
        else:
            from blender_core.app.commands._ranker import ranker_from_option

            set_torch_threads(num_threads)
            options = {"device": device, "batch_size": batch_size}
            if not (model or "").startswith("reward:"):  # a pairwise ranker remembers its comparisons
                options["cache_size"] = RANKER_CACHE
            ranker, _ = ranker_from_option(model, **options)
        result = calibrate(records, table, ranker, policy=policy, thresholds=grid, show_progress=not no_progress)
        recommendation = recommend(result, target_cost=target_cost, target_quality=target_quality)
        report = build_report(
            result, recommendation, command="blender-llm " + shlex.join(sys.argv[1:]), data=str(data),
            seconds=time.perf_counter() - start,
        )  # fmt: skip
        folder = write_report(report, out, plot=plot)
        typer.echo((folder / "report.md").read_text())
