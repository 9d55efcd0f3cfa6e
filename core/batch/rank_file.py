"""Batch ranking of candidate sets in JSON-lines or Parquet files, resumable, exactly once and tolerant of bad
lines: :func:`rank_files` (any inputs, ``engine="local"`` or ``"ray"``) and :func:`rank_file` (one input, a
ranker object, this process). Both run on the one batch engine (:mod:`blender_core.batch.sharded`).

One JSON line per record, in input order::

    {"id": "q17", "line": 17, "line_hash": "9c1e0f4b2a7d5e13", "prompt": "...", "scores": [0.8, -0.3, ...],
     "ranks": [1, 3, ...], "best": 0, "best_text": "...", "best_model": "gpt-4"}

A record is keyed by its ``id`` (``idx`` for MixInstruct) when it has one, else by its line number
(``"line": 12`` instead of ``"id"``), and stores ``line_hash``, a fingerprint of its input line. On a
second run over the same output, records whose key is already there are skipped, so an interrupted run
resumes where it stopped; a last output line cut short by a crash is dropped and that record ranked
again. The output records the settings that produced it in ``OUT.settings.json`` (the ranker, its revision and
scoring options, the strategy; :mod:`blender_core.batch.settings`): a run with other settings is refused
(:class:`~blender_core.batch.settings.SettingsMismatchError`) unless it starts over (``overwrite=True``). Resuming checks that the input is still the one the output was ranked from
(:mod:`blender_core.batch.resume`): a record keyed by line number whose line changed stops the run
before anything is ranked (:class:`~blender_core.batch.resume.InputChangedError`). A record with an id is
matched by id wherever its line now stands; when its text changed, its earlier ranking is kept, a
warning says so, and the report lists the line in ``changed``.

Records are ranked in chunks (every comparison of a chunk batched together) and reach the output a shard
(``shard_size`` input lines) at a time, through a part file merged in input order, so a run stopped part
way loses at most the shard in progress (:mod:`blender_core.batch.parts`).

Input lines may be in any format of :mod:`blender_core.data`; a Parquet input (``.parquet``) is read row by
row, a row standing for a line (:mod:`blender_core.batch.sources`). A pair (``{prompt, a, b, label}``) is
ranked as a set of two candidates (``a`` is candidate 0, ``b`` candidate 1; its label is not used). A
line that is not UTF-8, not valid JSON, nested more than 100 deep, longer than 16 MiB (skipped without
being held), holds a lone surrogate (``\\ud800`` without its pair), matches no format, or has fewer than two
candidates, and a record whose output cannot be written as UTF-8, is reported as ``line N: <reason>`` and
skipped; it never stops the run (:func:`~blender_core.data.lines.parse_json_line`). Each line is decoded on
its own, so a bad byte spoils only its line. A ``.gz`` input that is cut short or corrupt has every complete
line before the damage ranked and written, then raises :class:`PartialInputError` naming the last line read;
run again on the complete file to rank the rest.

It needs only the :class:`~blender_core.ranking.Ranker` interface (``rank``), so any ranker works; batch
size, device and the like are loading options of the ranker (``load_ranker(spec, batch_size=...)``).

Example:
    >>> report = rank_files(["sets.jsonl", "more.parquet"], "ranked.jsonl", "llm-blender/PairRM",
    ...                     ranker_options={"batch_size": 64})  # doctest: +SKIP
    >>> report.written, report.skipped, len(report.errors)  # doctest: +SKIP
    (998, 0, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from blender_core.batch.jobs import Engine, run_job
from blender_core.batch.output import read_done
from blender_core.batch.plan import LineError
from blender_core.batch.ray_cluster import RaySettings
from blender_core.batch.resume import InputChangedError
from blender_core.batch.settings import SettingsMismatchError, row_options
from blender_core.batch.sharded import (
    DEFAULT_SHARD_SIZE,
    BatchRankReport,
    PartialInputError,
    RunOptions,
    ShardedReport,
)
from blender_core.batch.shards import JobSpec, RankRows, ShardDone, check_chunk_size
from blender_core.ranking.interface import Ranker
from blender_core.ranking.registry import RankerSpec, spec_name

__all__ = [
    "BatchRankReport",
    "InputChangedError",
    "LineError",
    "PartialInputError",
    "SettingsMismatchError",
    "check_chunk_size",
    "rank_file",
    "rank_files",
    "read_done",
]


def rank_files(
    source: Any,
    out_path: str | Path,
    ranker: RankerSpec = None,
    *,
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
    """Rank every candidate set of the input(s) into ``out_path``: resumable, exactly once, in input order.

    Args:
        source: a path (JSON lines, ``.gz``, Parquet), a ``ray.data.Dataset`` (a row is a record), or a list
            of them; with several inputs every output record has a ``file`` field and records without an id
            are keyed by (file, line) (see :mod:`blender_core.batch.plan`).
        out_path: the output JSON lines file (plain text; a missing folder is created); records already in
            it are skipped. Parts go to ``OUT.parts/`` while the job runs.
        ranker: any spec ``load_ranker`` accepts (a folder, hub id, ``builtin:…``, ``reward:<model>``), or a
            ranker object (on Ray: a picklable one). A spec is loaded when the first shard is ranked.
        engine: ``local`` (this process) or ``ray`` (Ray actors, each loading the ranker once; see
            :mod:`blender_core.batch.ray_executor`).
        ranker_options: loading options for ``load_ranker`` (``batch_size``, ``device``, ``dtype``…); on Ray,
            ``device`` defaults to ``cuda`` for GPU actors and ``cpu`` otherwise.
        ray_settings: where and how the actors run (:class:`~blender_core.batch.ray_cluster.RaySettings`;
            ``engine="ray"`` only).
        strategy: ``full`` (n(n-1) comparisons, scores for every candidate), ``bubble``, ``knockout``
            (2(n-1), for the best one) or ``sort``.
        shard_size: input lines per shard: the unit of work, of retry (Ray), of resume, and of what a stopped
            run loses.
        chunk_size: records per ``rank`` call (their comparisons batched together).
        score_key: MixInstruct only: which score of the candidates' ``scores`` mapping the data uses
            (parsing needs it; ranking ignores the scores).
        errors_path: when given, each skipped line of this run is also written there as
            ``{"line", "error", "text"}`` (``"file"`` too with several inputs; the raw line, to fix and rank
            again; bytes that are not UTF-8 appear as ``\\xNN``; of a line too long, its first KiB).
        show_progress: a tqdm bar over the input records.
        on_error: called with each skipped line (e.g. to print it).
        on_shard: called as each shard's part is written.
        overwrite: start over: delete ``out_path``, the records it remembers, its settings file, ``errors_path``
            and its parts first (an output written with other settings takes no rows otherwise).
        on_start: called once the output is locked and checked, before anything is read or ranked.

    Returns:
        A :class:`~blender_core.batch.sharded.ShardedReport`.

    Raises:
        FileNotFoundError: when an input does not exist.
        ImportError: for a Parquet input without pyarrow, or ``engine="ray"`` without Ray Data.
        ValueError: on an unknown engine or strategy, a chunk or shard size below 1, or an output (or errors
            file) that cannot be written: a folder, an input itself, a gzipped output, no permission.
        InputChangedError: when the output holds records of another version of the input (nothing is
            ranked or written).
        SettingsMismatchError: when the output records other settings (ranker, revision, strategy…) than this
            run's (nothing is loaded, ranked or written); a ``ValueError``.
        JobInterrupted: on Ctrl-C (a ``KeyboardInterrupt`` saying how many records are saved).
        OutputBusyError: when another run is writing the same output (the message names it).
        ShardJobError: when the Ray job fails; the parts written so far are kept for the next run.
        PartialInputError: when an input cannot be read to its end, after ranking and writing every
            complete line before the damage.
    """
    return run_job(
        source,
        out_path,
        ranker,
        JobSpec(RankRows(), strategy, chunk_size, score_key, spec_name(ranker), row_options(ranker_options)),
        RunOptions(shard_size, errors_path, show_progress, on_error, on_shard, overwrite, on_start),
        engine=engine,
        ranker_options=ranker_options,
        ray_settings=ray_settings,
    )


def rank_file(
    ranker: Ranker,
    input_path: str | Path,
    out_path: str | Path,
    *,
    strategy: str = "full",
    chunk_size: int = 32,
    score_key: str | None = None,
    errors_path: str | Path | None = None,
    show_progress: bool = True,
    on_error: Callable[[LineError], None] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ShardedReport:
    """Rank every candidate set of one input with a ranker object, in this process: :func:`rank_files` for
    one file (see it for the arguments and errors).

    Example:
        >>> from blender_core.ranking import load_ranker
        >>> ranker = load_ranker("llm-blender/PairRM", batch_size=64)  # doctest: +SKIP
        >>> report = rank_file(ranker, "sets.jsonl", "ranked.jsonl")  # doctest: +SKIP
    """
    if not isinstance(input_path, (str, Path)):
        raise TypeError(f"rank_file() ranks one file; got {type(input_path).__name__} (use rank_files)")
    return rank_files(
        input_path,
        out_path,
        ranker,
        strategy=strategy,
        shard_size=shard_size,
        chunk_size=chunk_size,
        score_key=score_key,
        errors_path=errors_path,
        show_progress=show_progress,
        on_error=on_error,
    )
