"""BlendPipeline on its own: rank, choose the top K (and only those reach the fuser), fuse, fall back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from blender_core.base.results import Ranking
from blender_core.ensemble import BlendPipeline, FusionError
from blender_core.fusion.seq2seq import GenFuser
from blender_core.ranking import PairRanker
from blender_core.ranking.registry import load_ranker, loaded_ranker
from blender_core.testing.fusers import make_tiny_gen_fuser
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser

PROMPTS = ["q1", "q2"]
CANDS = [["a", "ccc", "bb", "dddd"], ["only"]]


def test_rank_chooses_the_top_k_in_rank_order() -> None:
    pipeline = BlendPipeline(LengthRanker(), ScriptedFuser(), top_k=2)
    r1, r2 = pipeline.rank(PROMPTS, CANDS)
    assert (r1.best, r1.chosen, r1.text, r1.fused) == (3, (3, 1), "dddd", False)
    assert (r2.best, r2.chosen, r2.text, list(r2.ranking.ranks)) == (0, (0,), "only", [1])  # one is a ranking
    assert r1.scores == (1.0, 3.0, 2.0, 4.0)
    assert set(r1.timings) == {"rank_s"}


def test_without_a_fuser_the_best_alone_is_chosen() -> None:
    (r,) = BlendPipeline(LengthRanker(), None, top_k=3).rank(["q"], [CANDS[0]])
    assert r.chosen == (3,)


def test_empty_answers_are_never_chosen_for_fusion() -> None:
    (r,) = BlendPipeline(LengthRanker(), ScriptedFuser(), top_k=3).rank(["q"], [["", "bb", "   ", "a"]])
    assert r.chosen == (1, 3)


def test_the_fuser_merges_exactly_the_chosen() -> None:
    fuser = ScriptedFuser(usage=(10, 2))
    pipeline = BlendPipeline(LengthRanker(), fuser, top_k=3)
    r1, r2 = pipeline.rank_and_fuse(PROMPTS, CANDS)
    assert fuser.seen == [["dddd", "ccc", "bb"], ["only"]]
    assert (r1.text, r1.fused, r1.fuser, r1.chosen) == ("dddd + ccc + bb", True, "scripted", (3, 1, 2))
    assert r2.text == "only"
    assert set(r1.timings) == {"rank_s", "fuse_s"}
    (k1,) = pipeline.rank_and_fuse(["q"], [CANDS[0]], top_k=1)  # a call may choose its own K
    assert (k1.text, k1.chosen) == ("dddd", (3,))


@pytest.fixture(scope="module")
def gen_fuser(tmp_path_factory: pytest.TempPathFactory) -> GenFuser:
    return GenFuser.from_pretrained(make_tiny_gen_fuser(tmp_path_factory.mktemp("genfuser")), device="cpu")


def test_top_k_cuts_what_a_real_fuser_reads(gen_fuser: GenFuser, tiny_ranker: PairRanker) -> None:
    """Moved from the fuser tests: top_k lives on the pipeline, and the GenFuser reads the chosen K only."""
    five = ["c0 the answer", "c1", "c2 is good", "c3 maybe", "c4"]
    pipeline = BlendPipeline(tiny_ranker, gen_fuser, top_k=2)
    (r,) = pipeline.rank_and_fuse(["q"], [five], num_beams=1, max_new_tokens=6)
    (ranking,) = tiny_ranker.rank(["q"], [five])
    assert r.chosen == ranking.order[:2]
    (text,) = gen_fuser.build_inputs(["q"], [[five[i] for i in r.chosen]])
    assert text.count("Candidate ") == 2
    assert r.text == gen_fuser.fuse(["q"], [[five[i] for i in r.chosen]], num_beams=1, max_new_tokens=6)[0]
    (all_k,) = BlendPipeline(tiny_ranker, gen_fuser, top_k=10).rank(["q"], [five])  # K > n: all of them
    assert len(all_k.chosen) == 5


def test_a_failing_fuser_falls_back_or_raises() -> None:
    (r,) = BlendPipeline(LengthRanker(), ScriptedFuser(fail_before="down"), top_k=2).rank_and_fuse(["q"], [CANDS[0]])
    assert (r.text, r.fused, r.fuser_error, r.chosen) == ("dddd", False, "RuntimeError: down", (3,))
    strict = BlendPipeline(LengthRanker(), ScriptedFuser(fail_before="down"), fallback_on_fuser_error=False)
    with pytest.raises(FusionError, match="the fuser 'scripted' failed: RuntimeError: down"):
        strict.rank_and_fuse(["q"], [CANDS[0]])


async def test_async_paths_match_the_sync_ones() -> None:
    pipeline = BlendPipeline(LengthRanker(), ScriptedFuser(), top_k=2)
    sync = pipeline.rank_and_fuse(PROMPTS, CANDS)
    async_ = await pipeline.arank_and_fuse(PROMPTS, CANDS)
    assert [(r.text, r.chosen) for r in sync] == [(r.text, r.chosen) for r in async_]
    (ranked,) = await pipeline.arank(["q"], [CANDS[0]])
    assert "".join([p async for p in pipeline.astream_fuse("q", ranked)]) == "dddd + ccc"
    assert "".join(pipeline.stream_fuse("q", ranked)) == "dddd + ccc"


class AsyncLengthRanker(LengthRanker):
    async def arank(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], **kw: Any) -> list[Ranking]:
        return self.rank(prompts, candidates, **kw)


class NoThreads(ThreadPoolExecutor):
    """An event loop's default executor that refuses work: any ``asyncio.to_thread`` fails."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise AssertionError(f"a thread hop to run {fn!r}")


def test_a_ranker_in_hand_is_awaited_without_a_thread_hop() -> None:
    async def rank() -> list[Any]:
        asyncio.get_running_loop().set_default_executor(NoThreads())
        return await BlendPipeline(AsyncLengthRanker()).arank(["q"], [CANDS[0]])

    (r,) = asyncio.run(rank())
    assert r.text == "dddd"


def test_loaded_ranker_is_what_needs_no_loading(tiny_native_ckpt: Path) -> None:
    ranker = LengthRanker()
    assert loaded_ranker(ranker) is ranker
    name = str(tiny_native_ckpt)
    loaded = load_ranker(name)
    assert loaded_ranker(name) is loaded
    assert loaded_ranker(name + "-not-loaded") is None


def test_best_of_n_answers_with_the_best() -> None:
    ranker = LengthRanker()
    (r,) = BlendPipeline(ranker, ScriptedFuser(), top_k=3).best_of_n(["q"], [CANDS[0]])
    assert (r.text, r.chosen, r.fused) == ("dddd", (3,), False)
    assert ranker.calls[-1][2] == "knockout"


def test_the_ranker_is_resolved_lazily_by_load_ranker(tiny_native_ckpt: Path) -> None:
    pipeline = BlendPipeline(str(tiny_native_ckpt))
    assert pipeline.ranker_spec == str(tiny_native_ckpt)
    assert isinstance(pipeline.ranker, PairRanker)
    assert pipeline.ranker is BlendPipeline(tiny_native_ckpt).ranker  # one load per spec


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_k": 0}, ValueError, "top_k must be a positive int"),
        ({"strategy": "best"}, ValueError, "unknown strategy 'best'"),
        ({"ranker": 3}, TypeError, "ranker must be a ranker object"),
        ({"fuser": "gpt"}, TypeError, r"fuser must be a blender_core fuser \(BaseFuser\) or None, got str"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    settings = {"ranker": LengthRanker(), **kwargs}
    with pytest.raises(error, match=match):
        BlendPipeline(**settings)  # type: ignore[arg-type]


def test_bad_input() -> None:
    pipeline = BlendPipeline(LengthRanker())
    with pytest.raises(ValueError, match=r"rank\(\) got 0 candidate\(s\) for prompt 0; at least 1 is needed"):
        pipeline.rank(["q"], [[]])
    with pytest.raises(TypeError, match="single str"):
        pipeline.rank("q", [["a"]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        pipeline.rank(["q"], [["a"]], top_k=0)
