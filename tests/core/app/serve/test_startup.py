"""The real ``blender-llm serve`` that cannot start, in a subprocess: one line in the config's (or the flags')
terms, no traceback (unless ``--log-level debug``), exit status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")

from tests.core.app.serve.support import ENV, toml_config
from tests.helpers.openai_upstreams import FakeUpstream

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"])]

BACKEND = '[[backends]]\nname = "a"\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(tmp_path: Path, config: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``blender-llm serve`` (offline, an empty Hugging Face cache) until it exits: (status, output)."""
    path = tmp_path / "ensemble.toml"
    path.write_text(config)
    cmd = [sys.executable, "-m", "blender_core.app.cli", "serve", "--config", str(path), *args]
    environ = {
        **os.environ,
        **ENV,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=180)
    return done.returncode, done.stdout + done.stderr


def test_no_ranker_offline_is_one_line_naming_the_key_and_exit_2(tmp_path: Path) -> None:
    """Before: a 104-line traceback ending in "Application startup failed. Exiting.", exit status 3."""
    status, out = serve(tmp_path, BACKEND, "--port", str(free_port()))
    assert status == 2, out
    assert out.count("\n") == 1, out
    assert out.startswith("error: ensemble.ranker: not set, and the default ranker 'llm-blender/PairRM'")
    assert 'set ranker = "builtin:pairrm-minilm-l6" in [ensemble]' in out
    assert "Traceback" not in out

    status, out = serve(tmp_path, BACKEND, "--port", str(free_port()), "--log-level", "debug")
    assert status == 2
    assert "Traceback (most recent call last)" in out  # asked for
    assert out.splitlines()[-1].startswith("error: ensemble.ranker: not set")


def test_a_port_in_use_is_one_line_naming_the_flag_before_anything_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the default ranker cannot load offline: only a check before loading it names the port
        status, out = serve(tmp_path, BACKEND, "--port", str(port))
    assert status == 2, out
    assert (
        out
        == f"error: --port {port}: 127.0.0.1:{port} is already in use (another server?); stop it or choose another port\n"
    )


def test_a_local_model_that_cannot_load_names_its_backend(tmp_path: Path) -> None:
    """Before: the loader's message alone, exit status 1."""
    pytest.importorskip("transformers")
    table = f'[[backends]]\nname = "smol"\nkind = "huggingface"\nmodel = "{tmp_path}"\n'
    status, out = serve(tmp_path, table, "--port", str(free_port()))
    assert status == 2, out
    assert out.count("\n") == 1, out
    assert out.startswith(f"error: backends[0] ('smol').model: '{tmp_path}' is not a local model folder")


def test_a_metrics_port_in_use_names_the_config_key(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    with FakeUpstream("fast") as fast, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = toml_config(tiny_reference_ckpt, [fast], server={"metrics": "port", "metrics_port": port})
        status, out = serve(tmp_path, config, "--port", str(free_port()))
    assert status == 2, out
    assert out.count("\n") == 1, out
    assert out.startswith(f"error: server.metrics_port {port}: 127.0.0.1:{port} is already in use")
