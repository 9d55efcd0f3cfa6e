"""Where and how the Ray actors run, and joining the cluster they run on.

:class:`RaySettings` says where (the cluster's address) and how (how many actors, the GPUs and CPUs each
reserves, how often a shard is retried, torch threads, more actor options) the actors of the Ray engine
(:mod:`blender_core.batch.ray_executor`) run; :func:`connect` joins that cluster (or the Ray this process
already joined, or a new local Ray); :func:`import_ray` imports Ray Data or says which extra to install.

Example:
    >>> RaySettings(actors=4, gpus_per_actor=1).cpus_per_actor
    1.0
    >>> ray = connect(RaySettings(address="auto"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blender_core.batch.local_ray import start_local_ray

RAY_EXTRA_HINT = 'pip install "blender-llm[ray]"'


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ``ImportError`` naming the extra to install."""
    try:
        import ray
        import ray.data  # Ray Data is a part of the ray package that may be missing
    except ImportError as exc:
        raise ImportError(f"the Ray engine needs Ray Data, which is not installed: {RAY_EXTRA_HINT}") from exc
    return ray


@dataclass(frozen=True)
class RaySettings:
    """Where and how the actors run.

    Attributes:
        address: the cluster to join (``ray start --head`` prints it; ``"auto"``: the one running here); None:
            the Ray this process already joined, else the cluster ``RAY_ADDRESS`` names, else a new Ray on this
            machine (never Ray's search for a cluster started here earlier: pass ``"auto"`` for that).
        actors: actors ranking at once; None: one per GPU when the cluster has GPUs, else 1.
        gpus_per_actor: GPUs each actor reserves (a fraction shares a GPU); None: 1 when the cluster has
            GPUs, else 0 (CPU actors).
        cpus_per_actor: CPUs each actor reserves; below 1 lets actors share a core on a small machine.
        max_task_retries: how often a shard is retried when its actor dies (then the run fails, keeping its
            parts); -1: without limit.
        num_threads: torch threads per actor (0: torch's default, which Ray bases on ``cpus_per_actor``).
        remote_args: more Ray actor options, passed as they are (e.g. ``{"scheduling_strategy": "SPREAD"}``).
    """

    address: str | None = None
    actors: int | None = None  # one actor per GPU is what keeps every GPU busy
    gpus_per_actor: float | None = None  # a PairRM fits one GPU many times over, but one actor keeps it busy
    cpus_per_actor: float = 1.0  # the actor mostly waits on torch, whose threads Ray sizes from this
    max_task_retries: int = 3  # enough for a node lost or two; a shard that always kills its actor must stop
    num_threads: int = 0  # Ray sets OMP_NUM_THREADS from cpus_per_actor, which torch follows
    remote_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.actors is not None and (
            isinstance(self.actors, bool) or not isinstance(self.actors, int) or self.actors < 1
        ):
            raise ValueError(f"actors must be a positive int or None, got {self.actors!r}")
        for name in ("gpus_per_actor", "cpus_per_actor"):
            value = getattr(self, name)
            if value is None and name == "gpus_per_actor":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.cpus_per_actor == 0 and not self.gpus_per_actor:
            raise ValueError("an actor needs some CPU or GPU: cpus_per_actor and gpus_per_actor are both 0")
        if (
            isinstance(self.max_task_retries, bool)
            or not isinstance(self.max_task_retries, int)
            or self.max_task_retries < -1
        ):
            raise ValueError(f"max_task_retries must be an int >= -1, got {self.max_task_retries!r}")
        if (
            isinstance(self.num_threads, bool)
            or not isinstance(self.num_threads, int)
            or self.num_threads < 0
        ):
            raise ValueError(f"num_threads must be an int >= 0, got {self.num_threads!r}")


def connect(settings: RaySettings) -> Any:
    """Join Ray as ``settings.address`` says; the ``ray`` module.

    Nothing to do when this process already joined one. Without an address: the cluster ``RAY_ADDRESS``
    names (as a Ray job sets it), else a new Ray on this machine, without its dashboard, in a folder of its own
    (:func:`~blender_core.batch.local_ray.start_local_ray`); the cluster that ``ray start`` started here is joined
    with ``address="auto"``.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if settings.address is not None or os.environ.get("RAY_ADDRESS"):
        ray.init(address=settings.address)
    else:  # never Ray's search of /tmp/ray, which may find a cluster that is gone, or dying
        start_local_ray(ray)
    return ray
