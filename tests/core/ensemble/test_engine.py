"""The ensemble engine on its own, with no framework installed: calls, failures, ranking, streamed fusion
with its first-token limit and fallback, metadata and usage."""

from __future__ import annotations

import time

import pytest

from blender_core.ensemble import (
    BackendAnswer,
    CandidateRecord,
    Delta,
    Ensemble,
    EnsembleConfig,
    EnsembleError,
    EnsembleOutcome,
    FusionError,
    name_backends,
)
from blender_core.ranking import PairRanker
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser, aanswering, afailing, answering, failing

U = {"input_tokens": 3, "output_tokens": 5}


def calls(**overrides: object) -> dict[str, object]:
    base = {"short": answering("four", usage=U), "long": answering("it is four, 2 + 2", usage=U), "mid": answering("4 (four)")}
    return {**base, **overrides}


def engine(fuser: ScriptedFuser | None = None, **settings: object) -> Ensemble:
    return Ensemble(LengthRanker(), fuser, EnsembleConfig(**settings))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- calls and failures
def test_backends_run_concurrently_and_failures_are_recorded() -> None:
    e = engine(timeout=0.5)
    start = time.perf_counter()
    records = e.call(
        {
            "a": answering("x", delay=0.3),
            "b": answering("y", delay=0.3),
            "boom": failing("down"),
            "slow": answering("z", delay=2.0),
        }
    )
    assert time.perf_counter() - start < 1.0  # not 0.3 + 0.3 + 2.0
    by_name = {r.backend: r for r in records}
    assert [r.backend for r in records] == ["a", "b", "boom", "slow"]
    assert by_name["a"].ok
    assert by_name["a"].latency_s >= 0.29
    assert by_name["boom"].error == "RuntimeError: down"
    assert by_name["slow"].error == "TimeoutError: no answer within 0.5 s"


def test_too_few_answers_is_an_error_naming_each_backend() -> None:
    e = engine(min_successes=2)
    with pytest.raises(EnsembleError, match=r"only 1 of 2 backends answered.*bad: RuntimeError: no.*lower min_successes"):
        e.run("q", {"ok": answering("a"), "bad": failing("no")})
    with pytest.raises(ValueError, match="min_successes=3 but only 2 backends"):
        engine(min_successes=3).check_backend_count(2)


async def test_async_calls_are_awaited_together() -> None:
    e = engine(timeout=0.4)
    start = time.perf_counter()
    records = await e.acall({"a": aanswering("x", delay=0.2), "b": aanswering("y", delay=0.2), "c": afailing("no"), "d": aanswering("z", delay=3)})
    assert time.perf_counter() - start < 1.0
    assert [r.error for r in records] == [None, None, "RuntimeError: no", "TimeoutError: no answer within 0.4 s"]


# ---------------------------------------------------------------------------- ranking without fusion
def test_without_a_fuser_the_best_backend_answers() -> None:
    ranker = LengthRanker()
    e = Ensemble(ranker, None, EnsembleConfig(top_k=2))
    outcome = e.run("what is 2+2?", calls(broken=failing("x")))
    assert isinstance(outcome, EnsembleOutcome)
    assert (outcome.text, outcome.best.backend, outcome.blend.fused) == ("it is four, 2 + 2", "long", False)
    assert ranker.calls == [(["what is 2+2?"], [["four", "it is four, 2 + 2", "4 (four)"]], "full")]
    meta = outcome.metadata()
    assert meta["chosen"] == ["long"]
    assert meta["best"] == "long"
    assert [c["backend"] for c in meta["candidates"]] == ["short", "long", "mid", "broken"]
    assert [c["rank"] for c in meta["candidates"]] == [3, 1, 2, None]
    assert meta["candidates"][3]["error"] == "RuntimeError: x"
    assert (meta["fused"], meta["fuser"], meta["fuser_error"], meta["strategy"]) == (False, None, None, "full")
    assert outcome.usage == {"input_tokens": 6, "output_tokens": 10, "total_tokens": 16}
    assert meta["usage_by_backend"] == {"short": U, "long": U}


def test_the_ranker_reads_rank_text_and_the_answer_keeps_its_own_text() -> None:
    records = [
        CandidateRecord("tool", BackendAnswer("", rank_text="add(1,2) with a long canonical form", fusible=False), 0.1),
        CandidateRecord("text", BackendAnswer("three"), 0.1),
    ]
    outcome = engine(ScriptedFuser()).select("q", records)
    assert outcome.best.backend == "tool"
    assert outcome.text == ""  # the tool-call answer's own text, not its ranking form


def test_a_single_answer_needs_no_ranking() -> None:
    outcome = engine().run("q", {"only": answering("alone"), "down": failing("x")})
    assert (outcome.text, list(outcome.blend.ranking.ranks), outcome.blend.ranking.n_forward) == ("alone", [1], 0)


# ---------------------------------------------------------------------------- fusion
def test_the_top_k_are_fused_and_the_fuser_usage_is_summed() -> None:
    fuser = ScriptedFuser(usage=(50, 6))
    outcome = engine(fuser, top_k=2).run("q", calls())
    assert fuser.seen == [["it is four, 2 + 2", "4 (four)"]]
    assert (outcome.text, outcome.blend.fused) == ("it is four, 2 + 2 + 4 (four)", True)
    meta = outcome.metadata()
    assert meta["chosen"] == ["long", "mid"]
    assert (meta["fuser"], meta["fuser_error"]) == ("scripted", None)
    assert meta["fuser_usage"] == {"input_tokens": 50, "output_tokens": 6, "total_tokens": 56}
    assert outcome.usage == {"input_tokens": 56, "output_tokens": 16, "total_tokens": 72}
    assert {"rank_s", "fuse_s", "fuse_first_token_s"} <= set(meta["timings"])


def test_answers_that_may_not_be_fused_are_returned_whole() -> None:
    fuser = ScriptedFuser()
    outcome = engine(fuser).run("q", calls(long=answering("a tool call, in a long canonical form", fusible=False)))
    assert fuser.seen == []
    assert (outcome.text, outcome.blend.fused, outcome.metadata()["chosen"]) == ("a tool call, in a long canonical form", False, ["long"])


def test_stream_yields_the_pieces_then_the_outcome() -> None:
    events = list(engine(ScriptedFuser(), top_k=2).stream("q", calls()))
    *pieces, last = events
    assert all(isinstance(p, Delta) and p.answer is None for p in pieces)
    assert "".join(p.text for p in pieces) == "it is four, 2 + 2 + 4 (four)"
    assert len(pieces) > 1
    assert isinstance(last, EnsembleOutcome)
    assert last.text == "it is four, 2 + 2 + 4 (four)"


def test_stream_without_fusion_is_one_piece_with_the_answer() -> None:
    first, last = list(engine().stream("q", calls()))
    assert isinstance(first, Delta)
    assert first.answer is not None
    assert (first.text, first.answer.payload) == ("it is four, 2 + 2", {"text": "it is four, 2 + 2"})
    assert isinstance(last, EnsembleOutcome)


@pytest.mark.parametrize(
    ("fuser", "error"),
    [
        (ScriptedFuser(fail_before="fuser down"), "RuntimeError: fuser down"),
        (ScriptedFuser(first_delay=1.0), "FirstItemTimeout: no output within 0.3 s (time-to-first-token limit)"),
    ],
)
def test_a_fuser_that_fails_or_is_late_before_its_first_piece_falls_back(fuser: ScriptedFuser, error: str) -> None:
    e = engine(fuser, timeout=0.3)
    start = time.perf_counter()
    first, last = list(e.stream("q", calls()))
    assert time.perf_counter() - start < 0.9
    assert isinstance(first, Delta)
    assert first.answer is not None  # the top-ranked answer, whole
    assert isinstance(last, EnsembleOutcome)
    meta = last.metadata()
    assert (last.text, meta["fused"], meta["fuser"], meta["fuser_error"]) == ("it is four, 2 + 2", False, "scripted", error)
    assert meta["chosen"] == ["long"]
    assert engine(fuser, timeout=0.3).run("q", calls()).metadata()["fuser_error"] == error


def test_after_the_first_piece_a_stream_raises_but_run_falls_back() -> None:
    with pytest.raises(RuntimeError, match="mid-answer"):
        list(engine(ScriptedFuser(fail_after="mid-answer")).stream("q", calls()))
    outcome = engine(ScriptedFuser(fail_after="mid-answer")).run("q", calls())  # nothing was shown yet
    assert (outcome.text, outcome.blend.fused, outcome.blend.fuser_error) == ("it is four, 2 + 2", False, "RuntimeError: mid-answer")


def test_with_the_fallback_off_a_fuser_failure_is_a_fusion_error() -> None:
    strict = engine(ScriptedFuser(fail_before="down"), fallback_on_fuser_error=False)
    with pytest.raises(FusionError, match="the fuser 'scripted' failed: RuntimeError: down"):
        strict.run("q", calls())
    with pytest.raises(FusionError, match="RuntimeError: down"):
        list(strict.stream("q", calls()))


async def test_async_stream_and_run_match_the_sync_ones() -> None:
    acalls = {"short": aanswering("four", usage=U), "long": aanswering("it is four, 2 + 2", usage=U), "mid": aanswering("4 (four)")}
    e = engine(ScriptedFuser(usage=(1, 1)), top_k=2)
    events = [ev async for ev in e.astream("q", acalls)]
    assert "".join(ev.text for ev in events if isinstance(ev, Delta)) == "it is four, 2 + 2 + 4 (four)"
    outcome = await e.arun("q", acalls)
    assert outcome.metadata()["chosen"] == ["long", "mid"]
    assert outcome.usage["total_tokens"] == 18
    late = engine(ScriptedFuser(first_delay=1.0), timeout=0.3)
    fell_back = await late.arun("q", acalls)
    assert (fell_back.text, fell_back.blend.fuser_error) == ("it is four, 2 + 2", "FirstItemTimeout: no output within 0.3 s (time-to-first-token limit)")


def test_with_a_real_pairranker(tiny_ranker: PairRanker) -> None:
    texts = {"a": "the answer is four", "b": "five", "c": "four, since two and two make four"}
    outcome = Ensemble(tiny_ranker).run("what is 2+2?", {k: answering(v) for k, v in texts.items()})
    (ranking,) = tiny_ranker.rank(["what is 2+2?"], [list(texts.values())])
    assert outcome.best.backend == list(texts)[ranking.best]
    assert outcome.blend.scores == pytest.approx(tuple(ranking.scores))


# ---------------------------------------------------------------------------- settings and names
@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"timeout": 0}, "timeout must be a positive, finite number"),
        ({"timeout": float("nan")}, "timeout must be a positive, finite number"),
        ({"timeout": float("inf")}, "timeout must be a positive, finite number"),
        ({"timeout": True}, "timeout must be a positive, finite number"),
        ({"min_successes": 0}, "min_successes must be an int >= 1"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1 or None"),
        ({"top_k": 0}, "top_k must be a positive int"),
        ({"strategy": "vote"}, "unknown strategy 'vote'"),
    ],
)
def test_bad_settings(settings: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EnsembleConfig(**settings)  # type: ignore[arg-type]


def test_config_or_settings_not_both() -> None:
    assert Ensemble(LengthRanker(), top_k=2).config == EnsembleConfig(top_k=2)
    with pytest.raises(TypeError, match="both a config and settings"):
        Ensemble(LengthRanker(), None, EnsembleConfig(), top_k=2)


def test_backend_names_are_unique() -> None:
    assert list(name_backends([("m", 1), ("m", 2), ("n", 3), ("m", 4)])) == ["m", "m#2", "n", "m#3"]
    assert name_backends({"x": 1}) == {"x": 1}
    with pytest.raises(ValueError, match="backends is empty"):
        name_backends([])
    with pytest.raises(ValueError, match="non-empty strings"):
        name_backends({"": 1})
