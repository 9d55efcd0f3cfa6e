"""``judge_ranker``: a LlamaIndex LLM as the pairwise LLM judge, alone and as BlenderLLM's ranker."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from blender_core.ranking.judge import JudgeRanker
from llamaindex_blender import BlenderLLM, judge_ranker
from llamaindex_blender.judge import LLMJudge
from tests.helpers.core_fakes import judged_answers, prefers_longer
from tests.helpers.event_loop import ticking
from tests.helpers.llamaindex_fakes import FakeLLM

QUESTION = "what is two plus two?"
CANDIDATES = ["4", "it is four", "four"]
ANSWERS = {"alpha": "the answer is four because two and two make four", "beta": "four", "gamma": "it is 5"}


class LongerAnswerJudgeLLM(FakeLLM):
    """Shown the judge prompt, prefers the longer answer; usage in ``raw`` as FakeLLM reports it."""

    def _judge(self, messages: Any) -> ChatResponse:
        _, a, b = judged_answers([{"role": "user", "content": messages[-1].content}])
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=prefers_longer(a, b)), raw=self._raw()
        )

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._judge(messages)

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(0)
        return self._judge(messages)


class SyncOnlyJudgeLLM(CustomLLM):
    """A sync model in disguise: CustomLLM's achat calls the blocking complete on the event loop."""

    delay: float = 0.3
    threads: list[str] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="sync-judge", is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        return CompletionResponse(text="Assistant A. [[A]]")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


def test_judge_ranker_asks_the_llm_and_reads_its_usage() -> None:
    ranker = judge_ranker(FakeLLM(text="[[A]]", prompt_tokens=11, completion_tokens=2, name="judge-llm"), timeout=5)
    assert isinstance(ranker, JudgeRanker)
    assert (ranker.name, ranker.timeout) == ("judge:judge-llm", 5)
    (r,) = ranker.rank([QUESTION], [CANDIDATES])
    assert r.scores.tolist() == [0.0, 0.0, 0.0]  # always A: the position bias cancels
    assert dict(r.usage or {}) == {"input_tokens": 66, "output_tokens": 12, "total_tokens": 78}  # 6 calls


@pytest.mark.parametrize("strategy", ["full", "knockout"])
async def test_a_fair_judge_orders_and_arank_agrees(strategy: str) -> None:
    ranker = judge_ranker(LongerAnswerJudgeLLM(prompt_tokens=4, completion_tokens=1))
    (r,) = ranker.rank([QUESTION], [CANDIDATES], strategy=strategy)
    (ar,) = await ranker.arank([QUESTION], [CANDIDATES], strategy=strategy)
    assert r.best == ar.best == 1
    assert r.order == ar.order
    calls = 6 if strategy == "full" else 4
    assert dict(r.usage or {}) == dict(ar.usage or {}) == {
        "input_tokens": 4 * calls, "output_tokens": calls, "total_tokens": 5 * calls
    }


def test_a_failing_llm_gives_ties_and_issues() -> None:
    (r,) = judge_ranker(FakeLLM(error="quota")).rank([QUESTION], [CANDIDATES[:2]])
    assert r.scores.tolist() == [0.0, 0.0]
    assert len(r.issues) == 2
    assert all(i.endswith("RuntimeError: quota; counted as a tie") for i in r.issues)
    with pytest.raises(TypeError, match="takes a LlamaIndex LLM, got str"):
        judge_ranker("gpt-4o")  # type: ignore[arg-type]


async def test_an_llm_whose_achat_blocks_the_loop_is_called_in_threads() -> None:
    llm = SyncOnlyJudgeLLM()
    assert LLMJudge(llm).blocking_async
    assert not LLMJudge(FakeLLM()).blocking_async
    async with ticking(0.02) as ticks:
        start = time.perf_counter()
        (r,) = await judge_ranker(llm).arank([QUESTION], [CANDIDATES])
        elapsed = time.perf_counter() - start
    assert r.scores.tolist() == [0.0, 0.0, 0.0]
    assert r.issues == ()
    assert len(llm.threads) == 6
    assert all(name.startswith("blender-judge") for name in llm.threads)
    assert elapsed < 1.0  # concurrently, not 6 x 0.3 s on the loop
    assert ticks.count >= 5


def _check_judge_usage(raw: dict[str, Any], judge_calls: int) -> None:
    meta = raw["blender"]
    assert meta["best"] == "alpha"  # the longest answer
    assert meta["ranker_usage"] == {
        "input_tokens": 4 * judge_calls, "output_tokens": judge_calls, "total_tokens": 5 * judge_calls
    }
    assert meta["ranker_issues"] == []
    backends = meta["usage_by_backend"].values()
    assert raw["usage"]["prompt_tokens"] == sum(u["input_tokens"] for u in backends) + 4 * judge_calls
    assert raw["usage"]["completion_tokens"] == sum(u["output_tokens"] for u in backends) + judge_calls


async def test_blender_llm_with_the_judge_as_ranker_counts_its_usage() -> None:
    backends = [FakeLLM(text=text, name=name) for name, text in ANSWERS.items()]
    llm = BlenderLLM(backends, ranker=judge_ranker(LongerAnswerJudgeLLM(prompt_tokens=4, completion_tokens=1)))
    response = llm.chat([ChatMessage(role=MessageRole.USER, content=QUESTION)])
    assert response.message.content == ANSWERS["alpha"]
    _check_judge_usage(response.raw, judge_calls=6)
    _check_judge_usage((await llm.acomplete(QUESTION)).raw, judge_calls=6)
