"""Which executor runs a job: ``engine="local"`` (this process) or ``"ray"`` (Ray actors), for ``rank_files`` and
``label_pairs`` alike. Both go through the one engine, :func:`~blender_core.batch.sharded.run_sharded`; only
who ranks the shards differs.

Example:
    >>> from blender_core.batch.shards import JobSpec, RankRows
    >>> report = run_job("sets.jsonl", "ranked.jsonl", "builtin:pairrm-minilm-l6",
    ...                  JobSpec(RankRows()), engine="local")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from blender_core.base.validation import check_choice
from blender_core.batch.ray_cluster import RaySettings
from blender_core.batch.ray_executor import ray_executor
from blender_core.batch.sharded import RunOptions, ShardedReport, run_sharded
from blender_core.batch.shards import Executor, JobSpec, LocalExecutor
from blender_core.ranking.registry import RankerSpec, check_ranker_spec

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")


def executor_for(
    engine: str,
    ranker: RankerSpec,
    ranker_options: Mapping[str, Any] | None = None,
    ray_settings: RaySettings | None = None,
) -> Executor:
    """The executor of ``engine`` for ``ranker`` (a spec, or a ranker object), checked before anything is read.

    Raises:
        ValueError: for an unknown engine, ``ray_settings`` without the Ray engine, or a ranker spec that cannot
            be one.
        ImportError: for the Ray engine without Ray Data installed.
    """
    check_choice(engine, ENGINES, "engine")
    if engine == "ray":
        return ray_executor(ranker, ranker_options, ray_settings)
    if ray_settings is not None:
        raise ValueError("ray_settings is for engine='ray'; the local engine runs in this process")
    return LocalExecutor(check_ranker_spec(ranker), dict(ranker_options or {}))


def run_job(
    source: Any,
    out_path: str | Path,
    ranker: RankerSpec,
    job: JobSpec,
    run: RunOptions,
    *,
    engine: str = "local",
    ranker_options: Mapping[str, Any] | None = None,
    ray_settings: RaySettings | None = None,
) -> ShardedReport:
    """Run ``job`` over ``source`` into ``out_path`` with the executor of ``engine`` (see :func:`executor_for`)."""
    return run_sharded(source, out_path, executor_for(engine, ranker, ranker_options, ray_settings), job, run)
