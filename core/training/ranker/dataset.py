"""Training examples: records -> sampled comparisons (token ids + label sign) -> padded batches.

Texts are tokenized once (each distinct prompt and answer), then every epoch re-samples its pairs from
the candidate sets, as the paper does, and the comparison ids are assembled with the ranker's own
:class:`~blender_core.encoding.PairEncoder` so that training sees exactly the inference layout.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from blender_core.data.records import CandidateSet, Pair
from blender_core.ranking.pairrm.configuration_pairrm import CANDIDATE_TOKEN
from blender_core.ranking.pairrm.encoding import PairEncoder
from blender_core.training.ranker.config import TrainConfig
from blender_core.training.ranker.sampling import sample_pairs


@dataclass(frozen=True)
class Comparison:
    """One training comparison: texts by index into the token cache, and +1 / -1 (slot 1 / slot 2 better)."""

    source: int
    cand1: int
    cand2: int
    sign: int


class TokenCache:
    """Token ids of every distinct prompt and answer of the training data, computed once."""

    def __init__(self, encoder: PairEncoder, records: Sequence[Pair | CandidateSet]) -> None:
        self.encoder = encoder
        sources: dict[str, int] = {}
        texts: dict[str, int] = {}
        for r in records:
            sources.setdefault(r.prompt, len(sources))
            for t in (r.a, r.b) if isinstance(r, Pair) else r.texts:
                texts.setdefault(t, len(texts))
        self.source_index, self.text_index = sources, texts
        self.source_ids = encoder.encode_sources(list(sources))
        # One token beyond the largest budget, so that a truncated answer is told apart from one that fits
        # exactly; PairEncoder.build cuts every answer to its budget anyway.
        cap = encoder.candidate_budget(3) + 1
        batch = [CANDIDATE_TOKEN + encoder.sanitize(t) for t in texts]
        self.text_ids = [list(ids) for ids in encoder.tokenizer(batch, truncation=True, max_length=cap)["input_ids"]] if batch else []

    def fits(self, source: int, text: int) -> bool:
        """Whether answer ``text`` fits whole beside prompt ``source`` (no truncation)."""
        return len(self.text_ids[text]) <= self.encoder.candidate_budget(len(self.source_ids[source]))

    def same_view(self, source: int, a: int, b: int) -> bool:
        """Whether answers ``a`` and ``b`` look identical to the ranker once cut to their budget beside ``source``.

        Such a pair (e.g. a long answer against a copy changed only past the limit) carries no signal.
        """
        enc = self.encoder
        budget = enc.candidate_budget(len(self.source_ids[source]))
        return enc.fit_candidate(self.text_ids[a], budget, enc.cand1_id) == enc.fit_candidate(
            self.text_ids[b], budget, enc.cand1_id
        )

    def build(self, c: Comparison) -> list[int]:
        return self.encoder.build(self.source_ids[c.source], self.text_ids[c.cand1], self.text_ids[c.cand2])


def plan_epoch(
    records: Sequence[Pair | CandidateSet], cache: TokenCache, config: TrainConfig, seed: int
) -> list[Comparison]:
    """Sample one epoch of comparisons (candidate sets per ``config.sampling``; every non-tie pair once), shuffled."""
    rng = random.Random(seed)
    out: list[Comparison] = []
    for r in records:
        src = cache.source_index[r.prompt]
        if isinstance(r, Pair):
            if r.label == 2 or r.a.strip() == r.b.strip():
                continue  # a tie (or two identical answers) carries no preference
            better, worse = (r.a, r.b) if r.label == 0 else (r.b, r.a)
            i, j = cache.text_index[better], cache.text_index[worse]
            if config.skip_truncated and not (cache.fits(src, i) and cache.fits(src, j)):
                continue
            if cache.same_view(src, i, j):
                continue
            if config.random_swap and rng.random() < 0.5:
                out.append(Comparison(src, j, i, -1))
            else:
                out.append(Comparison(src, i, j, 1))
            continue
        if r.scores is None:
            raise ValueError(
                f"candidate set {r.id!r} has no scores; training needs a score per candidate "
                "('pref', a MixInstruct score chosen with --score-key, or 'scores' in the general format)"
            )
        keep = [
            k for k, t in enumerate(r.texts) if not config.skip_truncated or cache.fits(src, cache.text_index[t])
        ]
        scores, texts = [r.scores[k] for k in keep], [r.texts[k] for k in keep]
        pairs = sample_pairs(
            scores, mode=config.sampling, num_pos=config.num_pos, num_neg=config.num_neg, rng=rng,
            texts=texts if config.dedupe else None, random_swap=config.random_swap, min_gap=config.min_score_gap,
            shorter_share=config.shorter_share, lengths=[len(t) for t in texts],
        )
        for i, j in pairs:
            sign = 1 if scores[i] > scores[j] else -1
            out.append(Comparison(src, cache.text_index[texts[i]], cache.text_index[texts[j]], sign))
    rng.shuffle(out)
    return out


class ComparisonDataset(torch.utils.data.Dataset):
    """A list of comparisons as a map-style dataset of ``{"input_ids": list[int], "sign": int}``."""

    def __init__(self, cache: TokenCache, comparisons: Sequence[Comparison]) -> None:
        self.cache = cache
        self.comparisons = list(comparisons)

    def __len__(self) -> int:
        return len(self.comparisons)

    def __getitem__(self, k: int) -> dict[str, list[int] | int]:
        c = self.comparisons[k]
        return {"input_ids": self.cache.build(c), "sign": c.sign}


class Collator:
    """Pad a list of examples to the longest one: input_ids / attention_mask (batch, seq), sign (batch,)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[dict[str, list[int] | int]]) -> dict[str, torch.Tensor]:
        seqs = [b["input_ids"] for b in batch]
        width = max(len(s) for s in seqs)  # type: ignore[arg-type]
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)  # type: ignore[arg-type]
            mask[row, : len(s)] = 1  # type: ignore[arg-type]
        sign = torch.tensor([b["sign"] for b in batch], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "sign": sign}


def dev_pairs(records: Sequence[Pair | CandidateSet], max_pairs: int, seed: int) -> list[Pair]:
    """Fixed dev comparisons: pairs as they are (ties dropped), best vs worst of each candidate set."""
    out: list[Pair] = []
    for r in records:
        if isinstance(r, Pair):
            if r.label != 2:
                out.append(r)
        elif r.scores is not None and len(r.texts) >= 2:
            hi = max(range(len(r.texts)), key=lambda i: r.scores[i])  # type: ignore[index]
            lo = min(range(len(r.texts)), key=lambda i: r.scores[i])  # type: ignore[index]
            if r.scores[hi] > r.scores[lo] and r.texts[hi].strip() != r.texts[lo].strip():
                out.append(Pair(r.prompt, r.texts[hi], r.texts[lo], 0, id=r.id, source=r.source))
    if max_pairs and len(out) > max_pairs:
        out = random.Random(seed).sample(out, max_pairs)
    return out
