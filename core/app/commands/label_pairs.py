"""``blender-llm label-pairs FILE... --out OUT``: rank candidate sets and write preference pairs for DPO
(``prompt``, ``chosen``, ``rejected``, both scores and the margin), in this process or on Ray actors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from blender_core.app.commands._batch import (
    Actors,
    Address,
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
    ScoreKey,
    ShardSize,
    Strategy,
    error_printer,
    load_local_ranker,
    prepare_job,
    ray_ranker_options,
    run_batch,
)

Pairs = Annotated[
    str,
    typer.Option(
        "--pairs",
        help="best-vs-worst (one pair per record) | best-vs-each (n-1) | all-pairs (every i better than j).",
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
    ) -> None:
        """Rank each record's candidates with any ranker and write its preference pairs, one JSON line each.

        Each line: {"id" (or "line"), "line_hash", "prompt", "chosen", "rejected", "score_chosen",
        "score_rejected", "margin", "chosen_index", "rejected_index", "chosen_model"?, "rejected_model"?}: the
        columns TRL's DPO trainer reads (prompt, chosen, rejected), with the ranker's scores. --pairs chooses
        which pairs a ranking gives, --margin drops the close ones (a record may give none). Bad lines, resume
        and exactly-once writing are those of `rank --engine ray`, in this process or on Ray actors (--engine
        ray). Exit status: as `rank`.
        """
        from blender_core.batch.pairs import PAIR_CHOICES, PairPolicy
        from blender_core.batch.pairs import label_pairs as run_label_pairs
        from blender_core.batch.rank_file import BatchRankReport

        if pairs not in PAIR_CHOICES:
            raise typer.BadParameter(
                f"unknown choice {pairs!r}; choose one of {', '.join(PAIR_CHOICES)}", param_hint="'--pairs'"
            )
        try:
            policy = PairPolicy(pairs, margin)  # type: ignore[arg-type]  # checked against PAIR_CHOICES above
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--margin'") from exc
        settings = prepare_job(
            files,
            out,
            errors,
            strategy=strategy,
            engine=engine,
            address=address,
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            cpus_per_actor=cpus_per_actor,
            max_retries=max_retries,
            num_threads=num_threads,
        )
        common: dict[str, Any] = {
            "policy": policy,
            "strategy": strategy,
            "shard_size": shard_size,
            "chunk_size": chunk_size,
            "score_key": score_key,
            "errors_path": errors,
            "show_progress": not no_progress,
            "on_error": error_printer(files),
        }
        job: Callable[[], BatchRankReport]
        if settings is not None:
            options = ray_ranker_options(model, settings, batch_size=batch_size, device=device)

            def job() -> BatchRankReport:
                return run_label_pairs(
                    list(files),
                    out,
                    model,
                    engine="ray",
                    ranker_options=options,
                    ray_settings=settings,
                    **common,
                )

        else:
            load_local_ranker(model, device=device, batch_size=batch_size)
            loading = {"device": device, "batch_size": batch_size}

            def job() -> BatchRankReport:
                # the spec, not the object: parts are named after it; load_ranker's cache has it loaded already
                return run_label_pairs(list(files), out, model, ranker_options=loading, **common)

        run_batch(job, out, errors, what="labelled", rows="pairs")
