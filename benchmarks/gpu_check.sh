#!/usr/bin/env bash
# GPU checks on a borrowed CUDA machine, from the repository root, in about 5-8 minutes:
#   1. a venv that reuses the machine's CUDA torch and transformers (--system-site-packages), with this
#      package installed into it without dependencies (works offline);
#   2. pytest -m gpu (tests/core/test_gpu.py: bf16 / fp16 on CUDA vs fp32 on the CPU);
#   3. benchmarks/ranker_speed.py --gpu: PairRM-size random DeBERTa, comparisons/s of ours (bf16, fp16) and of
#      llm-blender 0.0.2 (fp16) when its venv can be set up there (it needs transformers<5).
#
#   bash benchmarks/gpu_check.sh
#
# Environment: PYTHON (default python3), VENV (default .gpuvenv), REF_VENV (default .refvenv-gpu),
# WHEELS (a folder of wheels for an offline machine: transformers<5 and its tokenizers / huggingface-hub,
# llm-blender==0.0.2, dataclasses-json and its needs), OUT (default benchmarks/out).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.gpuvenv}
REF_VENV=${REF_VENV:-.refvenv-gpu}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
status=0
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== venv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV" || exit 1
fi
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . || exit 1
"$VENV/bin/python" -c "import torch, transformers, blender_core.ranking.pairrm.pair_ranker as r; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__)" || exit 1

echo "== pytest -m gpu"
# addopts are cleared: the default ones deselect gpu and need pytest-socket, which such machines may lack.
timeout 180 "$VENV/bin/python" -m pytest -o addopts="" --strict-markers -m gpu -q -rs tests/core/test_gpu.py \
  2>&1 | tee "$OUT/pytest_gpu.log" || status=1

echo "== reference venv $REF_VENV"
if [ ! -x "$REF_VENV/bin/python" ] || ! "$REF_VENV/bin/python" -c "import llm_blender" 2>/dev/null; then
  "$PYTHON" -m venv --system-site-packages "$REF_VENV"
  if [ -n "${WHEELS:-}" ]; then
    pip_from=(--no-index --find-links "$WHEELS")
  else
    pip_from=()
  fi
  timeout 240 "$REF_VENV/bin/python" -m pip install -q ${pip_from[@]+"${pip_from[@]}"} "transformers<5" llm-blender==0.0.2 \
    || echo "could not install llm-blender there (offline? set WHEELS); the reference is skipped"
fi

echo "== ranker_speed.py --gpu"
timeout 300 "$VENV/bin/python" benchmarks/ranker_speed.py --gpu --ref-venv "$REF_VENV" --out "$OUT" \
  2>&1 | tee "$OUT/ranker_speed_gpu.log" || status=1
exit $status
