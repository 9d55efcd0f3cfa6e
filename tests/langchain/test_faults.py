"""BlenderLLM (LangChain) under faults: a hung backend, a fuser that stalls mid-answer, answers that do not
fit a structured-output schema, empty answers, a ranker that cannot exist."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import BaseModel, PrivateAttr, ValidationError

from blender_core.ensemble import EnsembleError
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from langchain_blender import BlenderLLM
from tests.helpers.langchain_fakes import ScriptedChatModel


class HungChatModel(ScriptedChatModel):
    """Never answers until ``release`` is set (an HTTP client without a timeout, a deadlocked local model)."""

    _release: threading.Event = PrivateAttr(default_factory=threading.Event)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._release.wait(60)
        return super()._generate(messages, stop, run_manager, **kwargs)


@pytest.fixture
def hung() -> Iterator[HungChatModel]:
    model = HungChatModel(model_name="hung")
    yield model
    model._release.set()


def backend_threads() -> int:
    return sum(t.name.startswith("blender-backend") for t in threading.enumerate())


def test_a_hung_backend_never_piles_up_threads(tiny_ranker: PairRanker, hung: HungChatModel) -> None:
    llm = BlenderLLM(backends={"hung": hung, "ok": ScriptedChatModel(reply="four")}, ranker=tiny_ranker, timeout=0.5)
    before = backend_threads()
    for _ in range(30):
        msg = llm.invoke("2 + 2?")
        assert msg.text == "four"
    assert backend_threads() - before <= 2  # max_stuck_calls, not 30
    errors = [c["error"] for c in msg.response_metadata["blender"]["candidates"] if c["backend"] == "hung"]
    assert errors[0].startswith("BackendStuck: skipped without calling it")


def test_a_fuser_that_stalls_after_its_first_token(tiny_ranker: PairRanker) -> None:
    backends = {"a": ScriptedChatModel(reply="four"), "b": ScriptedChatModel(reply="it is four")}
    fuser = ScriptedChatModel(reply="fused answer here", stall_after_first=30, model_name="staller")
    llm = BlenderLLM(backends=backends, ranker=tiny_ranker, fuser=fuser, timeout=5, fusion_timeout=0.5)
    start = time.perf_counter()
    msg = llm.invoke("2 + 2?")  # nothing shown yet: the top-ranked answer, and why
    assert time.perf_counter() - start < 3
    meta = msg.response_metadata["blender"]
    assert (meta["fused"], msg.text) == (False, backends[meta["best"]].reply)
    assert meta["fuser_error"].startswith("StreamDeadline: the stream passed its 0.5 s deadline")
    start = time.perf_counter()
    chunks = list(llm.stream("2 + 2?"))  # the first token was shown: the stream ends there, and says so
    assert time.perf_counter() - start < 3
    assert "".join(c.text for c in chunks) == "fused"
    last = chunks[-1].response_metadata["blender"]
    assert last["fused"] is True
    assert last["fuser_error"].endswith("the answer is cut there")


class Sum(BaseModel):
    """The sum of two numbers."""

    a: int
    b: int
    total: int


def test_structured_output_picks_an_answer_that_fits(tiny_ranker: PairRanker) -> None:
    invalid = ScriptedChatModel(tool_args={"a": 2, "b": 2, "total": "four, written out at some length"}, model_name="bad")
    valid = ScriptedChatModel(tool_args={"a": 2, "b": 2, "total": 4}, model_name="good")
    llm = BlenderLLM(backends={"bad": invalid, "good": valid}, ranker=tiny_ranker)
    out = llm.with_structured_output(Sum).invoke("2 + 2?")
    assert out == Sum(a=2, b=2, total=4)
    raw = llm.with_structured_output(Sum, include_raw=True).invoke("2 + 2?")
    meta = raw["raw"].response_metadata["blender"]
    bad = next(c for c in meta["candidates"] if c["backend"] == "bad")
    assert bad["error"].startswith("SchemaMismatch: the answer does not fit Sum: total:")
    assert meta["best"] == "good"
    only_bad = BlenderLLM(backends={"bad": invalid}, ranker=tiny_ranker)
    with pytest.raises(EnsembleError, match="SchemaMismatch"):
        only_bad.with_structured_output(Sum).invoke("2 + 2?")
    assert llm.invoke("2 + 2?").text  # without structured output nothing is checked


def test_empty_answers_fail_their_backend(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(
        backends={"empty": ScriptedChatModel(reply=""), "ok": ScriptedChatModel(reply="four")}, ranker=tiny_ranker
    )
    msg = llm.invoke("2 + 2?")
    assert msg.text == "four"
    errors = {c["backend"]: c["error"] for c in msg.response_metadata["blender"]["candidates"]}
    assert errors["empty"] == "EmptyAnswerError: the backend answered with empty text (nothing to rank or fuse)"


def test_a_ranker_that_cannot_exist_is_refused_before_any_backend_is_called(tmp_path: Any) -> None:
    backend = ScriptedChatModel(reply="four")
    with pytest.raises(ValidationError, match="is neither an existing folder nor a hub id"):
        BlenderLLM(backends={"a": backend}, ranker=str(tmp_path / "no-such-ranker"))
    assert backend.calls == []
