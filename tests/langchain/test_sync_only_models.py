"""Sync-only LangChain models (only ``_generate``) on the async path, hung: LangChain's ``ainvoke`` would
run each call in the event loop's shared default executor, and every call past its timeout would keep a
worker of it; once all were stuck, nothing else handed to that executor (the ranking, the next calls) ran.
The engine calls such models through its own bounded daemon threads instead (the bulkhead)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import PrivateAttr

from blender_core.ranking.pairrm.pair_ranker import PairRanker
from langchain_blender import BlenderLLM, judge_ranker
from langchain_blender.sync_only import runs_in_executor
from tests.helpers.langchain_fakes import ScriptedChatModel


class HungSyncModel(BaseChatModel):
    """Implements only ``_generate`` (as many community integrations do), and it never returns until
    ``release`` is set."""

    model_name: str = "sync-only"
    _release: threading.Event = PrivateAttr(default_factory=threading.Event)

    @property
    def _llm_type(self) -> str:
        return "hung-sync-fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._release.wait(60)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="late"))])


@pytest.fixture
async def small_executor() -> ThreadPoolExecutor:
    """The loop's shared executor with 2 workers (min(32, cores + 4) = 6 on a 2-core machine)."""
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shared-default")
    asyncio.get_running_loop().set_default_executor(executor)  # the loop shuts it down when it closes
    return executor


def backend_threads(prefix: str) -> int:
    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def test_which_models_run_in_the_shared_executor() -> None:
    sync_only = HungSyncModel(model_name="sync")
    assert runs_in_executor(sync_only)
    assert runs_in_executor(sync_only.bind(stop=["x"]))
    assert runs_in_executor(sync_only.with_retry())
    assert runs_in_executor(RunnableLambda(lambda m: "four"))
    assert not runs_in_executor(ScriptedChatModel(reply="four"))  # it has _agenerate
    assert not runs_in_executor(ScriptedChatModel(reply="four").bind(stop=["x"]))

    async def answer(messages: Any) -> str:
        return "four"

    assert not runs_in_executor(RunnableLambda(lambda m: "four", afunc=answer))


async def test_hung_sync_only_backends_never_starve_the_loop(
    tiny_ranker: PairRanker, small_executor: ThreadPoolExecutor
) -> None:
    hung = HungSyncModel(model_name="hung")
    llm = BlenderLLM(backends={"hung": hung, "ok": ScriptedChatModel(reply="four")}, ranker=tiny_ranker, timeout=0.3)
    before = backend_threads("blender-backend")
    try:
        for _ in range(6):  # the 3rd call never returned when each hung call kept a shared worker
            msg = await asyncio.wait_for(llm.ainvoke("2 + 2?"), 20)
            assert msg.text == "four"
        assert backend_threads("blender-backend") - before <= llm.max_stuck_calls
        hung_errors = [c["error"] for c in msg.response_metadata["blender"]["candidates"] if c["backend"] == "hung"]
        assert hung_errors[0].startswith("BackendStuck: skipped without calling it")
        # the shared executor still runs work at once
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 5) == 42
    finally:
        hung._release.set()


async def test_a_hung_sync_only_judge_never_starves_the_loop(small_executor: ThreadPoolExecutor) -> None:
    hung = HungSyncModel(model_name="hung-judge")
    judge = judge_ranker(hung, timeout=0.3, max_concurrency=2, max_stuck_calls=2)
    try:
        for _ in range(4):
            (ranking,) = await asyncio.wait_for(judge.arank(["2 + 2?"], [["4", "five", "four"]]), 20)
            assert ranking.scores.tolist() == [0.0, 0.0, 0.0]  # every call a tie, reported
            assert ranking.issues
        assert backend_threads("blender-judge") <= 2
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 5) == 42
    finally:
        hung._release.set()


async def test_a_hung_sync_only_fuser_never_starves_the_loop(
    tiny_ranker: PairRanker, small_executor: ThreadPoolExecutor
) -> None:
    fuser = HungSyncModel(model_name="hung-fuser")
    backends = {"a": ScriptedChatModel(reply="four"), "b": ScriptedChatModel(reply="it is four")}
    llm = BlenderLLM(backends=backends, ranker=tiny_ranker, fuser=fuser, timeout=0.3)
    try:
        for _ in range(4):  # each fusion passes its deadline and falls back to the top-ranked answer
            msg = await asyncio.wait_for(llm.ainvoke("2 + 2?"), 20)
            meta = msg.response_metadata["blender"]
            assert (meta["fused"], msg.text) == (False, backends[meta["best"]].reply)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 5) == 42
    finally:
        fuser._release.set()
