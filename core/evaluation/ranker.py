"""Measure a ranker on labelled data: pair accuracy and best-of-n selection, beside simple baselines.

Any :class:`~blender_core.ranking.Ranker` can be measured; both measures use its ``rank`` alone.

- **Pairs** (label 0 = a better, 1 = b better, 2 = tie): each pair is ranked as a set of two candidates
  ``[a, b]`` with the ``full`` strategy, all pairs in one call. The verdict is the sign of the margin: for a
  pairwise ranker that returns its comparison matrix (PairRM), the both-orders margin ``M[a, b] - M[b, a]``
  (the two orders averaged, which cancels position bias), and the single-order metrics
  (``accuracy_one_order``, ``order_consistency``) come from ``M[a, b]`` and ``M[b, a]``; for a ranker without
  a matrix (a reward model, a judge), ``score_a - score_b``, and the single-order metrics are None.
  ``accuracy`` is over non-tie pairs (a zero margin counts one half); ties are reported apart. The
  baseline ``longer_wins`` says the answer with more characters is better (equal lengths: one half);
  the accuracy is also split by whether the label prefers the longer or the shorter answer.
- **Candidate sets** with a score per answer (``pref`` in [1, 2]): the ranker picks one answer per
  prompt (``Ranking.best`` of the knockout tournament by default: 2(n-1) passes for PairRM), and the
  selection win rate is ``mean(pref - 1) x 100`` of the picks, beside: ``best_single`` (for each prompt,
  the model with the best mean score on the *other* prompts), ``random`` (the expected value of a uniform
  pick), ``longest`` and ``oracle`` (the best answer).

Batch size, device and the like are loading options of the ranker (``load_ranker(spec, batch_size=...)``),
not arguments here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from blender_core.base.results import Ranking
from blender_core.data.records import CandidateSet, Pair
from blender_core.ranking.interface import Ranker


@dataclass(frozen=True)
class TieStats:
    """How the ranker treats tie-labelled pairs: their mean |margin| next to that of non-tie pairs."""

    n: int
    mean_abs_margin: float | None
    nontie_mean_abs_margin: float | None
    # Share of tie pairs where the ranker prefers ``a`` (0.5 = no slot preference).
    pred_a: float | None


@dataclass(frozen=True)
class PairSetResult:
    """Pair accuracy of one set of pairs."""

    n: int
    n_nontie: int
    accuracy: float | None
    longer_wins: float | None
    # Accuracy of the single order (a in slot 1) alone, and how often the two orders agree (None for a
    # ranker that gives no comparison matrix).
    accuracy_one_order: float | None
    order_consistency: float | None
    ties: TieStats
    # Accuracy split by which answer the label prefers: the longer, or the shorter (equal lengths in
    # neither). A ranker that only measures length scores ~1 and ~0; one that reads content, alike.
    n_longer_better: int = 0
    n_shorter_better: int = 0
    accuracy_longer_better: float | None = None
    accuracy_shorter_better: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SelectionResult:
    """Selection win rates (``mean(pref - 1) x 100``) of the ranker's top-1 and of the baselines."""

    n: int
    win_rate: float
    best_single: float | None
    random: float
    longest: float
    oracle: float
    strategy: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _verdict_hits(margins: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 where the margin's sign matches the label (0: a better, 1: b better), 0.5 for a zero margin."""
    want = np.where(labels == 0, 1.0, -1.0)
    s = np.sign(margins)
    return np.where(s == 0, 0.5, (s == want).astype(float))


def longer_wins(pairs: Sequence[Pair]) -> float | None:
    """The "longer answer wins" accuracy (characters) on the non-tie pairs; equal lengths count one half."""
    nontie = [p for p in pairs if p.label != 2]
    if not nontie:
        return None
    margins = np.array([len(p.a) - len(p.b) for p in nontie], dtype=float)
    return float(_verdict_hits(margins, np.array([p.label for p in nontie])).mean())


def pair_metrics(pairs: Sequence[Pair], logits_ab: np.ndarray, logits_ba: np.ndarray) -> PairSetResult:
    """Metrics from the two single-order logits of each pair (``M[a, b]`` and ``M[b, a]``)."""
    ab, ba = np.asarray(logits_ab, dtype=float), np.asarray(logits_ba, dtype=float)
    return margin_metrics(pairs, ab - ba, single_orders=(ab, ba))


def margin_metrics(
    pairs: Sequence[Pair], margins: np.ndarray, *, single_orders: tuple[np.ndarray, np.ndarray] | None = None
) -> PairSetResult:
    """Metrics from each pair's margin (> 0: ``a`` is better); the single-order ones need ``single_orders``,
    the logits ``M[a, b]`` and ``M[b, a]`` (else they are None)."""
    labels = np.array([p.label for p in pairs], dtype=int)
    margin = np.asarray(margins, dtype=float)
    nontie = labels != 2
    tie = ~nontie
    hits = _verdict_hits(margin, labels)  # meaningful on the non-tie pairs only

    def part(mask: np.ndarray) -> float | None:
        return float(hits[mask].mean()) if mask.any() else None

    acc1 = cons = None
    if single_orders is not None:
        logits_ab, logits_ba = single_orders
        if nontie.any():
            acc1 = float(_verdict_hits(logits_ab[nontie], labels[nontie]).mean())
        if len(pairs):
            cons = float((np.sign(logits_ab) == -np.sign(logits_ba)).mean())
    # +1 where the labelled-better answer is the longer, -1 the shorter, 0 equal lengths or a tie
    better_longer = np.array([np.sign(len(p.a) - len(p.b)) * (1 if p.label == 0 else -1) for p in pairs])
    better_longer = np.where(nontie, better_longer, 0)

    ties = TieStats(
        n=int(tie.sum()),
        mean_abs_margin=float(np.abs(margin[tie]).mean()) if tie.any() else None,
        nontie_mean_abs_margin=float(np.abs(margin[nontie]).mean()) if nontie.any() else None,
        pred_a=float((margin[tie] > 0).mean()) if tie.any() else None,
    )
    return PairSetResult(
        n=len(pairs),
        n_nontie=int(nontie.sum()),
        accuracy=part(nontie),
        longer_wins=longer_wins(pairs),
        accuracy_one_order=acc1,
        order_consistency=cons,
        ties=ties,
        n_longer_better=int((better_longer > 0).sum()),
        n_shorter_better=int((better_longer < 0).sum()),
        accuracy_longer_better=part(better_longer > 0),
        accuracy_shorter_better=part(better_longer < 0),
    )


def _pair_verdicts(rankings: Sequence[Ranking]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Each pair's margin, and its two single-order logits when every ranking has a comparison matrix."""
    matrices = [r.matrix for r in rankings if r.matrix is not None]
    if matrices and len(matrices) == len(rankings):
        ab = np.array([m[0, 1] for m in matrices], dtype=float)
        ba = np.array([m[1, 0] for m in matrices], dtype=float)
        return ab - ba, (ab, ba)
    return np.array([r.scores[0] - r.scores[1] for r in rankings], dtype=float), None


def evaluate_pairs(
    ranker: Ranker,
    pairs: Sequence[Pair],
    *,
    name: str,
    show_progress: bool = True,
) -> dict[str, PairSetResult]:
    """Rank every pair as the two candidates ``[a, b]`` (``full`` strategy, one batched call); results for
    the whole set (``name``) and per ``source`` when a set mixes several (``name/source``).

    With a pairwise ranker that returns the comparison matrix (PairRM), the margin is ``M[a, b] - M[b, a]``
    and every metric is filled; with any other ranker the margin is ``score_a - score_b`` and
    ``accuracy_one_order`` / ``order_consistency`` are None.

    Example:
        >>> results = evaluate_pairs(load_ranker(), pairs, name="dev", show_progress=False)  # doctest: +SKIP
        >>> results["dev"].accuracy  # doctest: +SKIP
        0.71
    """
    rankings = ranker.rank(
        [p.prompt for p in pairs], [[p.a, p.b] for p in pairs], strategy="full", show_progress=show_progress
    )
    margins, orders = _pair_verdicts(rankings)

    def metrics(idx: list[int]) -> PairSetResult:
        one = None if orders is None else (orders[0][idx], orders[1][idx])
        return margin_metrics([pairs[k] for k in idx], margins[idx], single_orders=one)

    out = {name: metrics(list(range(len(pairs))))}
    sources = sorted({p.source for p in pairs})
    if len(sources) > 1:
        for src in sources:
            out[f"{name}/{src}"] = metrics([k for k, p in enumerate(pairs) if p.source == src])
    return out


def best_single_choices(sets: Sequence[CandidateSet]) -> list[int] | None:
    """Per set, the index of the answer of the model with the best mean score on the *other* sets
    (leave-one-out, so the choice never sees the set it is scored on); None without model names."""
    if any(s.models is None or s.scores is None for s in sets):
        return None
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    for s in sets:
        for m, v in zip(s.models, s.scores, strict=True):  # type: ignore[arg-type]
            total[m] = total.get(m, 0.0) + v
            count[m] = count.get(m, 0) + 1
    choices = []
    for s in sets:
        best_k, best_mean = 0, -np.inf
        for k, (m, v) in enumerate(zip(s.models, s.scores, strict=True)):  # type: ignore[arg-type]
            n_other = count[m] - 1
            mean = (total[m] - v) / n_other if n_other else -np.inf
            if mean > best_mean:
                best_k, best_mean = k, mean
        choices.append(best_k)
    return choices


def selection_metrics(
    sets: Sequence[CandidateSet], chosen: Sequence[int], strategy: str = "knockout"
) -> SelectionResult:
    """Win rates ``mean(score - 1) x 100`` of the given picks and of the baselines."""
    if len(chosen) != len(sets):
        raise ValueError(f"got {len(chosen)} choices for {len(sets)} candidate sets")
    scores = []
    for s in sets:
        if s.scores is None:
            raise ValueError(f"candidate set {s.id!r} has no scores; selection needs a score per answer")
        scores.append(np.asarray(s.scores, dtype=float))

    def rate(values: Sequence[float]) -> float:
        return float(np.mean(values) - 1.0) * 100.0

    single = best_single_choices(sets)
    return SelectionResult(
        n=len(sets),
        win_rate=rate([sc[k] for sc, k in zip(scores, chosen, strict=True)]),
        best_single=rate([sc[k] for sc, k in zip(scores, single, strict=True)])
        if single is not None
        else None,
        random=rate([sc.mean() for sc in scores]),
        longest=rate(
            [sc[int(np.argmax([len(t) for t in s.texts]))] for sc, s in zip(scores, sets, strict=True)]
        ),
        oracle=rate([sc.max() for sc in scores]),
        strategy=strategy,
    )


def evaluate_selection(
    ranker: Ranker,
    sets: Sequence[CandidateSet],
    *,
    strategy: str = "knockout",
    show_progress: bool = True,
) -> SelectionResult:
    """Pick one answer per set (``Ranking.best`` of ``ranker.rank(..., strategy=strategy)``) and compare its
    win rate with the baselines."""
    usable = [s for s in sets if s.scores is not None and len(s.texts) >= 1]
    if not usable:
        raise ValueError("no candidate set with scores to evaluate selection on")
    rankings = ranker.rank(
        [s.prompt for s in usable], [list(s.texts) for s in usable], strategy=strategy,
        show_progress=show_progress,
    )  # fmt: skip
    return selection_metrics(usable, [r.best for r in rankings], strategy)
