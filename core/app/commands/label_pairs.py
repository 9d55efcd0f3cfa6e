"""``blender-llm label-pairs FILE... --out OUT``: rank candidate sets and write preference pairs for DPO
(``prompt``, ``chosen``, ``rejected``, both scores and the margin), in this process or on Ray actors."""

from __future__ import annotations

from typing import Annotated

import typer

from blender_core.app.commands._batch import (
    Actors,
    Address,
    BatchOptions,
    BatchSize,
    ChunkSize,
    CpusPerActor,
    Device,
    Engine,
    Errors,
    Files,
    GpusPerActor,
    MaxRetries,
    Model,
    NoProgress,
    NumThreads,
    Out,
    Overwrite,
    ScoreKey,
    ShardSize,
    Strategy,
    run_command,
)
from blender_core.app.commands._command import choice

#: the --pairs choices: blender_core.batch.pairs.PAIR_CHOICES (a test checks)
PAIR_CHOICES = ("best-vs-worst", "best-vs-each", "all-pairs")
Pairs = Annotated[
    str,
    choice(
        PAIR_CHOICES,
        "--pairs",
        help="Which pairs a ranking gives: best-vs-worst (one per record), best-vs-each (n-1), all-pairs (every "
        "i ranked above j).",
    ),
]
Margin = Annotated[
    float,
    typer.Option(
        help="Keep a pair only when the chosen score beats the rejected one by more than this (ranker's scale; 0 drops ties)."
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("label-pairs")
    def label_pairs(
        files: Files,
        out: Out,
        model: Model = None,
        pairs: Pairs = "best-vs-worst",
        margin: Margin = 0.0,
        strategy: Strategy = "full",
        batch_size: BatchSize = 32,
        chunk_size: ChunkSize = 32,
        score_key: ScoreKey = None,
        errors: Errors = None,
        device: Device = None,
        num_threads: NumThreads = 0,
        no_progress: NoProgress = False,
        engine: Engine = "local",
        address: Address = None,
        actors: Actors = None,
        gpus_per_actor: GpusPerActor = None,
        cpus_per_actor: CpusPerActor = 1.0,
        shard_size: ShardSize = 256,
        max_retries: MaxRetries = 3,
        overwrite: Overwrite = False,
    ) -> None:
        """Rank each record's candidates with any ranker and write its preference pairs, one JSON line each.

        Each line: {"id" (or "line"), "line_hash", "prompt", "chosen", "rejected", "score_chosen",
        "score_rejected", "margin", "chosen_index", "rejected_index", "chosen_model"?, "rejected_model"?}: the
        columns TRL's DPO trainer reads (prompt, chosen, rejected), with the ranker's scores. --pairs chooses
        which pairs a ranking gives, --margin drops the close ones (a record may give none). With either engine
        (this process, or Ray actors with --engine ray), bad lines, resume (run the same command again),
        exactly-once writing and the lock on --out work as in `rank`. Exit status: as `rank`.
        """
        options = BatchOptions.of(locals())
        from blender_core.batch.pairs import PairPolicy
        from blender_core.batch.pairs import label_pairs as run_label_pairs

        try:
            policy = PairPolicy(pairs, margin)  # type: ignore[arg-type]  # checked against PAIR_CHOICES above
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--margin'") from exc
        run_command(run_label_pairs, options, what="labelled", rows="pairs", policy=policy)
