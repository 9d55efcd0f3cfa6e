"""GPT-Rank: average ranks among each instruction's candidates, exact with deterministic judges (the
longest-wins ranker, a scripted LLM judge), ties sharing their places, pools cut and deduplicated, and
the GPT-Rank columns of the fusion report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from blender_core.data.alpacaeval import EvalRecord
from blender_core.evaluation.fusion import evaluate_fusion, format_markdown, longest_rank_fn
from blender_core.evaluation.gpt_rank import gpt_rank, midranks
from blender_core.evaluation.text_metrics import token_f1
from blender_core.fusion.base import BaseFuser
from blender_core.ranking import JudgeRanker
from tests.helpers.core_fakes import LengthRanker, ScriptedJudge, always

INSTRUCTIONS = ["q0", "q1"]
CANDIDATES = [["aaaa", "bb", "cccccc"], ["x", "yyy", "zz"]]
MODELS = [["m1", "m2", "m3"], ["m1", "m2", "m3"]]
SYSTEMS = {
    "fused": ["fffffffff", "ff"],  # new texts: longest of q0; as long as "zz" in q1
    "ranker_top1": ["cccccc", "yyy"],  # candidates: m3's answer, m2's answer
    "best_single": ["aaaa", "x"],  # m1's answers
}


def test_midranks_share_the_places_of_ties() -> None:
    assert midranks([9.0, 6.0, 4.0, 2.0]).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert midranks([1.0, 3.0, 2.0, 2.0]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert midranks([0.0, 0.0, 0.0, 0.0]).tolist() == [2.5, 2.5, 2.5, 2.5]  # a judge that sees no difference


def test_average_ranks_with_the_longest_wins_ranker() -> None:
    judge = LengthRanker()
    result = gpt_rank(judge, INSTRUCTIONS, SYSTEMS, CANDIDATES, MODELS)
    # one batched call; the pool is the candidates then the systems' new texts (identical texts once)
    assert judge.calls == [(INSTRUCTIONS, [["aaaa", "bb", "cccccc", "fffffffff"], ["x", "yyy", "zz", "ff"]], "full")]
    # q0 by length: fffffffff 1, cccccc 2, aaaa 3, bb 4; q1: yyy 1, zz = ff share places 2 and 3, x 4
    assert result.per_instruction == [
        {"pool_size": 4, "systems": {"fused": 1.0, "ranker_top1": 2.0, "best_single": 3.0}, "models": {"m1": 3.0, "m2": 4.0, "m3": 2.0}},
        {"pool_size": 4, "systems": {"fused": 2.5, "ranker_top1": 1.0, "best_single": 4.0}, "models": {"m1": 4.0, "m2": 1.0, "m3": 2.5}},
    ]  # fmt: skip
    assert result.systems == {"fused": 1.75, "ranker_top1": 1.5, "best_single": 3.5}
    assert result.systems_se["fused"] == pytest.approx(np.std([1.0, 2.5], ddof=1) / np.sqrt(2))
    assert result.models == {"m1": 3.5, "m2": 2.5, "m3": 2.25}
    assert result.model_counts == {"m1": 2, "m2": 2, "m3": 2}
    assert result.mean_pool_size == 4.0
    assert result.costs.usage is None
    assert result.costs.issues == 0


def test_the_first_n_candidates_and_the_systems_outputs_form_the_pool() -> None:
    judge = LengthRanker()
    result = gpt_rank(judge, INSTRUCTIONS, SYSTEMS, CANDIDATES, MODELS, n_candidates=2)
    # q0: m3's answer is not among the first two, but the ranker's top-1 brings it in
    assert judge.calls[0][1] == [["aaaa", "bb", "fffffffff", "cccccc"], ["x", "yyy", "ff"]]
    assert result.systems == {"fused": 1.5, "ranker_top1": 1.5, "best_single": 3.0}
    assert result.models == {"m1": 3.0, "m2": 2.5}  # m3 was never a candidate of the pools
    assert result.mean_pool_size == 3.5
    assert result.n_candidates == 2


def test_an_llm_judge_full_order_costs_and_usage() -> None:
    chat = ScriptedJudge(usage=(10, 2))  # prefers the longer answer, [[C]] on equal lengths
    result = gpt_rank(JudgeRanker(chat), INSTRUCTIONS, SYSTEMS, CANDIDATES, MODELS, strategy="full")
    assert result.systems == {"fused": 1.75, "ranker_top1": 1.5, "best_single": 3.5}  # as by length
    assert len(chat.calls) == 2 * 4 * 3  # every ordered pair of two pools of 4
    assert result.costs.comparisons == 24
    assert result.costs.usage == {"input_tokens": 240, "output_tokens": 48, "total_tokens": 288}
    assert result.costs.issues == 0


def test_sort_gives_ties_to_the_candidate_listed_first() -> None:
    chat = ScriptedJudge()
    result = gpt_rank(JudgeRanker(chat), INSTRUCTIONS, SYSTEMS, CANDIDATES, MODELS, strategy="sort")
    # q1: the fused "ff" ties with the candidate "zz" listed before it, so it ranks after it (3, not 2.5)
    assert result.per_instruction[1]["systems"] == {"fused": 3.0, "ranker_top1": 1.0, "best_single": 4.0}
    assert result.per_instruction[1]["models"] == {"m1": 4.0, "m2": 1.0, "m3": 2.0}
    assert result.costs.comparisons == len(chat.calls) < 24  # a merge sort asks fewer pairs than full


def test_unreadable_verdicts_are_ties_and_are_counted() -> None:
    chat = ScriptedJudge(always("Both answers look fine to me."))
    result = gpt_rank(JudgeRanker(chat), INSTRUCTIONS, SYSTEMS, CANDIDATES, MODELS)
    assert result.systems == {"fused": 2.5, "ranker_top1": 2.5, "best_single": 2.5}  # (4 + 1) / 2
    assert result.costs.issues == 24
    assert "no verdict ([[A]], [[B]] or [[C]]) in the reply 'Both answers look fine to me.'" in result.costs.issue_examples[0]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"strategy": "knockout"}, "unknown GPT-Rank strategy .* 'knockout'; choose one of 'full', 'sort'"),
        ({"n_candidates": 0}, "n_candidates must be a positive int or None, got 0"),
        ({"systems": {"fused": ["only one"]}}, "got 2 instructions but 1 outputs of system 'fused'"),
        ({"models": [["m1", "m2"], ["m1", "m2", "m3"]]}, "one model name per candidate of every instruction"),
    ],
)
def test_bad_arguments_say_what_was_wrong(kwargs: dict[str, Any], error: str) -> None:
    args: dict[str, Any] = {"systems": SYSTEMS, "models": MODELS, **kwargs}
    systems, models = args.pop("systems"), args.pop("models")
    with pytest.raises(ValueError, match=error):
        gpt_rank(LengthRanker(), INSTRUCTIONS, systems, CANDIDATES, models, **args)


# ------------------------------------------------------------------------- in the fusion evaluation
def _records() -> list[EvalRecord]:
    return [
        EvalRecord(
            idx=i,
            instruction=f"q{i}",
            reference=f"the answer number {i} is here",
            models=("short", "long", "mid"),
            outputs=("no", f"the answer number {i} is here and more words", f"answer {i}"),
            prefs=(1.0, 1.2 if i else 1.9, 1.5),  # "mid" is best on average
        )
        for i in range(6)
    ]


class _JoinFuser(BaseFuser):
    """A fake at the boundary: joins its candidates (the fused answer is longer than each)."""

    name = "join"

    def __init__(self) -> None:
        self.calls = 0

    def fuse(self, instructions: Any, candidates: Any, **kwargs: Any) -> list[str]:
        self.calls += 1
        return [" ".join(c) for c in candidates]


class _OverlapScore:
    model = "fake-encoder"
    num_layers = 6

    def f1(self, predictions: list[str], references: list[str]) -> list[float]:
        return [token_f1(p, r) for p, r in zip(predictions, references, strict=True)]


def test_evaluate_fusion_reports_gpt_rank_beside_the_reference_scores() -> None:
    judge = LengthRanker()
    result = evaluate_fusion(
        _records(), rank_fn=longest_rank_fn, fuser=_JoinFuser(), n=3, top_k=2, bertscore=_OverlapScore(),  # type: ignore[arg-type]
        progress=False, judge=judge, judge_candidates=2,
    )  # fmt: skip
    # by length: fused (long + mid joined) 1, ranker top-1 (long) 2, best single (mid) 3, "no" 4
    assert {s: result.summary[s]["gpt_rank"] for s in ("fused", "ranker_top1", "best_single")} == {
        "fused": 1.0, "ranker_top1": 2.0, "best_single": 3.0,
    }  # fmt: skip
    assert "gpt_rank" not in result.summary["oracle_pref_top1"]
    assert all(row["gpt_rank"]["pool_size"] == 4 for row in result.rows)  # short, long + fused, mid
    ranked = result.settings["gpt_rank"]
    assert ranked["models"] == {"long": 2.0, "short": 4.0}  # the first two candidates only
    assert ranked["candidates"] == 2
    assert ranked["judge"] == "length"
    md = format_markdown(result)
    assert "| judge win rate | GPT-Rank |" in md
    assert "| fused |" in md
    assert " 1.00 ± 0.00 |" in md
    assert "| oracle_pref_top1 |" in md
    assert "| long | 2.00 | 3 |" in md
    assert "pool: the first 2 candidates plus the systems' outputs" in md


def test_a_bad_judge_strategy_fails_before_any_fusing() -> None:
    fuser = _JoinFuser()
    with pytest.raises(ValueError, match="unknown GPT-Rank strategy"):
        evaluate_fusion(
            _records(), rank_fn=longest_rank_fn, fuser=fuser, n=2, bertscore=_OverlapScore(),  # type: ignore[arg-type]
            progress=False, judge=LengthRanker(), judge_strategy="knockout",
        )  # fmt: skip
    assert fuser.calls == 0


def test_without_a_judge_the_report_has_no_gpt_rank() -> None:
    result = evaluate_fusion(
        _records(), rank_fn=longest_rank_fn, fuser=_JoinFuser(), n=2, bertscore=_OverlapScore(),  # type: ignore[arg-type]
        progress=False,
    )  # fmt: skip
    assert "gpt_rank" not in result.settings
    assert "GPT-Rank" not in format_markdown(result)
    assert "| system | BERTScore F1 | ROUGE-L | token F1 | words | judge win rate |\n|---|---|---|---|---|---|\n" in (
        format_markdown(result)
    )
