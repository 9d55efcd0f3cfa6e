"""Preference labelling: rank each candidate set, then write preference pairs in the format TRL's DPO trainer reads.

:func:`label_pairs` ranks every record of the input(s) with any ranker (PairRM, a reward model, an LLM
judge) and writes, per record, 0..k JSON lines::

    {"id": "q17", "line": 17, "line_hash": "9c1e0f4b2a7d5e13", "prompt": "...", "chosen": "...",
     "rejected": "...", "score_chosen": 1.8, "score_rejected": -0.6, "margin": 2.4, "chosen_index": 2,
     "rejected_index": 0, "chosen_model": "gpt-4", "rejected_model": "alpaca"}

``prompt`` / ``chosen`` / ``rejected`` are the columns of TRL's standard (not conversational) preference
format, which ``DPOTrainer`` reads; ``score_chosen`` / ``score_rejected`` are named as in the binarized
UltraFeedback sets, and ``margin`` as the column TRL's ``RewardTrainer`` uses. Scores and margins are on the
ranker's own scale (PairRM: aggregated comparison logits; a reward model: rewards; a judge: wins).

Which pairs (:class:`PairPolicy`); the candidates are taken in the ranker's order (rank, then index):

- ``best-vs-worst``: one pair per record, the best candidate against the worst (the usual "binarized" set);
- ``best-vs-each``: the best against each other candidate, n-1 pairs;
- ``all-pairs``: every pair (i better than j), n(n-1)/2 pairs.

A pair is kept only when the chosen candidate is ranked above the rejected one and its score is higher by
more than ``margin`` (default 0: ties give no pair), so a record may give no pair at all.

The reading, bad-line reports, resume and exactly-once writing are the one batch engine's, as for ``rank``
(:mod:`blender_core.batch.sharded`), in this process (``engine="local"``) or on Ray actors (``"ray"``); the
two write the same lines. A record's key fields (``id`` / ``file`` / ``line``, ``line_hash``) are on each of
its pairs, and a record that gave none is remembered by its key fields in ``OUT.empty.jsonl``, so a rerun ranks
no record again. The output records its settings (the pair policy and margin among them) in
``OUT.settings.json``: a run with another policy or margin is refused unless it starts over (``overwrite=True``),
so pairs of two policies never mix (:mod:`blender_core.batch.settings`).

Example:
    >>> choose_pairs([0.9, 0.1, 0.5], [1, 3, 2], PairPolicy("best-vs-each"))
    [(0, 2), (0, 1)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from blender_core.base.validation import check_choice
from blender_core.batch.jobs import Engine, run_job
from blender_core.batch.plan import Item, LineError, record_head
from blender_core.batch.ray_cluster import RaySettings
from blender_core.batch.settings import row_options
from blender_core.batch.sharded import DEFAULT_SHARD_SIZE, RunOptions, ShardedReport
from blender_core.batch.shards import JobSpec, ShardDone
from blender_core.ranking.registry import RankerSpec, spec_name

PairChoice = Literal["best-vs-worst", "best-vs-each", "all-pairs"]
PAIR_CHOICES: tuple[str, ...] = ("best-vs-worst", "best-vs-each", "all-pairs")


@dataclass(frozen=True)
class PairPolicy:
    """Which preference pairs a ranked record gives (see the module docstring)."""

    choice: PairChoice = "best-vs-worst"  # one clear preference per prompt: what DPO recipes usually train on
    margin: float = 0.0  # 0 keeps every strict preference and drops ties; raise it to keep only clear ones

    def __post_init__(self) -> None:
        check_choice(self.choice, PAIR_CHOICES, "pair choice")
        if (
            isinstance(self.margin, bool)
            or not isinstance(self.margin, (int, float))
            or not math.isfinite(self.margin)
            or self.margin < 0
        ):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")


def choose_pairs(scores: Sequence[float], ranks: Sequence[int], policy: PairPolicy) -> list[tuple[int, int]]:
    """The (chosen, rejected) candidate indices a ranking gives under ``policy``, best pairs first."""
    order = sorted(range(len(ranks)), key=lambda i: (ranks[i], i))
    if len(order) < 2:
        return []
    if policy.choice == "best-vs-worst":
        wanted = [(order[0], order[-1])]
    elif policy.choice == "best-vs-each":
        wanted = [(order[0], j) for j in order[1:]]
    else:
        wanted = [(order[a], order[b]) for a in range(len(order)) for b in range(a + 1, len(order))]
    return [(c, r) for c, r in wanted if ranks[c] < ranks[r] and scores[c] - scores[r] > policy.margin]


@dataclass(frozen=True)
class PairRows:
    """The ``label-pairs`` output: 0..k preference pairs per ranked record."""

    policy: PairPolicy = PairPolicy()

    @property
    def name(self) -> str:
        return f"pairs:{self.policy.choice}:{self.policy.margin!r}"

    def settings(self) -> dict[str, Any]:
        return {"job": "label-pairs", "pairs": self.policy.choice, "margin": float(self.policy.margin)}

    def rows(
        self, item: Item, scores: list[float], ranks: list[int], best: int, scores_order: bool = True
    ) -> list[dict[str, Any]]:
        out = []  # a pair needs both its ranks and its scores to agree, whatever the strategy
        for c, r in choose_pairs(scores, ranks, self.policy):
            row = record_head(item)
            row.update(
                prompt=item.prompt,
                chosen=item.texts[c],
                rejected=item.texts[r],
                score_chosen=scores[c],
                score_rejected=scores[r],
                margin=scores[c] - scores[r],
                chosen_index=c,
                rejected_index=r,
            )
            if item.models is not None:
                row.update(chosen_model=item.models[c], rejected_model=item.models[r])
            out.append(row)
        return out


def label_pairs(
    source: Any,
    out_path: str | Path,
    ranker: RankerSpec = None,
    *,
    policy: PairPolicy | None = None,
    engine: Engine = "local",
    ranker_options: Mapping[str, Any] | None = None,
    ray_settings: RaySettings | None = None,
    strategy: str = "full",
    shard_size: int = DEFAULT_SHARD_SIZE,
    chunk_size: int = 32,
    score_key: str | None = None,
    errors_path: str | Path | None = None,
    show_progress: bool = True,
    on_error: Callable[[LineError], None] | None = None,
    on_shard: Callable[[ShardDone], None] | None = None,
    overwrite: bool = False,
    on_start: Callable[[], None] | None = None,
) -> ShardedReport:
    """Rank every record of the input(s) and write its preference pairs to ``out_path`` (resumable, exactly once).

    Args:
        source: a path (JSON lines, ``.gz``, Parquet), a ``ray.data.Dataset``, or a list of them.
        out_path: the output JSON lines file (one pair per line).
        ranker: any spec ``load_ranker`` accepts, or a ranker object.
        policy: which pairs (default: best vs worst, margin 0).
        engine: ``local`` (this process) or ``ray`` (Ray actors; see :mod:`blender_core.batch.ray_executor`).
        ranker_options: loading options for ``load_ranker`` (``batch_size``, ``device``…).
        ray_settings: a :class:`~blender_core.batch.ray_cluster.RaySettings` (``engine="ray"`` only).
        strategy: ``full`` (scores for every candidate; the default), ``sort``, ``knockout`` or ``bubble``
            (the tournaments rank only the best for sure: prefer ``best-vs-worst`` / ``best-vs-each``).
        shard_size: input lines per shard (the unit of work, of resume, and of what a stopped run loses).
        chunk_size: records per ``rank`` call.
        score_key: MixInstruct only (see :func:`~blender_core.batch.rank_file.rank_files`).
        errors_path: each skipped line of this run is also written there.
        show_progress: a tqdm bar over the records to rank.
        on_error: called with each skipped line.
        on_shard: called as each shard is ranked.
        overwrite: start over (delete the output, the records it remembers, its settings, ``errors_path`` and its
            parts first).
        on_start: called once the output is locked and checked, before anything is read or ranked.

    Returns:
        A :class:`~blender_core.batch.sharded.ShardedReport` (``rows``: pairs written).

    Raises:
        As :func:`~blender_core.batch.rank_file.rank_files`.
    """
    return run_job(
        source,
        out_path,
        ranker,
        JobSpec(
            PairRows(policy or PairPolicy()),
            strategy,
            chunk_size,
            score_key,
            spec_name(ranker),
            row_options(ranker_options),
        ),
        RunOptions(shard_size, errors_path, show_progress, on_error, on_shard, overwrite, on_start),
        engine=engine,
        ranker_options=ranker_options,
        ray_settings=ray_settings,
    )
