"""Evaluation metrics against hand-computed values on a mini file, and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blender_core.data.records import CandidateSet, Pair, read_records
from blender_core.evaluation.ranker import (
    best_single_choices,
    evaluate_pairs,
    evaluate_selection,
    longer_wins,
    margin_metrics,
    pair_metrics,
    selection_metrics,
)
from blender_core.evaluation.report import build_report, write_report
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from tests.helpers.core_fakes import LengthRanker

PAIRS = [
    Pair("p1", "aaaa", "b", 0, source="s1"),
    Pair("p2", "aaaa", "b", 0, source="s1"),
    Pair("p3", "aa", "bb", 1, source="s2"),
    Pair("p4", "x", "yy", 2, source="s2"),
]
AB = np.array([1.0, -0.2, 0.4, 0.1])  # M[a, b]
BA = np.array([-0.5, 0.3, 0.4, 0.3])  # M[b, a]

SETS = [
    CandidateSet("q1", ("short", "a much longer answer", "mid text"), (1.0, 2.0, 1.5), ("m1", "m2", "m3")),
    CandidateSet("q2", ("x", "yy", "zzz"), (1.5, 1.0, 1.25), ("m1", "m2", "m3")),
    CandidateSet("q3", ("long long", "s", "mm"), (2.0, 1.0, 1.0), ("m1", "m2", "m3")),
]


def test_pair_metrics_by_hand() -> None:
    r = pair_metrics(PAIRS, AB, BA)
    # margins 1.5 (right), -0.5 (wrong), 0 (half), tie excluded
    assert (r.n, r.n_nontie) == (4, 3)
    assert r.accuracy == pytest.approx(1.5 / 3)
    assert r.longer_wins == pytest.approx(2.5 / 3)  # right, right, equal lengths
    assert r.accuracy_one_order == pytest.approx(1 / 3)
    assert r.order_consistency == pytest.approx(0.5)
    assert r.ties.n == 1
    assert r.ties.mean_abs_margin == pytest.approx(0.2)
    assert r.ties.nontie_mean_abs_margin == pytest.approx(2.0 / 3)
    assert r.ties.pred_a == 0.0
    assert longer_wins([PAIRS[3]]) is None  # only a tie
    # p1, p2 prefer the longer answer (right, wrong); p3 has equal lengths; no pair prefers the shorter
    assert (r.n_longer_better, r.accuracy_longer_better) == (2, 0.5)
    assert (r.n_shorter_better, r.accuracy_shorter_better) == (0, None)
    flipped = pair_metrics([Pair("p", "a", "bbb", 0), Pair("p", "aaa", "b", 1), Pair("p", "aa", "b", 0)],
                           np.array([2.0, 1.0, 1.0]), np.zeros(3))
    assert (flipped.n_shorter_better, flipped.accuracy_shorter_better) == (2, 0.5)  # right, wrong
    assert (flipped.n_longer_better, flipped.accuracy_longer_better) == (1, 1.0)


def test_selection_metrics_by_hand() -> None:
    assert best_single_choices(SETS) == [0, 0, 1]  # leave-one-out: m1, m1 (ties to the first), m2
    r = selection_metrics(SETS, [2, 0, 1])
    assert r.n == 3
    assert r.win_rate == pytest.approx(100 / 3)
    assert r.best_single == pytest.approx(50 / 3)
    assert r.random == pytest.approx((0.5 + 0.25 + 1 / 3) / 3 * 100)
    assert r.longest == pytest.approx(75.0)
    assert r.oracle == pytest.approx(250 / 3)
    assert selection_metrics([CandidateSet("q", ("a", "b"), (1.0, 2.0))], [0]).best_single is None
    with pytest.raises(ValueError, match="got 1 choices for 3 candidate sets"):
        selection_metrics(SETS, [0])


def test_evaluate_with_a_tiny_ranker_matches_compare(tiny_ranker: PairRanker, tmp_path: Path) -> None:
    results = evaluate_pairs(tiny_ranker, PAIRS, name="mini", show_progress=False)
    assert set(results) == {"mini", "mini/s1", "mini/s2"}
    margins = np.array(tiny_ranker.compare([p.prompt for p in PAIRS], [p.a for p in PAIRS], [p.b for p in PAIRS]))
    want = np.mean([(m > 0) == (p.label == 0) for m, p in zip(margins[:3], PAIRS[:3], strict=True)])
    assert results["mini"].accuracy == pytest.approx(want)
    assert results["mini/s1"].n == 2
    sel = evaluate_selection(tiny_ranker, SETS, show_progress=False)
    chosen = tiny_ranker.best_of_n([s.prompt for s in SETS], [list(s.texts) for s in SETS])
    assert sel == selection_metrics(SETS, chosen)


def test_pair_accuracy_of_pairranker_is_that_of_its_two_single_order_logits(tiny_ranker: PairRanker) -> None:
    """Through ``rank`` (the interface) the numbers are exactly those of the logits M[a, b] and M[b, a].

    One comparison per forward pass, so that no logit depends on which others share its batch (fp32 rounding).
    """
    ranker = PairRanker(tiny_ranker.model, tiny_ranker.tokenizer, device="cpu", batch_size=1)
    pairs = [*PAIRS, Pair("p5", "the answer is yes", "no", 1, source="s1"), Pair("p6", "same", "same", 0, source="s2")]
    results = evaluate_pairs(ranker, pairs, name="mini", show_progress=False)
    ab = ranker.logits([(p.prompt, p.a, p.b) for p in pairs])
    ba = ranker.logits([(p.prompt, p.b, p.a) for p in pairs])
    assert results["mini"] == pair_metrics(pairs, ab, ba)
    s2 = [k for k, p in enumerate(pairs) if p.source == "s2"]
    assert results["mini/s2"] == pair_metrics([pairs[k] for k in s2], ab[s2], ba[s2])
    assert results["mini"].accuracy_one_order is not None
    assert results["mini"].order_consistency is not None


def test_a_ranker_without_a_matrix_is_judged_by_its_score_margin() -> None:
    ranker = LengthRanker()  # scores are lengths in characters; no comparison matrix (as a reward model)
    pairs = [
        Pair("p", "longer answer", "short", 0, source="s1"),  # margin 13 - 5 = +8: right
        Pair("p", "tiny", "a longer one", 0, source="s1"),  # margin -8: wrong
        Pair("p", "abc", "xyz", 1, source="s2"),  # margin 0: half
        Pair("p", "x", "yz", 2, source="s2"),  # tie, margin -1
    ]
    results = evaluate_pairs(ranker, pairs, name="len", show_progress=False)
    assert [(len(prompts), strategy) for prompts, _, strategy in ranker.calls] == [(4, "full")]  # one call
    assert ranker.calls[0][1] == [[p.a, p.b] for p in pairs]
    r = results["len"]
    assert r == margin_metrics(pairs, np.array([8.0, -8.0, 0.0, -1.0]))
    assert r.accuracy == pytest.approx(1.5 / 3)
    assert (r.accuracy_one_order, r.order_consistency) == (None, None)
    assert r.ties.mean_abs_margin == pytest.approx(1.0)
    assert r.ties.pred_a == 0.0
    assert results["len/s1"].accuracy == pytest.approx(0.5)
    sel = evaluate_selection(ranker, SETS, strategy="sort", show_progress=False)
    assert [(len(prompts), strategy) for prompts, _, strategy in ranker.calls[1:]] == [(3, "sort")]
    assert sel == selection_metrics(SETS, [1, 2, 0], "sort")  # the longest answer of each set


def test_no_pairs_give_empty_metrics(tiny_ranker: PairRanker) -> None:
    r = evaluate_pairs(tiny_ranker, [], name="none", show_progress=False)["none"]
    assert (r.n, r.accuracy, r.accuracy_one_order, r.order_consistency) == (0, None, None, None)


def test_report_files(tmp_path: Path) -> None:
    report = build_report({"mini": pair_metrics(PAIRS, AB, BA)}, {"sets": selection_metrics(SETS, [2, 0, 1])},
                          model="tiny", command="blender-llm eval-ranker ...", seconds=1.234)
    write_report(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["sets"]["mini"]["accuracy"] == pytest.approx(0.5)
    assert data["sets"]["mini"]["longer_wins"] == pytest.approx(2.5 / 3)
    assert set(data["selection"]["sets"]) >= {"n", "win_rate", "best_single", "random", "longest", "oracle"}
    md = (tmp_path / "report.md").read_text()
    assert "| mini | 4 | 3 | **0.500** | 0.833 |" in md
    assert "| sets | 3 | **33.3** | 16.7 | 36.1 | 75.0 | 83.3 | knockout |" in md
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pairs_file_read_for_evaluation(tmp_path: Path) -> None:
    f = tmp_path / "mini.pairs.jsonl"
    f.write_text("".join(json.dumps({"prompt": p.prompt, "a": p.a, "b": p.b, "label": p.label, "source": p.source}) + "\n"
                         for p in PAIRS))
    pairs = read_records(f)
    r = pair_metrics(pairs, AB, BA)  # type: ignore[arg-type]
    assert r.accuracy == pytest.approx(0.5)
