"""The installed package: importable as blender_core (not as the source folder's name), typed."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import blender_core


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter started outside the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_source_folder_name_is_not_importable(tmp_path: Path) -> None:
    proc = run_python("import core", tmp_path)
    assert proc.returncode == 1
    assert "ModuleNotFoundError: No module named 'core'" in proc.stderr


def test_blender_core_imports_from_anywhere(tmp_path: Path) -> None:
    code = "import blender_core, blender_core.ranking; print(blender_core.PairRanker.__module__)"
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "blender_core.ranking.pairrm.pair_ranker"


def test_typed_and_versioned() -> None:
    assert (Path(blender_core.__file__).parent / "py.typed").is_file()
    assert blender_core.__version__ == version("blender-llm")


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    """`core/` installs under another name, so pyproject lists packages one by one: none may be missing."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    names = {
        "core": "blender_core",
        "langchain_blender": "langchain_blender",
        "llamaindex_blender": "llamaindex_blender",
    }
    found = set()
    for top, name in names.items():
        for init in (root / top).rglob("__init__.py"):
            parts = init.parent.relative_to(root / top).parts
            found.add(".".join((name, *parts)))
    data_only = {"blender_core.assets"}  # the built-in ranker's files, no code
    assert not list((root / "core" / "assets").rglob("*.py"))
    assert found | data_only == listed


def test_the_built_in_rankers_files_are_package_data() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data["blender_core.assets"] == ["**/*"]


def test_the_server_package_is_installed_and_reads_its_config_without_the_serve_extra(tmp_path: Path) -> None:
    """``blender_core.app.serve`` installs with the wheel, and its config (what ``blender-llm serve`` checks
    before anything else) imports none of the ``[serve]`` extra's packages."""
    code = (
        "import sys, blender_core.app.serve.config as c, blender_core.app.serve.run\n"
        "print(c.__name__, sorted(m for m in ('fastapi', 'openai', 'uvicorn', 'langchain_openai') if m in sys.modules))"
    )
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "blender_core.app.serve.config []"
