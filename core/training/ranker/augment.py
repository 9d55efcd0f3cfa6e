"""Synthetic comparisons built from the training candidate sets: answers that are plainly worse.

Judged data teaches a small ranker slowly what every judge agrees on. These pairs state it directly,
each pitting a set's best-scored answer (the anchor) against a damaged version of it:

- ``truncate``: the anchor cut after 25-60 % of its words (a complete answer beats an unfinished one);
- ``off_topic``: the best answer of another prompt (an answer must address its own instruction);
- ``repeat``: the anchor's first sentence repeated 3-6 times (degenerate repetition loses);
- ``echo``: the last 1-3 lines (or the whole) of the prompt copied back (echoing the input is no answer);
- ``pad``: the anchor followed by 1-3 sentences of another prompt's best answer (longer, yet worse:
  content the instruction did not ask for; a counterweight to the judges' taste for length).

Only training records are used, so nothing of the dev or evaluation data leaks in. Off by default.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from blender_core.data.records import CandidateSet, Pair

AUGMENTATIONS: tuple[str, ...] = ("truncate", "off_topic", "repeat", "echo", "pad")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _truncate(text: str, rng: random.Random) -> str | None:
    words = text.split(" ")
    if len(words) < 12:
        return None
    return " ".join(words[: max(3, int(len(words) * rng.uniform(0.25, 0.6)))])


def _repeat(text: str, rng: random.Random) -> str | None:
    first = next((s.strip() for s in _SENTENCE.split(text) if len(s.split()) >= 3), None)
    if first is None:
        return None
    return " ".join([first] * rng.randint(3, 6))


def _echo(prompt: str, rng: random.Random) -> str | None:
    lines = [ln for ln in prompt.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    return "\n".join(lines[-rng.randint(1, min(3, len(lines))) :])


def _pad(text: str, other: str, rng: random.Random) -> str | None:
    sentences = [s.strip() for s in _SENTENCE.split(other) if len(s.split()) >= 3]
    if not sentences:
        return None
    start = rng.randrange(len(sentences))
    return text.rstrip() + "\n\n" + " ".join(sentences[start : start + rng.randint(1, 3)])


def check_augmentations(kinds: Sequence[str]) -> None:
    """Raise a ValueError naming the first unknown kind and the known ones."""
    unknown = [k for k in kinds if k not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(map(repr, AUGMENTATIONS))}")


def synthetic_pairs(
    records: Sequence[Pair | CandidateSet],
    *,
    kinds: Sequence[str] = AUGMENTATIONS,
    rate: float = 0.25,
    seed: int = 0,
) -> list[Pair]:
    """For a ``rate`` share of the scored candidate sets and each kind, one pair: anchor (``a``) beats its damaged copy.

    Example:
        >>> sets = [CandidateSet("Name three colours.", ("Red, green and blue are three colours.", "no"),
        ...                      (2.0, 1.0)), CandidateSet("Say hi.", ("Hi there, nice to meet you!",), (2.0,))]
        >>> [p.b for p in synthetic_pairs(sets, kinds=["off_topic"], rate=1.0)]
        ['Hi there, nice to meet you!', 'Red, green and blue are three colours.']
    """
    check_augmentations(kinds)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"the augmentation rate must be in [0, 1], got {rate}")
    rng = random.Random(seed)
    anchors = [
        (r.prompt, r.texts[max(range(len(r.texts)), key=lambda i: r.scores[i])])  # type: ignore[index]
        for r in records
        if isinstance(r, CandidateSet) and r.scores is not None and r.texts
    ]
    out: list[Pair] = []
    for k, (prompt, anchor) in enumerate(anchors):
        for kind in kinds:
            if rng.random() >= rate:
                continue
            worse: str | None
            if kind == "truncate":
                worse = _truncate(anchor, rng)
            elif kind == "repeat":
                worse = _repeat(anchor, rng)
            elif kind == "echo":
                worse = _echo(prompt, rng)
            else:
                others = [j for j in range(len(anchors)) if anchors[j][0] != prompt]
                other = anchors[rng.choice(others)][1] if others else None
                worse = other if kind == "off_topic" or other is None else _pad(anchor, other, rng)
            if worse and worse.strip() and worse.strip() != anchor.strip():
                out.append(Pair(prompt, anchor, worse, 0, id=f"{kind}-{k}", source=f"augment:{kind}"))
    return out
