"""The set-up script and the package metadata are quiet: no setuptools warnings when the package is built,
and a second run of ``scripts/setup.sh`` only checks (no reinstall)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # the {text = ...} table is deprecated (a warning per build)


def test_building_the_package_prints_no_setuptools_warning(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stdout + proc.stderr
    assert list(tmp_path.glob("blender_llm-*.whl"))


def test_a_second_set_up_run_only_checks() -> None:
    env = {**os.environ, "VENV": str(Path(sys.prefix))}
    runs = [
        subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr
    second = runs[1].stdout
    assert "nothing changed" in second
    assert "installing" not in second
    assert "Warning" not in runs[1].stderr
