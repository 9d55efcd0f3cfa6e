"""``judge_ranker``: a LangChain chat model as the pairwise LLM judge, alone and as BlenderLLM's ranker."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from blender_core.ranking.judge import JudgeRanker
from blender_core.ranking.judge.prompts import MT_BENCH_SYSTEM
from langchain_blender import BlenderLLM, judge_ranker
from tests.helpers.core_fakes import judged_answers, prefers_longer
from tests.helpers.langchain_fakes import ScriptedChatModel, three_backends

QUESTION = "What is 2 + 2?"
CANDIDATES = ["4", "It is four.", "four"]


class LongerAnswerJudge(ScriptedChatModel):
    """A chat model that, shown the judge prompt, prefers the longer answer (with the reply's usage)."""

    def _respond(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        self._calls.append({"messages": list(messages), **kwargs})
        _, a, b = judged_answers([{"role": "user", "content": messages[-1].text}])
        reply = prefers_longer(a, b)
        return AIMessage(content=reply, usage_metadata=self._usage(messages, reply))


def test_judge_ranker_asks_the_chat_model_with_the_judge_prompt() -> None:
    model = ScriptedChatModel(reply="Assistant A, clearly. [[A]]", usage=(7, 1))
    ranker = judge_ranker(model, timeout=5, max_concurrency=2)
    assert isinstance(ranker, JudgeRanker)
    assert (ranker.name, ranker.timeout, ranker.max_concurrency) == ("judge:scripted", 5, 2)
    (r,) = ranker.rank([QUESTION], [CANDIDATES])
    assert r.scores.tolist() == [0.0, 0.0, 0.0]  # always A: the position bias cancels
    assert dict(r.usage or {}) == {"input_tokens": 42, "output_tokens": 6, "total_tokens": 48}  # 6 calls
    assert len(model.calls) == 6
    first = model.calls[0]["messages"]
    assert [type(m) for m in first] == [SystemMessage, HumanMessage]
    assert first[0].text == MT_BENCH_SYSTEM
    assert judged_answers([{"role": "user", "content": first[1].text}])[0] == QUESTION


@pytest.mark.parametrize("strategy", ["full", "knockout"])
async def test_a_fair_judge_orders_and_arank_agrees(strategy: str) -> None:
    model = LongerAnswerJudge(usage=(5, 3))
    ranker = judge_ranker(model)
    (r,) = ranker.rank([QUESTION], [CANDIDATES], strategy=strategy)
    (ar,) = await ranker.arank([QUESTION], [CANDIDATES], strategy=strategy)
    assert r.best == ar.best == 1
    assert r.order == ar.order
    calls = 6 if strategy == "full" else 4
    assert len(model.calls) == 2 * calls
    assert dict(r.usage or {}) == dict(ar.usage or {}) == {
        "input_tokens": 5 * calls, "output_tokens": 3 * calls, "total_tokens": 8 * calls
    }


def test_a_failing_model_gives_ties_and_issues() -> None:
    (r,) = judge_ranker(ScriptedChatModel(error="rate limited")).rank([QUESTION], [CANDIDATES[:2]])
    assert r.scores.tolist() == [0.0, 0.0]
    assert r.issues == (
        "judge call with candidate 0 as A and 1 as B: RuntimeError: rate limited; counted as a tie",
        "judge call with candidate 1 as A and 0 as B: RuntimeError: rate limited; counted as a tie",
    )


def test_judge_ranker_takes_a_chat_model_only() -> None:
    with pytest.raises(TypeError, match=r"takes a LangChain chat model .* got str"):
        judge_ranker("gpt-4o")  # type: ignore[arg-type]


def _check_judge_usage(message: BaseMessage, judge_calls: int) -> None:
    meta = message.response_metadata["blender"]
    assert meta["best"] == "beta"  # the longest answer
    assert meta["ranker_usage"] == {
        "input_tokens": 5 * judge_calls, "output_tokens": 3 * judge_calls, "total_tokens": 8 * judge_calls
    }
    assert meta["ranker_issues"] == []
    backends = meta["usage_by_backend"].values()
    usage = message.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == sum(u["input_tokens"] for u in backends) + 5 * judge_calls
    assert usage["output_tokens"] == sum(u["output_tokens"] for u in backends) + 3 * judge_calls
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_blender_llm_with_the_judge_as_ranker_counts_its_usage() -> None:
    judge = LongerAnswerJudge(usage=(5, 3))
    llm = BlenderLLM(backends=three_backends(), ranker=judge_ranker(judge))
    _check_judge_usage(llm.invoke(QUESTION), judge_calls=6)
    _check_judge_usage(await llm.ainvoke(QUESTION), judge_calls=6)
    assert len(judge.calls) == 12
    best_of = BlenderLLM(backends=three_backends(), ranker=judge_ranker(judge), strategy="knockout")
    _check_judge_usage(best_of.invoke(QUESTION), judge_calls=4)  # 2(n-1)
