"""``rank_with_ray`` on a two-node Ray cluster simulated on this machine (``ray.cluster_utils.Cluster``): a node is
killed while its actor ranks, and the job still ends with every record in the output exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blender_core.batch.parts import parts_folder
from blender_core.batch.rank_file import rank_file
from blender_core.batch.ray_cluster import RaySettings
from blender_core.batch.ray_engine import rank_with_ray
from blender_core.batch.shards import ShardDone
from tests.core.batch.ray_rankers import Slow
from tests.core.batch.records import write_lines
from tests.core.batch.sharded_records import many_sets
from tests.helpers.core_fakes import LengthRanker


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A head node (2 CPUs) and a worker node (1 CPU), each a raylet of its own on this machine, on loopback."""
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    pytest.importorskip("ray.data")
    from ray._private import services
    from ray.cluster_utils import Cluster

    # Ray takes "127.0.0.1" to mean this machine's outward address, found by a UDP probe: keep it on loopback
    monkeypatch.setattr(services, "node_ip_address_from_perspective", lambda *_: "127.0.0.1")
    loopback = {"node_ip_address": "127.0.0.1"}
    # a dead node is noticed in ~1.5 s (Ray's defaults: ~15 s), and a shard's retries are 1 s apart, so that its
    # retries outlast that (each attempt on the dead actor until then counts as one)
    config = {
        "health_check_period_ms": 500,
        "health_check_timeout_ms": 500,
        "health_check_failure_threshold": 3,
        "task_retry_delay_ms": 1000,
    }
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "_system_config": config, **loopback},
    )
    made.add_node(num_cpus=1, **loopback)
    made.wait_for_nodes()
    ray.init(address=made.address, log_to_driver=False)
    try:
        yield made
    finally:
        ray.shutdown()
        made.shutdown()


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_a_node_removed_mid_run_still_gives_every_record_once(cluster: Any, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(40, seed=3))
    rank_file(LengthRanker(), inp, tmp_path / "want.jsonl", show_progress=False)
    (worker,) = cluster.worker_nodes
    removed: list[ShardDone] = []
    shards: list[ShardDone] = []

    def on_shard(done: ShardDone) -> None:
        shards.append(done)
        # once the worker node has ranked a shard, it goes away (its actor with it) while shards are left
        if not removed and done.node == worker.node_id and len(shards) < 10:
            removed.append(done)
            cluster.remove_node(worker, allow_graceful=False)  # killed: a machine lost, not drained

    report = rank_with_ray(
        inp,
        tmp_path / "out.jsonl",
        Slow(LengthRanker(), delay=0.3),  # ~1 s a shard, so the removal lands mid-run
        # one actor per node: SPREAD places them apart; after the removal both run on the head
        ray_settings=RaySettings(
            actors=2, cpus_per_actor=0.5, max_task_retries=3, remote_args={"scheduling_strategy": "SPREAD"}
        ),
        shard_size=2,
        chunk_size=1,
        show_progress=False,
        on_shard=on_shard,
    )
    assert removed, f"the worker node ranked no shard before the end: nodes {[s.node for s in shards]}"
    after = shards[shards.index(removed[0]) + 1 :]
    # the rest ran on the head (a shard the worker had finished before it died may still be reported after)
    assert sum(s.node != worker.node_id for s in after) >= 10
    # every record once, in input order
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert report.written == 40
    assert sorted(s.name for s in shards) == [f"0000-{k:08d}" for k in range(20)]  # each shard reported once
    assert not parts_folder(tmp_path / "out.jsonl").exists()
