"""Reference-based evaluation of fusion on AlpacaEval-style candidate sets.

For N instructions, each system's answer is scored against the record's ``reference`` output with
BERTScore F1 (a local MiniLM encoder, no baseline rescaling), ROUGE-L F and token F1:

- ``fused``: the fuser's answer from the ranker's top-K candidates;
- ``ranker_top1``: the ranker's best candidate;
- ``best_single``: the output of the single model with the highest mean judge preference (``pref``) on
  the *other* instructions of the file (so the choice does not peek at the evaluated ones);
- ``oracle_pref_top1``: the candidate the judge preferred (it uses the labels: an upper reference for
  selection, not a system).

With a ``judge`` (any ranker, e.g. an LLM :class:`~blender_core.ranking.JudgeRanker`), the paper's GPT-Rank
is reported beside them: the average rank (1 = best) of the first three systems' outputs among each
instruction's candidates, and each candidate model's (:mod:`blender_core.evaluation.gpt_rank`).

The metrics themselves are in :mod:`blender_core.evaluation.text_metrics`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from blender_core.base.validation import check_choice, check_positive
from blender_core.data.alpacaeval import EvalRecord, RankFn
from blender_core.evaluation.gpt_rank import GPT_RANK_STRATEGIES, gpt_rank
from blender_core.evaluation.text_metrics import BertScore, rouge_l, token_f1, tokens
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.interface import Ranker

logger = logging.getLogger(__name__)

METRICS = ("bertscore_f1", "rouge_l", "token_f1")
SYSTEMS = ("fused", "ranker_top1", "best_single", "oracle_pref_top1")
# the systems a GPT-Rank judge ranks among the candidates (the oracle uses the labels: not a system)
GPT_RANK_SYSTEMS = ("fused", "ranker_top1", "best_single")


def best_single_model(records: Sequence[EvalRecord]) -> tuple[str, float]:
    """The model with the highest mean ``pref`` over ``records`` and that mean."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r in records:
        for m, pref in zip(r.models, r.prefs, strict=True):
            sums[m] = sums.get(m, 0.0) + pref
            counts[m] = counts.get(m, 0) + 1
    means = {m: sums[m] / counts[m] for m in counts}
    best = max(sorted(means), key=lambda m: means[m])
    return best, means[best]


# ----------------------------------------------------------------------------------------- rankers
def ranker_rank_fn(ranker: Ranker, *, strategy: str = "full") -> RankFn:
    """Orders from any :class:`~blender_core.ranking.Ranker` (``rank(..., strategy=strategy)[k].order``).

    Example:
        >>> rank_fn = ranker_rank_fn(load_ranker(), strategy="knockout")  # doctest: +SKIP
        >>> rank_fn(["2+2?"], [["5", "4"]])  # doctest: +SKIP
        [[1, 0]]
    """

    def rank(instructions: list[str], candidates: list[list[str]]) -> list[list[int]]:
        return [list(r.order) for r in ranker.rank(instructions, candidates, strategy=strategy)]

    return rank


def longest_rank_fn(instructions: list[str], candidates: list[list[str]]) -> list[list[int]]:
    """Longest answer first (the baseline every ranker must beat)."""
    return [sorted(range(len(c)), key=lambda i: (-len(c[i]), i)) for c in candidates]


# ------------------------------------------------------------------------------------------ report
@dataclass
class FusionEvalResult:
    """Per-system mean scores, per-example rows and the run's settings."""

    summary: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return m, se


def evaluate_fusion(
    records: Sequence[EvalRecord],
    *,
    rank_fn: RankFn,
    fuser: BaseFuser,
    n: int = 20,
    top_k: int = 3,
    seed: int = 0,
    batch_size: int = 4,
    generate_kwargs: dict[str, Any] | None = None,
    bertscore: BertScore | None = None,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
    judge: Ranker | None = None,
    judge_candidates: int | None = None,
    judge_strategy: str = "full",
) -> FusionEvalResult:
    """Score fused / ranker top-1 / best single / judge's top-1 answers against the references, and with a
    ``judge`` rank the first three among the candidates (GPT-Rank).

    Args:
        records: the pool (all of it: the best single model is chosen on the records not evaluated).
        rank_fn: orders each instruction's candidates, best first.
        fuser: fuses the top-``top_k`` candidates.
        n: how many instructions to evaluate (a seeded random sample of the records).
        batch_size: instructions per fuser call.
        generate_kwargs: for the fuser (e.g. ``max_new_tokens``).
        bertscore: a loaded scorer (default: the local MiniLM, 6 layers).
        judge: ranks each instruction's candidates with the systems' outputs (GPT-Rank); None: no GPT-Rank.
        judge_candidates: the candidates (the first ones) in each GPT-Rank pool; None: all.
        judge_strategy: ``full`` or ``sort`` (see :mod:`blender_core.evaluation.gpt_rank`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if judge is not None:  # before the fuser's work, not after it
        check_choice(judge_strategy, GPT_RANK_STRATEGIES, "GPT-Rank strategy (a full order)")
        check_positive(judge_candidates, "judge_candidates")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(records)), min(n, len(records))))
    evaluated = [records[i] for i in chosen]
    chosen_set = set(chosen)
    others = [r for i, r in enumerate(records) if i not in chosen_set]
    best_model, best_model_pref = best_single_model(others or list(records))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    orders = rank_fn([r.instruction for r in evaluated], [list(r.outputs) for r in evaluated])
    timings["rank_s"] = time.perf_counter() - t0

    fused: list[str] = []
    failures: list[str | None] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(evaluated), desc="fuse", unit="instr", disable=not progress)
    for start in range(0, len(evaluated), batch_size):
        chunk = evaluated[start : start + batch_size]
        tops = [[r.outputs[i] for i in orders[start + k][:top_k]] for k, r in enumerate(chunk)]
        try:
            fused.extend(fuser.fuse([r.instruction for r in chunk], tops, **(generate_kwargs or {})))
            failures.extend([None] * len(chunk))
        except Exception as exc:  # counted and reported: the top-ranked answer stands in
            logger.warning("fuser failed on instructions %d-%d: %s", start, start + len(chunk) - 1, exc)
            fused.extend(t[0] for t in tops)
            failures.extend([f"{type(exc).__name__}: {exc}"] * len(chunk))
        bar.update(len(chunk))
    bar.close()
    timings["fuse_s"] = time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    for k, r in enumerate(evaluated):
        top1 = orders[k][0]
        oracle = max(range(len(r.prefs)), key=lambda i: (r.prefs[i], -i))
        single = r.models.index(best_model) if best_model in r.models else top1
        rows.append(
            {
                "idx": r.idx,
                "instruction": r.instruction,
                "reference": r.reference,
                "top_k_models": [r.models[i] for i in orders[k][:top_k]],
                "fuser_error": failures[k],
                "texts": {
                    "fused": fused[k],
                    "ranker_top1": r.outputs[top1],
                    "best_single": r.outputs[single],
                    "oracle_pref_top1": r.outputs[oracle],
                },
                "models": {
                    "ranker_top1": r.models[top1],
                    "best_single": r.models[single],
                    "oracle_pref_top1": r.models[oracle],
                },
                "prefs": {
                    "ranker_top1": r.prefs[top1],
                    "best_single": r.prefs[single],
                    "oracle_pref_top1": r.prefs[oracle],
                },
            }
        )

    t0 = time.perf_counter()
    scorer = bertscore or BertScore()
    refs = [row["reference"] for row in rows]
    for system in SYSTEMS:
        preds = [row["texts"][system] for row in rows]
        scores = {
            "bertscore_f1": scorer.f1(preds, refs),
            "rouge_l": rouge_l(preds, refs),
            "token_f1": [token_f1(p, ref) for p, ref in zip(preds, refs, strict=True)],
        }
        for k, row in enumerate(rows):
            row.setdefault("scores", {})[system] = {m: scores[m][k] for m in METRICS}
    timings["score_s"] = time.perf_counter() - t0

    ranked = None
    if judge is not None:
        t0 = time.perf_counter()
        ranked = gpt_rank(
            judge,
            [r.instruction for r in evaluated],
            {system: [row["texts"][system] for row in rows] for system in GPT_RANK_SYSTEMS},
            [list(r.outputs) for r in evaluated],
            [list(r.models) for r in evaluated],
            n_candidates=judge_candidates,
            strategy=judge_strategy,
            show_progress=progress,
        )
        timings["judge_s"] = time.perf_counter() - t0
        for row, ranks in zip(rows, ranked.per_instruction, strict=True):
            row["gpt_rank"] = ranks

    summary: dict[str, dict[str, float]] = {}
    for system in SYSTEMS:
        entry: dict[str, float] = {}
        for m in METRICS:
            entry[m], entry[f"{m}_se"] = _mean_se([row["scores"][system][m] for row in rows])
        entry["mean_words"] = statistics.fmean(len(tokens(row["texts"][system])) for row in rows)
        if system != "fused":  # the judge's preference is known for existing candidates only
            entry["judge_win_rate"] = 100 * statistics.fmean(row["prefs"][system] - 1 for row in rows)
        if ranked is not None and system in ranked.systems:
            entry["gpt_rank"], entry["gpt_rank_se"] = ranked.systems[system], ranked.systems_se[system]
        summary[system] = entry
    summary["reference"] = {"mean_words": statistics.fmean(len(tokens(r)) for r in refs)}
    out_settings = {
        **(settings or {}),
        "n": len(rows),
        "seed": seed,
        "top_k": top_k,
        "fuser": getattr(fuser, "name", type(fuser).__name__),
        "generate_kwargs": generate_kwargs or {},
        "best_single_model": best_model,
        "best_single_model_mean_pref_on_other_instructions": best_model_pref,
        "best_single_chosen_on": len(others) if others else len(records),
        "fuser_failures": sum(f is not None for f in failures),
        "bertscore_model": scorer.model,
        "bertscore_num_layers": scorer.num_layers,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    if ranked is not None:
        out_settings["gpt_rank"] = {
            "judge": getattr(judge, "name", type(judge).__name__),
            "strategy": ranked.strategy,
            "candidates": ranked.n_candidates,
            "mean_pool_size": ranked.mean_pool_size,
            "models": dict(sorted(ranked.models.items(), key=lambda kv: (kv[1], kv[0]))),
            "model_counts": ranked.model_counts,
            **ranked.costs.to_dict(),
        }
    return FusionEvalResult(summary=summary, rows=rows, settings=out_settings)


def format_markdown(result: FusionEvalResult) -> str:
    """A short Markdown report: the settings and one table row per system."""
    s = result.settings
    lines = [
        "# Fusion evaluation",
        "",
        f"- data: `{s.get('data', '?')}`; {s['n']} instructions (seed {s['seed']}); target: the record's `reference` output",
        f"- ranker: `{s.get('ranker', '?')}`{' — ' + s['ranker_note'] if s.get('ranker_note') else ''}",
        f"- fuser: `{s['fuser']}` on the ranker's top-{s['top_k']}; generation {s['generate_kwargs']}; "
        f"fuser failures: {s['fuser_failures']}",
        f"- best single model: `{s['best_single_model']}` (mean pref {s['best_single_model_mean_pref_on_other_instructions']:.3f} "
        f"on the {s['best_single_chosen_on']} other instructions)",
        f"- BERTScore: F1, `{'/'.join(Path(s['bertscore_model']).parts[-2:])}` layer {s['bertscore_num_layers']}, no baseline rescaling; "
        "ROUGE-L: F-measure with stemming; token F1: SQuAD-style word overlap",
        f"- time: {s['timings_s']}",
        "",
    ]
    ranked = s.get("gpt_rank")
    head = "| system | BERTScore F1 | ROUGE-L | token F1 | words | judge win rate |"
    head += " GPT-Rank |" if ranked else ""
    lines += [head, "|---" * head.count(" | ") + "|---|"]
    for system in SYSTEMS:
        e = result.summary[system]
        win = f"{e['judge_win_rate']:.1f}" if "judge_win_rate" in e else "n/a"
        rank = f" {e['gpt_rank']:.2f} ± {e['gpt_rank_se']:.2f} |" if "gpt_rank" in e else " n/a |"
        lines.append(
            f"| {system} | {100 * e['bertscore_f1']:.2f} ± {100 * e['bertscore_f1_se']:.2f} "
            f"| {100 * e['rouge_l']:.2f} ± {100 * e['rouge_l_se']:.2f} "
            f"| {100 * e['token_f1']:.2f} ± {100 * e['token_f1_se']:.2f} | {e['mean_words']:.0f} | {win} |"
            + (rank if ranked else "")
        )
    lines += [
        "",
        f"Scores x100, mean ± standard error over the {s['n']} instructions. Reference answers average "
        f"{result.summary['reference']['mean_words']:.0f} words. `oracle_pref_top1` is the judge-preferred "
        "candidate (uses the labels; an upper reference, not a system). Judge win rate = mean(pref - 1) x 100.",
        "",
    ]
    if ranked:
        lines += _gpt_rank_markdown(ranked, s.get("judge"))
    return "\n".join(lines)


def _gpt_rank_markdown(ranked: dict[str, Any], judge: dict[str, Any] | None) -> list[str]:
    """The GPT-Rank section: the judge, its pool and costs, and the candidate models' average ranks."""
    n = ranked["candidates"]
    pool = "all candidates" if n is None else f"the first {n} candidates"
    usage = ranked["usage"]
    tokens = (
        f"{usage['input_tokens']} input + {usage['output_tokens']} output = {usage['total_tokens']} tokens"
        if usage
        else "no token usage reported"
    )
    lines = [
        "## GPT-Rank: average rank (1 = best) among the instruction's candidates",
        "",
        f"- judge: `{ranked['judge']}`, strategy `{ranked['strategy']}`; pool: {pool} plus the systems' outputs "
        f"not among them ({ranked['mean_pool_size']:.1f} outputs per instruction on average)"
        + ("".join(f"; {k} {v}" for k, v in judge.items() if k not in ("name", "spec")) if judge else ""),
        f"- {ranked['comparisons']} comparisons; {tokens}; issues (counted as ties): {ranked['issues']}",
        "",
        "| candidate model | mean rank | instructions |",
        "|---|---|---|",
    ]
    for model, rank in ranked["models"].items():
        lines.append(f"| {model} | {rank:.2f} | {ranked['model_counts'][model]} |")
    return [*lines, ""]


def write_report(result: FusionEvalResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` (everything, rows included) and ``report.md``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "report.json", out / "report.md"
    js.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    md.write_text(format_markdown(result))
    return js, md
