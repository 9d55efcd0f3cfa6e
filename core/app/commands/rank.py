"""``blender-llm rank FILE... --out OUT``: rank every candidate set of JSON-lines or Parquet files (resumable), in
this process or on Ray actors (``--engine ray``). The options and helpers it shares with ``label-pairs`` are
:mod:`blender_core.app.commands._batch`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from blender_core.batch.rank_file import BatchRankReport


def register(app: typer.Typer) -> None:
    @app.command("rank")
    def rank(
        files: Files,
        out: Out,
        model: Model = None,
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
        """Rank the candidates of each record and write scores, ranks and the best candidate per record.

        One output line per record: {"id" (or "line"), "line_hash", "prompt", "scores", "ranks", "best",
        "best_text", "best_model"?}. A pair record is ranked as two candidates (a = 0, b = 1) and marked
        "pair": true. A malformed line (bad bytes too) is reported as "FILE: line N: reason" and skipped. Run
        again with the same --out to resume an interrupted run. --engine ray ranks shards of --shard-size lines
        on a pool of Ray actors and merges them into --out in input order, each record exactly once, also after
        a kill or a lost node (the work in progress waits in OUT.parts/). Exit status: 0 when every readable
        line was handled (bad lines included); 1 when an input is cut short or corrupt (after ranking every
        line before the damage), changed since --out was written, the ranker cannot be loaded, or the Ray job
        fails; 2 for a bad option or argument.
        """
        from blender_core.batch.rank_file import rank_file
        from blender_core.batch.ray_engine import rank_with_ray
        from blender_core.batch.sharded import run_sharded
        from blender_core.batch.shards import JobSpec, LocalExecutor, RankRows

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
            "errors_path": errors,
            "show_progress": not no_progress,
            "on_error": error_printer(files),
        }
        job: Callable[[], BatchRankReport]
        if settings is not None:
            options = ray_ranker_options(model, settings, batch_size=batch_size, device=device)

            def job() -> BatchRankReport:
                return rank_with_ray(
                    list(files),
                    out,
                    model,
                    ranker_options=options,
                    ray_settings=settings,
                    strategy=strategy,
                    shard_size=shard_size,
                    chunk_size=chunk_size,
                    score_key=score_key,
                    **common,
                )

        else:
            ranker, shown = load_local_ranker(model, device=device, batch_size=batch_size)
            if len(files) == 1:

                def job() -> BatchRankReport:
                    return rank_file(
                        ranker,
                        files[0],
                        out,
                        strategy=strategy,
                        chunk_size=chunk_size,
                        score_key=score_key,
                        **common,
                    )

            else:

                def job() -> BatchRankReport:
                    spec = JobSpec(RankRows(), strategy, chunk_size, score_key, shown)
                    return run_sharded(
                        list(files), out, LocalExecutor(ranker), job=spec, shard_size=shard_size, **common
                    )

        run_batch(job, out, errors)
