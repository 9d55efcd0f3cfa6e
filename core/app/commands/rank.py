"""``blender-llm rank FILE... --out OUT``: rank every candidate set of JSON-lines or Parquet files (resumable), in
this process or on Ray actors (``--engine ray``). The options and helpers it shares with ``label-pairs`` are
:mod:`blender_core.app.commands._batch`'s.
"""

from __future__ import annotations

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
        overwrite: Overwrite = False,
    ) -> None:
        """Rank the candidates of each record and write scores, ranks and the best candidate per record.

        One output line per record: {"id" (or "line"), "line_hash", "prompt", "scores", "ranks", "best",
        "best_text", "best_model"?}. A pair record is ranked as two candidates (a = 0, b = 1) and marked
        "pair": true. A malformed line (bad bytes, a lone surrogate, nesting past 100, over 16 MiB too) is
        reported as "FILE: line N: reason" and skipped. Run again with the same --out to resume an interrupted
        run. Shards of --shard-size lines are ranked in this
        process, or with --engine ray on a pool of Ray actors, and merged into --out in input order, each record
        exactly once, also after a kill or a lost node (the work in progress waits in OUT.parts/); a second run
        on the same --out is refused. Exit status: 0 when every readable line was handled (bad lines
        included); 1 when an input is cut short or corrupt (after ranking every line before the damage),
        changed since --out was written, another run is writing --out, the ranker cannot be loaded, or the Ray
        job fails; 2 for a bad option or argument.
        """
        options = BatchOptions.of(locals())
        from blender_core.batch.rank_file import rank_files

        run_command(rank_files, options)
