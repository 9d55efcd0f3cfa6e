"""GPT-Rank (LLM-Blender, Jiang et al. 2023): a judge ranks, per instruction, the systems' outputs together
with the instruction's candidates; a system's score is its average rank among them (1 = best).

The paper asks ChatGPT for the order of all outputs at once. Here any ranker plays judge through ``rank``
(an LLM :class:`~blender_core.ranking.JudgeRanker`, PairRM, a reward model), so the order comes from
pairwise comparisons and needs a strategy that orders everything:

- ``full`` (the default): every ordered pair, n(n-1) judge calls for n outputs. A rank is the midrank of
  the scores: tied outputs share the mean of the places they span, so an output the judge cannot tell
  from another is put ahead of neither (with a judge whose verdicts are all ties, every output ranks
  (n + 1) / 2).
- ``sort``: a merge sort, about 2 n log2 n calls. A rank is the place in the merge order, where a tie goes
  to the output listed first: to a candidate before a system's own output, the conservative side.

The pool of an instruction: its candidates (the first ``n_candidates``, to bound the cost), then each
system's output not already among them. Identical texts are one entry, so a system whose output is a
candidate (the ranker's top-1, the best single model's answer) gets that candidate's rank. Each candidate
model's average rank is reported too, over the instructions whose pool held its answer.

Example:
    >>> midranks([3.0, 1.0, 3.0]).tolist()
    [1.5, 3.0, 1.5]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from blender_core.base.validation import check_candidate_lists, check_choice, check_positive, check_prompts
from blender_core.evaluation.costs import RankingCosts, ranking_costs
from blender_core.ranking.interface import Ranker

#: the strategies that give a full order
GPT_RANK_STRATEGIES = ("full", "sort")


def midranks(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks from scores, higher is better, 1 = best; tied scores share the mean of the places they span."""
    s = np.asarray(scores, dtype=np.float64)
    above = (s[None, :] > s[:, None]).sum(axis=1)  # (n,) entries strictly better
    tied = (s[None, :] == s[:, None]).sum(axis=1)  # (n,) itself included
    return 1.0 + above + (tied - 1) / 2.0


@dataclass(frozen=True)
class GptRankResult:
    """Average ranks (1 = best) of the systems and of the candidate models, and what the judge cost.

    Attributes:
        systems: each system's mean rank over the instructions; ``systems_se`` its standard error.
        models: each candidate model's mean rank over the instructions whose pool held its answer
            (``model_counts`` of them).
        per_instruction: per instruction, the pool size and every system's and model's rank.
        strategy: the judge's strategy; ``n_candidates``: the candidates per pool (None: all).
        mean_pool_size: outputs ranked per instruction, on average.
        costs: the judge's comparisons, token usage and issues (ties it could not avoid).
    """

    systems: dict[str, float]
    systems_se: dict[str, float]
    models: dict[str, float]
    model_counts: dict[str, int]
    per_instruction: list[dict[str, Any]]
    strategy: str
    n_candidates: int | None
    mean_pool_size: float
    costs: RankingCosts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpt_rank(
    judge: Ranker,
    instructions: Sequence[str],
    systems: Mapping[str, Sequence[str]],
    candidates: Sequence[Sequence[str]],
    models: Sequence[Sequence[str]],
    *,
    n_candidates: int | None = None,
    strategy: str = "full",
    show_progress: bool = False,
) -> GptRankResult:
    """Rank each instruction's pool (candidates, then the systems' outputs) with ``judge``; average the ranks.

    Args:
        judge: any ranker; its ``rank`` is called once, every instruction's pool in one batch.
        instructions: the instructions.
        systems: system name -> its output per instruction (e.g. ``fused``, ``ranker_top1``).
        candidates: per instruction, its candidates; ``models``: the model of each.
        n_candidates: how many candidates (the first ones) join each pool; None: all.
        strategy: ``full`` (midranks of the scores) or ``sort`` (places in the order); see the module.
        show_progress: passed to the judge.

    Example:
        >>> r = gpt_rank(judge, ["2+2?"], {"fused": ["4, since 2+2=4"]}, [["4", "5"]], [["m1", "m2"]])  # doctest: +SKIP
        >>> r.systems, r.models  # doctest: +SKIP
        ({'fused': 1.0}, {'m1': 2.0, 'm2': 3.0})
    """
    check_choice(strategy, GPT_RANK_STRATEGIES, "GPT-Rank strategy (a full order)")
    check_positive(n_candidates, "n_candidates")
    prompts = check_prompts(instructions, "gpt_rank")
    if not prompts:
        raise ValueError("gpt_rank() got no instructions; pass at least one")
    cands = check_candidate_lists(prompts, candidates, "gpt_rank", 1)
    for name, outputs in systems.items():
        if len(outputs) != len(prompts):
            raise ValueError(
                f"gpt_rank() got {len(prompts)} instructions but {len(outputs)} outputs of system {name!r}"
            )
    if len(models) != len(prompts) or any(len(m) != len(c) for m, c in zip(models, cands, strict=False)):
        raise ValueError("gpt_rank() needs one model name per candidate of every instruction")

    pools: list[list[str]] = []
    entries: list[tuple[dict[str, int], dict[str, int]]] = []  # per instruction: system / model -> entry
    for k, texts in enumerate(cands):
        entry: dict[str, int] = {}  # text -> its entry (identical texts are one)
        kept = slice(None, n_candidates)
        by_model = {
            m: entry.setdefault(t, len(entry)) for m, t in zip(models[k][kept], texts[kept], strict=True)
        }
        by_system = {s: entry.setdefault(outputs[k], len(entry)) for s, outputs in systems.items()}
        pools.append(list(entry))
        entries.append((by_system, by_model))

    rankings = judge.rank(prompts, pools, strategy=strategy, show_progress=show_progress)
    per_instruction: list[dict[str, Any]] = []
    for ranking, pool, (by_system, by_model) in zip(rankings, pools, entries, strict=True):
        ranks = (
            midranks(ranking.scores) if strategy == "full" else np.asarray(ranking.ranks, dtype=np.float64)
        )
        per_instruction.append(
            {
                "pool_size": len(pool),
                "systems": {s: float(ranks[e]) for s, e in by_system.items()},
                "models": {m: float(ranks[e]) for m, e in by_model.items()},
            }
        )

    system_ranks = {s: [row["systems"][s] for row in per_instruction] for s in systems}
    model_ranks: dict[str, list[float]] = {}
    for row in per_instruction:
        for m, r in row["models"].items():
            model_ranks.setdefault(m, []).append(r)
    return GptRankResult(
        systems={s: statistics.fmean(v) for s, v in system_ranks.items()},
        systems_se={s: _se(v) for s, v in system_ranks.items()},
        models={m: statistics.fmean(v) for m, v in model_ranks.items()},
        model_counts={m: len(v) for m, v in model_ranks.items()},
        per_instruction=per_instruction,
        strategy=strategy,
        n_candidates=n_candidates,
        mean_pool_size=statistics.fmean(len(p) for p in pools),
        costs=ranking_costs(rankings),
    )


def _se(values: Sequence[float]) -> float:
    """The standard error of the mean (0 for one value)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
