"""Batch ranking past one machine: :func:`rank_with_ray`, which is
:func:`~blender_core.batch.rank_file.rank_files` with ``engine="ray"``.

The one batch engine (:mod:`blender_core.batch.sharded`) runs the job, with the Ray executor
(:mod:`blender_core.batch.ray_executor`: Ray Data carries the shards, a pool of Ray actors ranks them, each
loading the ranker once) instead of the local one: the same inputs (JSON lines, ``.gz``, Parquet, a
``ray.data.Dataset``, or several), the same output, byte for byte but for float noise of batching, the same
bad-line reports, resume, lock and exactly-once merge. Where the actors run, and joining a cluster, is
:mod:`blender_core.batch.ray_cluster`. On a cluster, the output's folder must be on storage that every node
sees (the actors write the parts there), and every node needs this package and the ranker.

Example:
    >>> from blender_core.batch.ray_cluster import RaySettings
    >>> report = rank_with_ray(["a.jsonl", "b.parquet"], "ranked.jsonl", "llm-blender/PairRM",
    ...                        ray_settings=RaySettings(actors=4, gpus_per_actor=1))  # doctest: +SKIP
    >>> report.written, report.shards_ranked  # doctest: +SKIP
    (20000, 79)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blender_core.batch.rank_file import rank_files
from blender_core.batch.sharded import ShardedReport
from blender_core.ranking.registry import RankerSpec


def rank_with_ray(
    source: Any, out_path: str | Path, ranker: RankerSpec = None, **options: Any
) -> ShardedReport:
    """Rank every candidate set of the input(s) on Ray actors into ``out_path``, exactly once, resumably:
    ``rank_files(source, out_path, ranker, engine="ray", **options)``, whose arguments it takes
    (``ray_settings``, ``ranker_options``, ``strategy``, ``shard_size``, ``chunk_size``, ``errors_path``…).

    Raises:
        ImportError: when Ray Data is not installed (naming the ``[ray]`` extra); the rest as ``rank_files``.
    """
    return rank_files(source, out_path, ranker, engine="ray", **options)
