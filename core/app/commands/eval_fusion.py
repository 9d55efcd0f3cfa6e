"""``blender-llm eval-fusion``: reference-based scores of fused answers vs the ranker's top-1 vs the best model,
and with ``--judge`` the paper's GPT-Rank: their average rank among the candidates, by an LLM judge."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from blender_core.app.commands._command import NoProgress, choice, command_class
from blender_core.app.commands._judge import (
    JudgeConcurrency,
    JudgeMaxNewTokens,
    JudgePromptName,
    JudgeSpec,
    JudgeTimeout,
    judge_from_option,
)
from blender_core.app.commands._ranker import BUILTIN_RANKER, Device
from blender_core.app.commands._threads import NumThreads, set_torch_threads

logger = logging.getLogger(__name__)

RANKER_NOTES = {
    "pref": "the data's judge preferences (uses the labels: not a real ranker)",
    "longest": "longest answer first (a label-free baseline)",
}


def make_rank_fn(spec: str | None, *, device: str | None, records: Any = None) -> tuple[Any, str]:
    """A rank function for ``spec`` (a ranker name / folder / hub id, ``pref`` or ``longest``) and a note."""
    from blender_core.app.commands._ranker import ranker_from_option
    from blender_core.data.alpacaeval import pref_rank_fn
    from blender_core.evaluation.fusion import longest_rank_fn, ranker_rank_fn

    if spec == "longest":
        return longest_rank_fn, RANKER_NOTES["longest"]
    if spec == "pref":
        return pref_rank_fn(records), RANKER_NOTES["pref"]
    return ranker_rank_fn(ranker_from_option(spec, device=device)[0]), ""


def register(app: typer.Typer) -> None:
    # renamed in 0.2 to the other commands' names; the old ones are accepted, hidden, until the next release
    @app.command("eval-fusion", cls=command_class(renamed={"--ranker": "--model", "--threads": "--num-threads"}))
    def eval_fusion(
        data: Annotated[
            Path,
            typer.Option(
                "--data",
                exists=True,
                dir_okay=False,
                help="An AlpacaEval pool file (.jsonl[.gz]: {instruction, reference, candidates: [{model, output, pref}]}); its `reference` outputs are the targets.",
            ),
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for report.json / report.md.")],
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                "-m",
                help=f"Ranker: folder, hub id, reward:<model> or built-in name ({BUILTIN_RANKER}, offline), or "
                "pref (the data's judge labels) or longest (baselines). Default: llm-blender/PairRM, from the hub.",
            ),
        ] = None,
        fuser: Annotated[
            str,
            typer.Option(
                "--fuser",
                help="smollm2 (local SmolLM2-135M-Instruct) or a model folder / hub id (seq2seq: GenFuser, causal: LLM fuser).",
            ),
        ] = "smollm2",
        n: Annotated[int, typer.Option("--n", help="Number of instructions (a seeded random sample).")] = 20,
        top_k: Annotated[int, typer.Option("--top-k", help="Candidates fused per instruction.")] = 3,
        max_new_tokens: Annotated[int, typer.Option(help="Fuser generation length.")] = 128,
        candidate_maxlength: Annotated[
            int,
            typer.Option(
                help="Tokens kept per candidate in the fuser prompt (causal fusers; GenFuser: its own 128)."
            ),
        ] = 256,
        repetition_penalty: Annotated[
            float | None, typer.Option(help="Passed to generate (e.g. 1.2 curbs the loops of small models).")
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Instructions per fuser call.")] = 4,
        seed: Annotated[int, typer.Option(help="Seed of the instruction sample.")] = 0,
        device: Device = None,
        bertscore_model: Annotated[
            Path | None, typer.Option(help="Encoder folder for BERTScore (default: the local MiniLM-L6).")
        ] = None,
        num_threads: NumThreads = 0,
        no_progress: NoProgress = False,
        judge: JudgeSpec = None,
        judge_candidates: Annotated[
            int | None,
            typer.Option(
                "--judge-candidates",
                help="GPT-Rank pool: the first N candidates of each instruction (default: all) with the "
                "systems' outputs; a pool of n outputs costs n(n-1) judge calls with --judge-strategy full.",
            ),
        ] = None,
        judge_strategy: Annotated[
            str,
            choice(
                ("full", "sort"),
                "--judge-strategy",
                help="How the judge orders the GPT-Rank pool: full (every pair, ties share their places) or sort "
                "(about 2 n log2 n calls).",
            ),
        ] = "full",
        judge_prompt: JudgePromptName = "verdict",
        judge_max_new_tokens: JudgeMaxNewTokens = None,
        judge_timeout: JudgeTimeout = 120.0,
        judge_concurrency: JudgeConcurrency = 1,
    ) -> None:
        """Score fused answers, the ranker's top-1 and the best single model against reference outputs; with
        --judge, also rank them among the candidates with an LLM judge (GPT-Rank, 1 = best)."""
        set_torch_threads(num_threads)
        from blender_core.data.alpacaeval import load_alpacaeval
        from blender_core.evaluation.fusion import evaluate_fusion, format_markdown, write_report
        from blender_core.evaluation.text_metrics import BertScore
        from blender_core.fusion.auto import load_fuser

        judge_ranker, judge_settings = None, None
        if judge is not None:
            judge_ranker, judge_settings = judge_from_option(
                judge,
                device=device,
                prompt=judge_prompt,
                max_new_tokens=judge_max_new_tokens,
                timeout=judge_timeout,
                concurrency=judge_concurrency,
            )
        records = load_alpacaeval(data)
        rank_fn, note = make_rank_fn(model, device=device, records=records)
        fuser_kwargs: dict[str, Any] = {"device": device, "batch_size": batch_size}
        if fuser == "smollm2" or not _is_seq2seq(fuser):
            fuser_kwargs["candidate_maxlength"] = candidate_maxlength
        fuser_obj = load_fuser(fuser, **fuser_kwargs)
        result = evaluate_fusion(
            records,
            rank_fn=rank_fn,
            fuser=fuser_obj,
            n=n,
            top_k=top_k,
            seed=seed,
            batch_size=batch_size,
            generate_kwargs={
                "max_new_tokens": max_new_tokens,
                **({"repetition_penalty": repetition_penalty} if repetition_penalty else {}),
            },
            bertscore=BertScore(bertscore_model),
            progress=not no_progress,
            settings={
                "data": str(data),
                "ranker": model,
                "ranker_note": note,
                "command": "blender-llm " + shlex.join(sys.argv[1:]),
                "torch_threads": _torch_threads(),
                **({"judge": judge_settings} if judge_settings else {}),
            },
            judge=judge_ranker,
            judge_candidates=judge_candidates,
            judge_strategy=judge_strategy,
        )
        js, md = write_report(result, out)
        typer.echo(format_markdown(result))
        typer.echo(json.dumps({"report_json": str(js), "report_md": str(md)}))


def _is_seq2seq(name_or_path: str) -> bool:
    try:
        from transformers import AutoConfig

        return bool(getattr(AutoConfig.from_pretrained(name_or_path), "is_encoder_decoder", False))
    except (OSError, ValueError):
        return False


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
