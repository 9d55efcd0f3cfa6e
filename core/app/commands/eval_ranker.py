"""``blender-llm eval-ranker``: pair accuracy and selection win rate of a ranker or an LLM judge, beside
baselines."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from blender_core.app.commands._command import NoProgress
from blender_core.app.commands._judge import (
    JudgeConcurrency,
    JudgeMaxNewTokens,
    JudgePromptName,
    JudgeSpec,
    JudgeTimeout,
    judge_from_option,
)
from blender_core.app.commands._ranker import DEFAULT_STRATEGY, Device, Model, Strategy
from blender_core.app.commands._threads import NumThreads, set_torch_threads


def _set_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def register(app: typer.Typer) -> None:
    @app.command("eval-ranker")
    def eval_ranker(
        data: Annotated[list[Path], typer.Option("--data", exists=True, dir_okay=False, help="Pair files and/or candidate-set files (.jsonl[.gz]). Repeat the option for several.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, report.md and accuracy.png.")],
        model: Model = None,
        score_key: Annotated[str | None, typer.Option(help="MixInstruct candidate sets: the candidate score that ranks them ('-name' if lower is better).")] = None,
        strategy: Strategy = DEFAULT_STRATEGY,
        batch_size: Annotated[int, typer.Option(help="Comparisons per forward pass (a loading option of the ranker).")] = 32,
        device: Device = None,
        num_threads: NumThreads = 0,
        plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw accuracy.png beside the report.")] = True,
        no_progress: NoProgress = False,
        judge: JudgeSpec = None,
        judge_prompt: JudgePromptName = "verdict",
        judge_max_new_tokens: JudgeMaxNewTokens = None,
        judge_timeout: JudgeTimeout = 120.0,
        judge_concurrency: JudgeConcurrency = 1,
    ) -> None:
        """Evaluate a ranker (--model) or an LLM judge (--judge) on labelled data.

        Pair files give accuracy vs "longer answer wins"; candidate sets with scores give the selection win
        rate of the best candidate under --strategy vs best single model, random, longest and oracle. A
        judge's report adds its token usage and its issues (verdicts it could not read); each of its
        comparisons is a generation, so on candidate sets --strategy knockout (n-1 per set) costs far less
        than full (n(n-1))."""
        from blender_core.app.commands._ranker import ranker_from_option
        from blender_core.data.records import CandidateSet, Pair, read_records
        from blender_core.evaluation.costs import MeteredRanker
        from blender_core.evaluation.ranker import evaluate_pairs, evaluate_selection
        from blender_core.evaluation.report import build_report, write_report
        from blender_core.ranking import Ranker

        if judge is not None and model is not None:
            raise typer.BadParameter("--judge and --model are exclusive: evaluate a judge or a ranker")
        set_torch_threads(num_threads)
        start = time.perf_counter()
        files = {}
        for path in data:
            records = read_records(path, score_key=score_key)
            pairs = [r for r in records if isinstance(r, Pair)]
            sets = [r for r in records if isinstance(r, CandidateSet)]
            if pairs and sets:
                raise typer.BadParameter(f"{path} mixes pairs and candidate sets; split it into two files")
            files[_set_name(path)] = (pairs, sets)
        ranker: Ranker
        meter, judge_settings = None, None
        if judge is not None:
            judge_ranker, judge_settings = judge_from_option(
                judge, device=device, prompt=judge_prompt, max_new_tokens=judge_max_new_tokens,
                timeout=judge_timeout, concurrency=judge_concurrency,
            )  # fmt: skip
            meter = MeteredRanker(judge_ranker)  # sums the judge's token usage and issues
            ranker, name = meter, judge_settings["name"]
        else:
            ranker, name = ranker_from_option(model, device=device, batch_size=batch_size)
        pair_results, selection_results = {}, {}
        for set_name, (pairs, sets) in files.items():
            if pairs:
                pair_results.update(evaluate_pairs(ranker, pairs, name=set_name, show_progress=not no_progress))
            elif sets:
                selection_results[set_name] = evaluate_selection(
                    ranker, sets, strategy=strategy, show_progress=not no_progress
                )
        report = build_report(
            pair_results, selection_results, model=name, command="blender-llm " + shlex.join(sys.argv[1:]),
            seconds=time.perf_counter() - start,
            judge=None if meter is None else {**(judge_settings or {}), **meter.costs().to_dict()},
        )
        folder = write_report(report, out, plot=plot)
        typer.echo((folder / "report.md").read_text())
