"""Batch ranking and preference labelling past one machine: Ray Data carries the shards, Ray actors rank them.

:func:`rank_with_ray` is :func:`~blender_core.batch.rank_file.rank_file` on a Ray cluster: the same input
formats (JSON lines, ``.gz``, and Parquet; or a ``ray.data.Dataset``; or several of them), the same output
lines, the same bad-line reports, the same resume. The driver (this process) reads the inputs once, as
:mod:`blender_core.batch.sharded` says, and turns the shards still to rank into a Ray Dataset, one block per
shard; ``Dataset.map_batches`` runs them on a fixed pool of actors (``ActorPoolStrategy``), each of which
loads the ranker once (``load_ranker(spec, **options)``; any spec it accepts) and, per shard, ranks its
records in chunks (the ranker batches and sorts by length each chunk's comparisons, as the single-process
path does) and writes the shard's part file (:func:`~blender_core.batch.shards.rank_shard`). The driver
merges the parts into the output in input order. Where the actors run, and joining the cluster, is
:mod:`blender_core.batch.ray_cluster`.

Failures are Ray's to handle: a dead actor is restarted (``max_restarts=-1``) and its shard retried
(``max_task_retries``, a limit so that a shard that kills its actor every time fails the run instead of
looping); a node that dies takes its actors with it, and they are restarted on the nodes left; outputs lost
with a node are rebuilt from lineage. A shard ranked twice by these retries writes the same part twice
(atomically, to the same name), and the driver merges each part once, so the output has every record
exactly once (:mod:`blender_core.batch.parts`).

On a cluster, the output's folder must be on storage that every node sees (the actors write the parts
there), and every node needs this package and the ranker (a hub id is fetched by each node, a folder must
be on shared storage too).

Example:
    >>> from blender_core.batch.ray_cluster import RaySettings
    >>> report = rank_with_ray(["a.jsonl", "b.parquet"], "ranked.jsonl", "llm-blender/PairRM",
    ...                        ray_settings=RaySettings(actors=4, gpus_per_actor=1))  # doctest: +SKIP
    >>> report.written, report.shards_ranked  # doctest: +SKIP
    (20000, 79)
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blender_core.batch.plan import LineError
from blender_core.batch.ray_cluster import RaySettings, connect, import_ray
from blender_core.batch.sharded import DEFAULT_SHARD_SIZE, ShardedReport, ShardJobError, run_sharded
from blender_core.batch.shards import JobSpec, RankRows, ShardDone, ShardTask, rank_shard
from blender_core.batch.sources import FileInput, Input, row_to_line
from blender_core.ranking.registry import RankerSpec, check_ranker_spec, load_ranker, spec_name

logger = logging.getLogger(__name__)


def _same(batch: Any) -> Any:
    """The identity on a batch (a derived Dataset, whose settings may be changed without touching the caller's)."""
    return batch


@dataclass(frozen=True)
class DatasetInput:
    """The rows of a ``ray.data.Dataset`` as an input: row ``n`` (from 1, in the Dataset's order) is line ``n``,
    given to the parser as its JSON (a null is a missing field, as for Parquet)."""

    dataset: Any
    name: str = "dataset"

    def lines(self) -> Iterator[tuple[int, bytes]]:
        view = self.dataset.map_batches(_same, batch_format="pyarrow")
        view.context.execution_options.preserve_order = True  # row numbers must be the same every run
        view.context.enable_progress_bars = False
        for n, row in enumerate(view.iter_rows(), start=1):
            yield n, row_to_line(row)

    def count(self) -> int | None:
        return None


def as_ray_inputs(source: Any) -> list[Input]:
    """Paths, Inputs and ``ray.data.Dataset`` objects (alone or in a list) as a job's inputs."""
    many = source if isinstance(source, (list, tuple)) else [source]
    inputs: list[Input] = []
    datasets = 0
    for s in many:
        if isinstance(s, (str, Path)):
            inputs.append(FileInput.of(s))
        elif hasattr(s, "lines") and hasattr(s, "name"):
            inputs.append(s)
        elif hasattr(s, "map_batches") and hasattr(s, "iter_rows"):
            datasets += 1
            inputs.append(DatasetInput(s, "dataset" if datasets == 1 else f"dataset{datasets}"))
        else:
            raise TypeError(
                f"an input must be a path, a ray.data.Dataset or a list of them; got {type(s).__name__}"
            )
    return inputs


class _ShardActor:
    """A Ray Data actor: loads the ranker once, then ranks one shard per call and writes its part."""

    def __init__(
        self, ranker: RankerSpec, options: Mapping[str, Any], job: JobSpec, folder: str, num_threads: int
    ) -> None:
        if num_threads > 0:
            import torch

            torch.set_num_threads(num_threads)
        ray = import_ray()
        self.node = str(ray.get_runtime_context().get_node_id())
        self.ranker = load_ranker(ranker, **options)
        self.job = job
        self.folder = folder

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"name": [], "records": [], "rows": [], "node": []}
        for text in batch["task"]:
            done = rank_shard(
                self.ranker,
                ShardTask.from_json(str(text)),
                maker=self.job.maker,
                strategy=self.job.strategy,
                chunk_size=self.job.chunk_size,
                score_key=self.job.score_key,
                folder=self.folder,
                node=self.node,
            )
            out["name"].append(done.name)
            out["records"].append(done.records)
            out["rows"].append(done.rows)
            out["node"].append(done.node)
        return out


@dataclass(frozen=True)
class RayExecutor:
    """Ranks the shards on a pool of Ray actors, through Ray Data (see the module docstring)."""

    ranker: RankerSpec
    options: Mapping[str, Any] = field(default_factory=dict)
    settings: RaySettings = field(default_factory=RaySettings)

    def plan(self, ray: Any, tasks: int) -> tuple[int, float]:
        """How many actors, and how many GPUs each, for ``tasks`` shards on the cluster Ray runs."""
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        gpus = self.settings.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if cluster_gpus > 0 else 0.0
        actors = self.settings.actors
        if actors is None:
            actors = max(1, int(cluster_gpus // gpus)) if gpus > 0 else 1
        return max(1, min(actors, tasks)), float(gpus)

    def run(self, tasks: Sequence[ShardTask], folder: Path, job: JobSpec) -> Iterator[ShardDone]:
        if not tasks:
            return
        ray = connect(self.settings)
        actors, gpus = self.plan(ray, len(tasks))
        options = dict(self.options)
        if isinstance(self.ranker, (str, Path)) or self.ranker is None:
            options.setdefault("device", "cuda" if gpus > 0 else "cpu")
        logger.info(
            "ranking %d shards on %d Ray actors (%g GPU, %g CPU each)",
            len(tasks),
            actors,
            gpus,
            self.settings.cpus_per_actor,
        )
        shards = ray.data.from_items([{"task": t.to_json()} for t in tasks], override_num_blocks=len(tasks))
        shards.context.enable_progress_bars = False
        shards.context.print_on_execution_start = False
        remote: dict[str, Any] = {"max_restarts": -1, "max_task_retries": self.settings.max_task_retries}
        remote.update(self.settings.remote_args)
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing actor options such as max_task_retries to map_batches, and has no other
            # way to bound a shard's retries yet (its default retries without limit)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
            ranked = shards.map_batches(
                _ShardActor,
                batch_size=1,  # one shard per call: a shard is the unit of retry
                compute=ray.data.ActorPoolStrategy(size=actors),
                fn_constructor_kwargs={
                    "ranker": self.ranker,
                    "options": options,
                    "job": job,
                    "folder": str(folder.resolve()),
                    "num_threads": self.settings.num_threads,
                },
                num_cpus=self.settings.cpus_per_actor,
                num_gpus=gpus,
                **remote,
            )
        try:
            for row in ranked.iter_rows():
                yield ShardDone(str(row["name"]), int(row["records"]), int(row["rows"]), str(row["node"]))
        except Exception as exc:
            raise ShardJobError(
                f"the Ray job failed: {_root_cause(exc)}. The shards ranked so far are kept in {folder}; run the "
                "same command again to resume"
            ) from exc


def _root_cause(exc: BaseException) -> str:
    """What failed, in one line: the user's exception that a Ray error reports in its remote traceback (Ray
    passes it on as text), else the error's first line."""
    text = str(exc)
    for name, message in re.findall(r"^([A-Za-z_][\w.]*): (.+)$", text, re.M):
        if not name.startswith("ray."):
            return f"{name.rsplit('.', 1)[-1]}: {message}"
    first = text.strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"


def run_on_ray(
    source: Any,
    out_path: str | Path,
    ranker: RankerSpec = None,
    *,
    job: JobSpec,
    ranker_options: Mapping[str, Any] | None = None,
    ray_settings: RaySettings | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    errors_path: str | Path | None = None,
    show_progress: bool = True,
    on_error: Callable[[LineError], None] | None = None,
    on_shard: Callable[[ShardDone], None] | None = None,
) -> ShardedReport:
    """Run a sharded job (:func:`~blender_core.batch.sharded.run_sharded`) on Ray actors."""
    check_ranker_spec(ranker)
    ray = import_ray()  # before reading anything: a missing extra is the first thing to say
    if not (ranker is None or isinstance(ranker, (str, Path))):
        try:  # an object travels to the actors pickled; say so now rather than when the actors start
            ray.cloudpickle.dumps(ranker)
        except Exception as exc:
            raise ValueError(
                f"the ranker object {spec_name(ranker)!r} cannot be sent to Ray actors ({type(exc).__name__}: {exc}); "
                "pass its spec instead (a folder, hub id, 'builtin:…' or 'reward:<model>'), which each actor loads"
            ) from exc
    job = dataclasses.replace(job, ranker_name=job.ranker_name or spec_name(ranker))
    executor = RayExecutor(ranker, dict(ranker_options or {}), ray_settings or RaySettings())
    return run_sharded(
        as_ray_inputs(source),
        out_path,
        executor,
        job=job,
        shard_size=shard_size,
        errors_path=errors_path,
        show_progress=show_progress,
        on_error=on_error,
        on_shard=on_shard,
    )


def rank_with_ray(
    source: str | Path | Any | Iterable[Any],
    out_path: str | Path,
    ranker: RankerSpec = None,
    *,
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
) -> ShardedReport:
    """Rank every candidate set of the input(s) on Ray actors into ``out_path``, exactly once, resumably.

    The output is :func:`~blender_core.batch.rank_file.rank_file`'s, line for line, for one input (in input
    order; scores equal up to float noise of batching). Run it again with the same arguments after an
    interruption and it goes on where it stopped.

    Args:
        source: a path (JSON lines, ``.gz``, Parquet), a ``ray.data.Dataset`` (a row is a record), or a list
            of them; with several inputs every output record has a ``file`` field and records without an id
            are keyed by (file, line) (see :mod:`blender_core.batch.plan`).
        out_path: the output JSON lines file; parts go to ``OUT.parts/`` while the job runs.
        ranker: any spec ``load_ranker`` accepts (a folder, hub id, ``builtin:…``, ``reward:<model>``, or a
            picklable ranker object); each actor loads it once.
        ranker_options: loading options (``batch_size``, ``device``, ``dtype``…); ``device`` defaults to
            ``cuda`` for GPU actors and ``cpu`` otherwise.
        ray_settings: where and how the actors run (:class:`~blender_core.batch.ray_cluster.RaySettings`).
        strategy: ``full``, ``bubble``, ``knockout`` or ``sort``.
        shard_size: input lines per shard: the unit of work, retry and resume.
        chunk_size: records per ``rank`` call inside an actor.
        score_key: MixInstruct only (see ``rank_file``).
        errors_path: each skipped line of this run is also written there.
        show_progress: a tqdm bar over the records to rank.
        on_error: called with each skipped line.
        on_shard: called as each shard's part is written (with the node that ranked it).

    Returns:
        A :class:`~blender_core.batch.sharded.ShardedReport`.

    Raises:
        ImportError: when Ray Data is not installed (naming the ``[ray]`` extra).
        ShardJobError: when the Ray job fails; the parts written so far are kept for the next run.
        FileNotFoundError, ValueError, InputChangedError, PartialInputError: as ``rank_file``.
    """
    return run_on_ray(
        source,
        out_path,
        ranker,
        job=JobSpec(RankRows(), strategy, chunk_size, score_key),
        ranker_options=ranker_options,
        ray_settings=ray_settings,
        shard_size=shard_size,
        errors_path=errors_path,
        show_progress=show_progress,
        on_error=on_error,
        on_shard=on_shard,
    )
