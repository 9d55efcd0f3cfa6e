"""CUDA checks (marker ``gpu``, deselected by default): half-precision ranking agrees with fp32 on the CPU.

Run on a machine with a GPU: ``pytest -m gpu tests/test_gpu.py`` (or ``bash benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from blender_core.compat import Blender
from blender_core.ranking.pairrm.pair_ranker import PairRanker

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

PROMPTS = [
    "Answer briefly. what is the answer to the question?",
    "Write python code. a list of numbers",
    "hello, how are you!",
    "explain the reason because the data is good",
]
CANDIDATES = [
    ["the answer is yes.", "no", "because the first reason is good and the second is better.", "sure"],
    ["print(list(range(3)))", "here is the code: a list of numbers.", "data", "thanks, the result is a list"],
    ["get out!", "hi! I am fine, thanks!", "bye!", "hello, I am good, and you?"],
    ["the data is good because the value is good", "no reason", "first, the data; second, the time", "yes"],
]
# Half precision keeps about 3 significant digits; the tiny model's scores are of order 1.
TOLERANCE = {torch.bfloat16: 0.15, torch.float16: 0.03}


@pytest.fixture(scope="module")
def cpu_scores(tiny_reference_ckpt: Path) -> np.ndarray:
    ranker = PairRanker.from_pretrained(tiny_reference_ckpt, device="cpu", dtype=torch.float32)
    return np.stack([r.scores for r in ranker.rank(PROMPTS, CANDIDATES)])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cuda_agrees_with_fp32_cpu(
    tiny_reference_ckpt: Path, cpu_scores: np.ndarray, dtype: torch.dtype
) -> None:
    ranker = PairRanker.from_pretrained(tiny_reference_ckpt, device="cuda", dtype=dtype)
    assert next(ranker.model.parameters()).dtype == dtype
    scores = np.stack([r.scores for r in ranker.rank(PROMPTS, CANDIDATES)])
    tol = TOLERANCE[dtype]
    assert np.abs(scores - cpu_scores).max() <= tol
    # Every pair that fp32 separates by more than twice the tolerance keeps its order.
    for gpu_row, cpu_row in zip(scores, cpu_scores, strict=True):
        gap = cpu_row[:, None] - cpu_row[None, :]
        clear = gap > 2 * tol
        assert (gpu_row[:, None] - gpu_row[None, :])[clear].min(initial=np.inf) > 0


def test_compat_blender_on_cuda_loads_fp16_as_the_reference(
    tiny_reference_ckpt: Path, cpu_scores: np.ndarray
) -> None:
    blender = Blender({"device": "cuda", "use_tqdm": False})
    blender.loadranker(tiny_reference_ckpt)
    assert blender.ranker is not None
    assert blender.ranker.dtype == torch.float16
    scores = blender.rank(PROMPTS, CANDIDATES, return_scores=True)
    assert np.abs(scores - cpu_scores).max() <= TOLERANCE[torch.float16]
    torch.manual_seed(0)
    best = blender.get_best_of_n(PROMPTS, CANDIDATES)
    assert all(b in c for b, c in zip(best, CANDIDATES, strict=True))
