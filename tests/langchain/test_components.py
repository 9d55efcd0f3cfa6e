"""The other LangChain pieces: the compressor, the ranker runnable, best-message selection, tool-call
text, and the agent middleware."""

from __future__ import annotations

import subprocess
import sys
from operator import itemgetter

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import tool

from blender_core.ranking.pairrm.pair_ranker import PairRanker
from langchain_blender import (
    PairRankerCompressor,
    PairRankerRunnable,
    achoose_best_message,
    canonical_tool_calls,
    choose_best_message,
)
from langchain_blender.selection import prompt_text
from langchain_blender.tool_calls import ranking_text
from tests.helpers.event_loop import ticking
from tests.helpers.langchain_fakes import ScriptedChatModel

QUERY = "What is the capital of France?"
TEXTS = ["Paris is the capital.", "Lyon, maybe.", "The capital of France is Paris, on the Seine.", "no idea"]


def order_of(ranker: PairRanker, prompt: str, texts: list[str]) -> list[int]:
    return list(ranker.rank([prompt], [texts])[0].order)


# ---------------------------------------------------------------- compressor


def test_compressor_returns_ordered_copies_with_scores(tiny_ranker: PairRanker) -> None:
    docs = [Document(page_content=t, metadata={"source": i}) for i, t in enumerate(TEXTS)]
    before = [d.model_dump() for d in docs]
    out = PairRankerCompressor(ranker=tiny_ranker, top_n=3).compress_documents(docs, QUERY)
    ranking = tiny_ranker.rank([QUERY], [TEXTS])[0]
    assert [d.metadata["source"] for d in out] == list(ranking.order[:3])
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(
        [float(ranking.scores[i]) for i in ranking.order[:3]]
    )
    assert [d.model_dump() for d in docs] == before  # inputs untouched
    assert all(o is not d for o in out for d in docs)


def test_compressor_edge_cases(tiny_ranker: PairRanker) -> None:
    compressor = PairRankerCompressor(ranker=tiny_ranker, top_n=None, strategy="sort")
    assert compressor.compress_documents([], QUERY) == []
    (only,) = compressor.compress_documents([Document(page_content="alone")], QUERY)
    assert only.metadata == {"relevance_score": 0.0}
    assert len(compressor.compress_documents([Document(page_content=t) for t in TEXTS], QUERY)) == 4
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        PairRankerCompressor(ranker=tiny_ranker, top_n=0)


async def test_async_compressor_does_not_block_the_loop(tiny_ranker: PairRanker) -> None:
    docs = [
        Document(page_content=f"{t} number {i}") for i, t in enumerate(TEXTS * 5)
    ]  # 20 docs: 380 comparisons
    async with ticking(0.002) as ticks:
        out = await PairRankerCompressor(ranker=tiny_ranker, top_n=2).acompress_documents(docs, QUERY)
    assert len(out) == 2
    assert ticks.count >= 3, "the event loop stood still while ranking"


# ---------------------------------------------------------------- ranker runnable


def test_ranker_runnable_ranking_and_best(tiny_ranker: PairRanker) -> None:
    order = order_of(tiny_ranker, QUERY, TEXTS)
    ranking = PairRankerRunnable(tiny_ranker).invoke({"prompt": QUERY, "candidates": TEXTS})
    assert ranking["order"] == order
    assert ranking["best"] == TEXTS[order[0]]
    assert ranking["ranked"] == [TEXTS[i] for i in order]
    assert (
        PairRankerRunnable(tiny_ranker, output="best").invoke({"input": QUERY, "candidates": TEXTS})
        == TEXTS[order[0]]
    )


def test_ranker_runnable_in_an_lcel_chain_and_batch(tiny_ranker: PairRanker) -> None:
    answers = RunnableLambda(lambda q: [f"{q} -> {t}" for t in TEXTS])
    chain = RunnableParallel(
        prompt=itemgetter("q"), candidates=itemgetter("q") | answers
    ) | PairRankerRunnable(tiny_ranker, output="best")
    questions = [QUERY, "Name a French city."]
    out = chain.batch([{"q": q} for q in questions])
    for q, best in zip(questions, out, strict=True):
        cands = [f"{q} -> {t}" for t in TEXTS]
        assert best == cands[order_of(tiny_ranker, q, cands)[0]]


async def test_ranker_runnable_keeps_message_candidates(tiny_ranker: PairRanker) -> None:
    msgs = [AIMessage(t) for t in TEXTS]
    best = await PairRankerRunnable(tiny_ranker, output="best").ainvoke({"prompt": QUERY, "candidates": msgs})
    assert best is msgs[order_of(tiny_ranker, QUERY, TEXTS)[0]]
    with pytest.raises(KeyError, match="needs keys 'prompt'"):
        PairRankerRunnable(tiny_ranker).invoke({"question": QUERY, "candidates": TEXTS})


# ---------------------------------------------------------------- selection and tool-call text


def test_canonical_tool_calls_ignore_ids_key_order_and_call_order() -> None:
    a = [{"name": "add", "args": {"a": 1, "b": 2}, "id": "x"}, {"name": "mul", "args": {"n": "é"}, "id": "y"}]
    b = [{"name": "mul", "args": {"n": "é"}, "id": "z"}, {"name": "add", "args": {"b": 2, "a": 1}, "id": "w"}]
    assert canonical_tool_calls(a) == canonical_tool_calls(b) == 'add({"a":1,"b":2})\nmul({"n":"é"})'
    assert canonical_tool_calls(a) != canonical_tool_calls([{"name": "add", "args": {"a": 2, "b": 1}}])


def test_choose_best_message_mixes_text_and_tool_calls(tiny_ranker: PairRanker) -> None:
    call = {"name": "search", "args": {"q": "capital of France"}, "id": "1", "type": "tool_call"}
    candidates = [AIMessage(TEXTS[0]), AIMessage("", tool_calls=[call]), AIMessage(TEXTS[2])]
    before = [m.model_dump() for m in candidates]
    chat = [SystemMessage("Answer briefly."), HumanMessage(QUERY)]
    index, meta = choose_best_message(chat, candidates, tiny_ranker, names=["a", "b", "c"])
    texts = [ranking_text(m) for m in candidates]
    assert texts[1] == 'search({"q":"capital of France"})'
    order = order_of(tiny_ranker, prompt_text(chat), texts)
    assert index == order[0]
    assert meta["best"] == ["a", "b", "c"][index]
    assert [c["rank"] for c in meta["candidates"]] == [order.index(i) + 1 for i in range(3)]
    assert [m.model_dump() for m in candidates] == before


async def test_achoose_best_message_and_errors(tiny_ranker: PairRanker) -> None:
    index, _ = await achoose_best_message(QUERY, [AIMessage(t) for t in TEXTS], tiny_ranker)
    assert index == order_of(tiny_ranker, QUERY, TEXTS)[0]
    with pytest.raises(ValueError, match="got no candidates"):
        choose_best_message(QUERY, [], tiny_ranker)
    with pytest.raises(ValueError, match="distinct names"):
        choose_best_message(QUERY, [AIMessage("a"), AIMessage("b")], tiny_ranker, names=["x", "x"])


# ---------------------------------------------------------------- agent middleware


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


def test_middleware_keeps_the_best_response_in_an_agent_loop(tiny_ranker: PairRanker) -> None:
    from langchain.agents import create_agent

    from langchain_blender import BestOfModelsMiddleware

    primary = ScriptedChatModel(tool_args={"city": "Paris"}, reply="Sunny in Paris.", model_name="primary-m")
    other = ScriptedChatModel(tool_args={"city": "Lyon"}, reply="It is sunny.", model_name="other-m")
    broken = ScriptedChatModel(error="quota exceeded", model_name="broken-m")
    middleware = BestOfModelsMiddleware(other, broken, ranker=tiny_ranker)
    agent = create_agent(model=primary, tools=[get_weather], middleware=[middleware])
    result = agent.invoke({"messages": [HumanMessage("Weather in France?")]})
    kinds = [m.type for m in result["messages"]]
    assert kinds == ["human", "ai", "tool", "ai"]
    first, final = result["messages"][1], result["messages"][3]
    meta = first.response_metadata["blender"]
    assert {c["backend"]: c["error"] for c in meta["candidates"]}[
        "broken-m"
    ] == "RuntimeError: quota exceeded"
    ranked = [canonical_tool_calls([{"name": "get_weather", "args": {"city": c}}]) for c in ("Paris", "Lyon")]
    order = order_of(tiny_ranker, "Weather in France?", ranked)
    assert meta["best"] == ["primary", "other-m"][order[0]]
    assert first.tool_calls[0]["args"]["city"] == ("Paris", "Lyon")[order[0]]
    assert final.response_metadata["blender"]["best"] in ("primary", "other-m")
    assert final.content in ("Sunny in Paris.", "It is sunny.")
    assert primary.tags is None
    assert other.tags is None


async def test_middleware_async_and_all_failing(tiny_ranker: PairRanker) -> None:
    from langchain.agents import create_agent

    from blender_core.ensemble import EnsembleError
    from langchain_blender import BestOfModelsMiddleware

    models = [ScriptedChatModel(reply=t, model_name=f"m{i}") for i, t in enumerate(TEXTS[:3])]
    agent = create_agent(
        model=models[0], middleware=[BestOfModelsMiddleware(*models[1:], ranker=tiny_ranker)]
    )
    result = await agent.ainvoke({"messages": [HumanMessage(QUERY)]})
    answer = result["messages"][-1]
    assert answer.content == TEXTS[order_of(tiny_ranker, QUERY, TEXTS[:3])[0]]
    assert len(answer.response_metadata["blender"]["candidates"]) == 3

    down = [ScriptedChatModel(error="down", model_name=f"d{i}") for i in range(2)]
    agent = create_agent(model=down[0], middleware=[BestOfModelsMiddleware(down[1], ranker=tiny_ranker)])
    with pytest.raises(EnsembleError, match="only 0 of 2"):
        await agent.ainvoke({"messages": [HumanMessage(QUERY)]})


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_middleware_without_langchain_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['langchain'] = None\n"
        "try:\n    from langchain_blender import BestOfModelsMiddleware\n"
        "except ImportError as e:\n    print(e)"
    )
    assert 'pip install "blender-llm[agents]"' in run_python(code)


def test_package_import_needs_only_langchain_core() -> None:
    out = run_python(
        "import sys, langchain_blender; print('langchain' in sys.modules, 'torch' in sys.modules)"
    )
    assert out.split() == ["False", "False"]
