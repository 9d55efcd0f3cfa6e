"""The server's local Hugging Face backends have no async path of their own: the ensemble calls them in its
bounded daemon threads (never the event loop's shared executor, where a hung generation keeps a worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("langchain_huggingface")

from blender_core.app.serve.backends import build_served
from blender_core.app.serve.config import parse_config
from blender_core.ensemble import Blocking
from langchain_blender.backends import abackend_calls
from langchain_blender.sync_only import runs_in_executor


def test_local_backends_run_in_the_engines_threads(tiny_reference_ckpt: Path, tiny_causal_lm_dir: Path) -> None:
    local = {"name": "local", "kind": "huggingface", "model": str(tiny_causal_lm_dir), "max_new_tokens": 4}
    config = parse_config({"ensemble": {"ranker": str(tiny_reference_ckpt)}, "backends": [local]})
    backends = build_served(config, {}).llm.backends
    assert runs_in_executor(backends["local"])
    calls = abackend_calls(backends, [], None, {})
    assert isinstance(calls["local"], Blocking)
