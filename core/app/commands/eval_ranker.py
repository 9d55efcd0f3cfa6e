"""``blender-llm eval-ranker``: pair accuracy and selection win rate of a ranker or an LLM judge, beside
baselines."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from blender_core.app.commands._judge import (
    JudgeConcurrency,
    JudgeMaxNewTokens,
    JudgePromptName,
    JudgeSpec,
    JudgeTimeout,
    judge_from_option,
)


def _set_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def register(app: typer.Typer) -> None:
    @app.command("eval-ranker")
    def eval_ranker(
        data: Annotated[list[Path], typer.Option("--data", help="Pair files and/or candidate-set files (.jsonl[.gz]). Repeat the option or list several after one --data.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, report.md and accuracy.png.")],
        model: Annotated[str | None, typer.Option("--model", "-m", help="Ranker folder, hub id, reward:<model> or built-in name (default: llm-blender/PairRM).")] = None,
        score_key: Annotated[str | None, typer.Option(help="MixInstruct candidate sets: the score that ranks them.")] = None,
        strategy: Annotated[str, typer.Option(help="Selection strategy: knockout | bubble | sort | full.")] = "knockout",
        batch_size: Annotated[int, typer.Option(help="Comparisons per forward pass (a loading option of the ranker).")] = 32,
        device: Annotated[str | None, typer.Option(help="cpu / cuda (default: cuda when available).")] = None,
        num_threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
        no_plot: Annotated[bool, typer.Option("--no-plot", help="Skip the PNG.")] = False,
        no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
        judge: JudgeSpec = None,
        judge_prompt: JudgePromptName = "verdict",
        judge_max_new_tokens: JudgeMaxNewTokens = None,
        judge_timeout: JudgeTimeout = 120.0,
        judge_concurrency: JudgeConcurrency = 1,
    ) -> None:
        """Evaluate a ranker (--model) or an LLM judge (--judge): pair files give accuracy vs "longer answer
        wins"; candidate sets with scores give the selection win rate vs best single model, random, longest
        and oracle. A judge's report adds its token usage and its issues (verdicts it could not read)."""
        from blender_core.app.commands._ranker import ranker_from_option
        from blender_core.data.records import CandidateSet, Pair, read_records
        from blender_core.evaluation.costs import MeteredRanker
        from blender_core.evaluation.ranker import evaluate_pairs, evaluate_selection
        from blender_core.evaluation.report import build_report, write_report
        from blender_core.ranking import Ranker

        if judge is not None and model is not None:
            raise typer.BadParameter("--judge and --model are exclusive: evaluate a judge or a ranker")
        if num_threads > 0:
            import torch

            torch.set_num_threads(num_threads)
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
        folder = write_report(report, out, plot=not no_plot)
        typer.echo((folder / "report.md").read_text())
