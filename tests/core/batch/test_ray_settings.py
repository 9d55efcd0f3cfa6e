"""``blender_core.batch.ray_cluster`` without starting Ray: bad settings are clear errors, and a missing
``[ray]`` extra is named before anything is read."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from blender_core.batch.ray_cluster import RaySettings, import_ray
from blender_core.batch.ray_engine import rank_with_ray
from tests.core.batch.records import SETS, write_lines


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"actors": 0}, r"actors must be a positive int or None, got 0"),
        ({"actors": True}, r"actors must be a positive int or None, got True"),
        ({"gpus_per_actor": -1}, r"gpus_per_actor must be a number >= 0, got -1"),
        ({"cpus_per_actor": float("nan")}, r"cpus_per_actor must be a number >= 0, got nan"),
        (
            {"cpus_per_actor": 0},
            r"an actor needs some CPU or GPU: cpus_per_actor and gpus_per_actor are both 0",
        ),
        ({"max_task_retries": -2}, r"max_task_retries must be an int >= -1, got -2"),
        ({"num_threads": -1}, r"num_threads must be an int >= 0, got -1"),
    ],
)
def test_bad_settings_say_which_and_why(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        RaySettings(**given)


def test_gpu_only_actors_need_no_cpu() -> None:
    assert RaySettings(cpus_per_actor=0, gpus_per_actor=0.5).gpus_per_actor == 0.5


def test_without_the_ray_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray gives: ImportError
    with pytest.raises(
        ImportError, match=r'needs Ray Data, which is not installed: pip install "blender-llm\[ray\]"'
    ):
        import_ray()
    out = tmp_path / "out.jsonl"
    with pytest.raises(ImportError, match=r"blender-llm\[ray\]"):
        rank_with_ray(write_lines(tmp_path / "in.jsonl", SETS), out, "builtin:pairrm-minilm-l6")
    assert not out.exists()
