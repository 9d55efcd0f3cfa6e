"""The Ray executor of the one batch engine: Ray Data carries the shards, Ray actors rank them.

:class:`RayExecutor` is an executor of :mod:`blender_core.batch.sharded`: the driver (this process) reads the
inputs, plans the shards and merges their parts, exactly as it does for a run in this process; the executor
turns the shards still to rank into a Ray Dataset, one block per shard, and ``Dataset.map_batches`` runs them
on a fixed pool of actors (``ActorPoolStrategy``), each of which loads the ranker once
(``load_ranker(spec, **options)``; any spec it accepts) and, per shard, ranks its records and writes the
shard's part file with the same :func:`~blender_core.batch.shards.rank_shard` as the local executor. So the
same inputs, output lines, bad-line reports, resume and lock as in this process. Where the actors run, and
joining the cluster, is :mod:`blender_core.batch.ray_cluster`.

Failures are Ray's to handle: a dead actor is restarted (``max_restarts=-1``) and its shard retried
(``max_task_retries``, a limit so that a shard that kills its actor every time fails the run instead of
looping); a node that dies takes its actors with it, and they are restarted on the nodes left; outputs lost
with a node are rebuilt from lineage. A shard ranked twice by these retries writes the same part twice
(atomically, to the same name), and the driver merges each part once, so the output has every record
exactly once (:mod:`blender_core.batch.parts`).

On a cluster, the output's folder must be on storage that every node sees (the actors write the parts
there), and every node needs this package and the ranker (a hub id is fetched by each node, a folder must
be on shared storage too).

Progress: an actor reports each chunk as soon as it is written into the shard's partial part, through a Ray queue
(``ray.util.queue.Queue``, an actor of no CPU) that a thread of the driver reads while the driver waits for shards, so
the bar moves with the records written, also when the whole input is one shard. A report that cannot be sent is
dropped: progress never fails a shard.

Example:
    >>> from blender_core.batch.ray_cluster import RaySettings
    >>> executor = ray_executor("llm-blender/PairRM", {"batch_size": 64}, RaySettings(actors=4))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blender_core.batch.local_ray import note_local_ray
from blender_core.batch.ray_cluster import RaySettings, connect, import_ray
from blender_core.batch.sharded import ShardJobError
from blender_core.batch.shards import JobSpec, Progress, ShardDone, ShardTask, rank_shard
from blender_core.ranking.registry import RankerSpec, check_ranker_spec, load_ranker, spec_name

logger = logging.getLogger(__name__)


class _ShardActor:
    """A Ray Data actor: loads the ranker once, then ranks one shard per call and writes its part."""

    def __init__(
        self,
        ranker: RankerSpec,
        options: Mapping[str, Any],
        job: JobSpec,
        folder: str,
        num_threads: int,
        progress: Any = None,
    ) -> None:
        if num_threads > 0:
            import torch

            torch.set_num_threads(num_threads)
        ray = import_ray()
        self.node = str(ray.get_runtime_context().get_node_id())
        self.ranker = load_ranker(ranker, **options)
        self.job = job
        self.folder = folder
        self.progress = progress  # the driver's queue of (shard, records written), or None

    def _report(self, shard: str, records: int) -> None:
        with contextlib.suppress(Exception):  # progress is best effort: it never fails a shard
            self.progress.put_nowait((shard, records))

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"name": [], "records": [], "rows": [], "node": []}
        for text in batch["task"]:
            task = ShardTask.from_json(str(text))
            report = None if self.progress is None else functools.partial(self._report, task.name)
            done = rank_shard(self.ranker, task, self.job, self.folder, node=self.node, on_chunk=report)
            out["name"].append(done.name)
            out["records"].append(done.records)
            out["rows"].append(done.rows)
            out["node"].append(done.node)
        return out


@dataclass(frozen=True)
class RayExecutor:
    """Ranks the shards on a pool of Ray actors, through Ray Data (see the module docstring); build it with
    :func:`ray_executor`, which checks what can be checked before the inputs are read."""

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

    def run(
        self, tasks: Iterable[ShardTask], folder: Path, job: JobSpec, progress: Progress | None = None
    ) -> Iterator[ShardDone]:
        """Rank every task on the actors (the whole plan at once: Ray schedules it), reporting ``progress`` as the
        actors write chunks."""
        todo = list(tasks)
        if not todo:
            return
        ray = connect(self.settings)
        note_local_ray(folder)  # so that, should this driver be killed, the next run reaps what it leaves
        actors, gpus = self.plan(ray, len(todo))
        options = dict(self.options)
        if isinstance(self.ranker, (str, Path)) or self.ranker is None:
            options.setdefault("device", "cuda" if gpus > 0 else "cpu")
        logger.info(
            "ranking %d shards on %d Ray actors (%g GPU, %g CPU each)",
            len(todo),
            actors,
            gpus,
            self.settings.cpus_per_actor,
        )
        shards = ray.data.from_items([{"task": t.to_json()} for t in todo], override_num_blocks=len(todo))
        shards.context.enable_progress_bars = False  # the job's own bar counts records
        _no_note_of_disabled_bars()
        shards.context.print_on_execution_start = False
        reports = None
        if progress is not None:
            from ray.util.queue import Queue

            reports = Queue(actor_options={"num_cpus": 0})
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
                    "progress": reports,
                },
                num_cpus=self.settings.cpus_per_actor,
                num_gpus=gpus,
                **remote,
            )
        with _Reports(reports, progress) as passing:
            try:
                for row in ranked.iter_rows():
                    passing.drain()  # every chunk of the shard is counted before the shard is
                    yield ShardDone(str(row["name"]), int(row["records"]), int(row["rows"]), str(row["node"]))
            except Exception as exc:
                raise ShardJobError(
                    f"the Ray job failed: {_root_cause(exc)}. The shards ranked so far are kept in {folder}; run "
                    "the same command again to resume"
                ) from exc


class _Reports:
    """While the job runs, a thread of the driver passes on the chunks the actors report (every ``every_s`` seconds,
    and whenever :meth:`drain` is called), so the bar moves while the driver waits for a shard; at the end, the queue
    actor is stopped."""

    def __init__(self, reports: Any, progress: Progress | None, every_s: float = 0.25) -> None:
        self.reports = reports
        self.progress = progress
        self.every_s = every_s
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="blender-llm-ray-progress", daemon=True)

    def __enter__(self) -> _Reports:
        if self.reports is not None and self.progress is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        if self.reports is not None:
            with contextlib.suppress(Exception):
                self.reports.shutdown()

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.drain()

    def drain(self) -> None:
        """Pass on the reports waiting (one reader at a time: none is lost or given twice)."""
        if self.reports is None or self.progress is None:
            return
        with self.lock, contextlib.suppress(Exception):
            waiting = self.reports.qsize()
            for shard, records in self.reports.get_nowait_batch(waiting) if waiting else ():
                self.progress(str(shard), int(records))


def _no_note_of_disabled_bars() -> None:
    """Ray Data warns, once per process, that its progress bars are off; they are off on purpose (the job's own bar
    counts the records), so the note is marked as given."""
    with contextlib.suppress(Exception):
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")


def _root_cause(exc: BaseException) -> str:
    """What failed, in one line: the user's exception that a Ray error reports in its remote traceback (Ray
    passes it on as text), else the error's first line."""
    text = str(exc)
    for name, message in re.findall(r"^([A-Za-z_][\w.]*): (.+)$", text, re.M):
        if not name.startswith("ray."):
            return f"{name.rsplit('.', 1)[-1]}: {message}"
    first = text.strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"


def ray_executor(
    ranker: RankerSpec, ranker_options: Mapping[str, Any] | None, ray_settings: RaySettings | None
) -> RayExecutor:
    """The Ray executor for ``ranker``, once what can be checked before reading anything is checked: Ray Data
    is installed (else an ``ImportError`` naming the extra), the spec is one ``load_ranker`` takes, and a
    ranker object can travel to the actors (pickled)."""
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
    return RayExecutor(ranker, dict(ranker_options or {}), ray_settings or RaySettings())
