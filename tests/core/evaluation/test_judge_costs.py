"""What an LLM judge costs in an evaluation: comparisons, token usage and issues summed by MeteredRanker
over the pair evaluation, and the judge section of the ranker report."""

from __future__ import annotations

from pathlib import Path

import pytest

from blender_core.data.records import Pair
from blender_core.evaluation.costs import MeteredRanker, ranking_costs
from blender_core.evaluation.ranker import evaluate_pairs
from blender_core.evaluation.report import build_report, report_markdown, write_report
from blender_core.ranking import JudgeRanker
from tests.helpers.core_fakes import LengthRanker, ScriptedJudge

PAIRS = [
    Pair(id="p0", source="s", prompt="q0", a="a long answer", b="short", label=0),
    Pair(id="p1", source="s", prompt="q1", a="no", b="a longer one", label=1),
    Pair(id="p2", source="s", prompt="q2", a="brief", b="much longer answer", label=0),
]


def a_if_longer(answer_a: str, answer_b: str) -> str:
    """Reads only when A is the longer answer; otherwise replies without a verdict."""
    return "[[A]]" if len(answer_a) > len(answer_b) else "I cannot decide."


def test_metered_judge_sums_usage_and_issues_over_the_pair_evaluation() -> None:
    chat = ScriptedJudge(a_if_longer, usage=(30, 3))
    meter = MeteredRanker(JudgeRanker(chat, name="judge:scripted"))
    results = evaluate_pairs(meter, PAIRS, name="toy", show_progress=False)
    # each pair both orders: the longer answer as A wins, the other order is unreadable (a tie): the
    # margin still says "longer is better", right on p0 and p1, wrong on p2
    assert results["toy"].accuracy == pytest.approx(2 / 3)
    costs = meter.costs()
    assert meter.name == "judge:scripted"
    assert costs.rankings == 3
    assert costs.comparisons == len(chat.calls) == 6
    assert costs.usage == {"input_tokens": 180, "output_tokens": 18, "total_tokens": 198}
    assert costs.issues == 3
    assert len(costs.issue_examples) == 3
    assert "'I cannot decide.'; counted as a tie" in costs.issue_examples[0]


def test_costs_of_a_ranker_without_usage() -> None:
    meter = MeteredRanker(LengthRanker())
    meter.rank(["q"], [["a", "bb"]], strategy="full")
    assert meter.costs().to_dict() == {
        "rankings": 1, "comparisons": 0, "usage": None, "issues": 0, "issue_examples": (),
    }  # fmt: skip
    assert ranking_costs([]).rankings == 0


def test_report_shows_the_judge_its_usage_and_issues(tmp_path: Path) -> None:
    chat = ScriptedJudge(a_if_longer, usage=(30, 3))
    meter = MeteredRanker(JudgeRanker(chat, name="judge:scripted"))
    pairs = evaluate_pairs(meter, PAIRS, name="toy", show_progress=False)
    settings = {"name": "judge:scripted", "prompt": "verdict", "max_new_tokens": 16, "timeout_s": 120.0}
    report = build_report(pairs, {}, model="judge:scripted", judge={**settings, **meter.costs().to_dict()})
    assert report["judge"]["usage"]["total_tokens"] == 198
    assert report["judge"]["issues"] == 3
    md = (write_report(report, tmp_path, plot=False) / "report.md").read_text()
    assert "## LLM judge" in md
    assert "- `judge:scripted`: prompt verdict, max_new_tokens 16, timeout_s 120.0" in md
    assert "- 6 comparisons; token usage: 180 input + 18 output = 198 tokens" in md
    assert "- issues: 3 comparisons counted as ties" in md
    assert "| toy | 3 | 3 | **0.667** |" in md
    plain = build_report(pairs, {}, model="ranker")
    assert "judge" not in plain
    assert "LLM judge" not in report_markdown(plain)
