"""benchmarks/int8_cpu.py on a tiny random PairRM: its ONNX Runtime control equals torch, its int8 model is
quantized, and its decision rule reads the accuracies right. Needs onnxruntime (not a dependency of the
package: the benchmark's own requirement), so it is skipped where that is not installed."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from blender_core.data.records import Pair
from blender_core.ranking.pairrm.pair_ranker import PairRanker

pytest.importorskip("onnxruntime", reason="the int8 benchmark runs on onnxruntime, which is not installed")
onnx = pytest.importorskip("onnx", reason="the int8 benchmark exports with onnx, which is not installed")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PAIRS = [
    Pair(id=str(k), source="t", prompt=prompt, a=a, b=b, label=k % 2)
    for k, (prompt, a, b) in enumerate(
        [
            ("write a poem about the sea", "the sea is blue and the wind is cold", "no"),
            ("explain python code", "python code is a list of instructions for the model", "it is code"),
            ("list three colours", "red", "red, green and blue are three colours of the world"),
            ("what is 42", "42 is a number", "the answer to the question is 42 because it is"),
            ("hello", "hello thanks", "sure, hello " * 30),  # over the candidate limit: truncated
        ]
    )
]


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("int8_cpu")


@pytest.fixture(scope="module")
def onnx_files(bench: ModuleType, tiny_ranker: PairRanker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    bench.export_onnx(tiny_ranker, folder / "fp32.onnx")
    bench.quantize(folder / "fp32.onnx", folder / "int8.onnx", per_channel=True)
    return folder


@pytest.mark.parametrize("exact_batches", [True, False])
def test_ort_fp32_equals_torch(
    bench: ModuleType, tiny_ranker: PairRanker, onnx_files: Path, exact_batches: bool
) -> None:
    # exact_batches=False pads rows to the longest of their batch: the exported mask must be honoured
    torch_side = bench.with_model(tiny_ranker, tiny_ranker.model)
    torch_side.exact_batches = exact_batches
    ort_side = bench.with_model(torch_side, bench.OrtModel(onnx_files / "fp32.onnx"))
    ref, got = bench.score_pairs(torch_side, PAIRS), bench.score_pairs(ort_side, PAIRS)
    assert np.abs(ref.ab).max() > 1e-3  # the logits are not all zero, so equality says something
    np.testing.assert_allclose(got.ab, ref.ab, atol=bench.CONTROL_TOLERANCE)
    np.testing.assert_allclose(got.ba, ref.ba, atol=bench.CONTROL_TOLERANCE)


def test_int8_model_is_quantized_and_scores(
    bench: ModuleType, tiny_ranker: PairRanker, onnx_files: Path
) -> None:
    ops = {n.op_type for n in onnx.load(str(onnx_files / "int8.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    scores = bench.score_pairs(bench.with_model(tiny_ranker, bench.OrtModel(onnx_files / "int8.onnx")), PAIRS)
    assert np.isfinite(scores.margin).all()
    assert scores.margin.shape == (len(PAIRS),)


def test_largest_change_is_the_decision_measure(bench: ModuleType) -> None:
    base = {"PandaLM": 0.691, "LLMBar": 0.510}
    assert bench.largest_change({"PandaLM": 0.695, "LLMBar": 0.490}, base) == pytest.approx(0.020)
    assert bench.largest_change({"PandaLM": 0.686, "LLMBar": 0.515}, base) <= bench.ONE_POINT
    with pytest.raises(ValueError, match="same sets"):
        bench.largest_change({"PandaLM": 0.7}, base)
