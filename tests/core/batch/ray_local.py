"""A local Ray for a test module: 2 CPUs, no dashboard, started once and shut down after the module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from blender_core.batch.ray_cluster import RaySettings

#: actors small enough for two to share this machine's 2 CPUs with Ray Data's own work
TWO_ACTORS = RaySettings(actors=2, cpus_per_actor=0.5, max_task_retries=2)
#: one actor, where two would only compete for the CPUs while they load
ONE_ACTOR = RaySettings(actors=1, cpus_per_actor=0.5, max_task_retries=2)


def local_ray() -> Iterator[Any]:
    """Start a new local Ray (never one found on the machine) for the module; the ``ray`` module."""
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
