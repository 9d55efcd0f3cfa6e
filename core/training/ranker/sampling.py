"""Pair sampling from a scored candidate set, as in the paper: all_pair / top_bottom / random.

A sampled pair ``(i, j)`` is ordered as it goes into the ranker (``i`` in slot 1); its label is the sign
of ``scores[i] - scores[j]``. Pairs with equal scores (or closer than ``min_gap``) are never drawn: they
carry no preference for the pairwise losses.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

SAMPLING_MODES: tuple[str, ...] = ("all_pair", "top_bottom", "random")


def dedupe_indices(texts: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Indices of the first occurrence of each distinct text (stripped); a repeated text keeps its best score."""
    best: dict[str, int] = {}
    for i, t in enumerate(texts):
        key = t.strip()
        if key not in best or scores[i] > scores[best[key]]:
            best[key] = i
    return sorted(best.values())


def sample_pairs(
    scores: Sequence[float],
    *,
    mode: str = "all_pair",
    num_pos: int = 5,
    num_neg: int = 5,
    rng: random.Random,
    texts: Sequence[str] | None = None,
    random_swap: bool = True,
    min_gap: float = 0.0,
    shorter_share: float = 0.0,
    lengths: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """Draw comparison pairs of candidate indices from one candidate set.

    Args:
        scores: one score per candidate, higher is better.
        mode: ``all_pair``: ``min(num_pos, num_neg)`` distinct pairs drawn uniformly from all C(n, 2)
            pairs whose scores differ (the reference's default); ``top_bottom``: every pair of one of the
            ``num_pos`` best with one of the ``num_neg`` worst; ``random``: ``max(num_pos, num_neg)``
            pairs of two candidates drawn at random (with replacement across pairs).
        texts: when given, duplicate texts are dropped first (the best-scored copy is kept).
        random_swap: put the better candidate in slot 2 with probability 0.5; otherwise the
            better one is always in slot 1.
        lengths: one length per candidate (e.g. characters), for ``shorter_share``.
        min_gap: pairs whose score difference is at most this are skipped (0: equal scores only).
        shorter_share: ``all_pair`` only, needs ``lengths``: each drawn pair is, with this probability,
            one whose better answer is the shorter, while such pairs remain; 0 draws uniformly.
            Judges favour long answers, so uniform pairs teach length above content; a share near 0.5
            makes length uninformative in training.

    Returns:
        ordered pairs ``(i, j)``: candidate ``i`` goes to slot 1.

    Example:
        >>> sample_pairs([0.1, 0.9, 0.5], mode="top_bottom", num_pos=1, num_neg=1,
        ...              rng=random.Random(0), random_swap=False)
        [(1, 0)]
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose one of {', '.join(map(repr, SAMPLING_MODES))}")
    if num_pos < 1 or num_neg < 1:
        raise ValueError(f"num_pos and num_neg must be >= 1, got {num_pos} and {num_neg}")
    idx = dedupe_indices(texts, scores) if texts is not None else list(range(len(scores)))
    if len(idx) < 2:
        return []

    def differ(i: int, j: int) -> bool:
        return abs(scores[i] - scores[j]) > min_gap

    if not 0.0 <= shorter_share <= 1.0:
        raise ValueError(f"shorter_share must be in [0, 1], got {shorter_share}")
    if shorter_share and (mode != "all_pair" or lengths is None):
        raise ValueError("shorter_share needs mode='all_pair' and the candidates' lengths")

    if mode == "all_pair":
        pool = [(i, j) for i, j in itertools.combinations(idx, 2) if differ(i, j)]
        k = min(len(pool), min(num_pos, num_neg))
        if not shorter_share:
            chosen = rng.sample(pool, k)
        else:
            assert lengths is not None

            def shorter_wins(p: tuple[int, int]) -> bool:
                better, worse = p if scores[p[0]] > scores[p[1]] else (p[1], p[0])
                return lengths[better] < lengths[worse]

            groups = {True: [p for p in pool if shorter_wins(p)], False: [p for p in pool if not shorter_wins(p)]}
            for g in groups.values():
                rng.shuffle(g)
            chosen = []
            for _ in range(k):
                want = rng.random() < shorter_share
                chosen.append(groups[want if groups[want] else not want].pop())
    elif mode == "top_bottom":
        ranked = sorted(idx, key=lambda i: (-scores[i], i))
        top, bottom = ranked[:num_pos], ranked[-num_neg:]
        chosen = [(i, j) for i in top for j in bottom if i != j and differ(i, j)]
        chosen = list(dict.fromkeys((min(i, j), max(i, j)) for i, j in chosen))  # a candidate in both lists pairs once
    else:
        chosen = []
        if any(differ(i, j) for i, j in itertools.combinations(idx, 2)):
            tries = 0
            while len(chosen) < max(num_pos, num_neg) and tries < 50 * max(num_pos, num_neg):
                tries += 1
                i, j = rng.sample(idx, 2)
                if differ(i, j):
                    chosen.append((i, j))
    out = []
    for i, j in chosen:
        better, worse = (i, j) if scores[i] > scores[j] else (j, i)
        out.append((worse, better) if random_swap and rng.random() < 0.5 else (better, worse))
    return out
