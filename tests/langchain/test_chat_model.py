"""BlenderLLM behaviour: concurrency, failures, metadata and usage, fusion, streaming, tracing, tools."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

from blender_core.ensemble import EnsembleError
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from langchain_blender import BlenderLLM, ChatModelFuser
from langchain_blender.selection import prompt_text
from langchain_blender.tool_calls import canonical_tool_calls
from tests.helpers.event_loop import ticking
from tests.helpers.langchain_fakes import ScriptedChatModel, three_backends

QUESTION = "What is 2 + 2?"


def blender(tiny_ranker: PairRanker, **kwargs: Any) -> BlenderLLM:
    kwargs.setdefault("backends", three_backends())
    kwargs.setdefault("ranker", tiny_ranker)
    return BlenderLLM(**kwargs)


def expected_order(ranker: PairRanker, prompt: str, texts: list[str]) -> list[int]:
    return list(ranker.rank([prompt], [texts])[0].order)


def check_account(meta: dict[str, Any]) -> None:
    """Rank 1 is the best backend; ranks follow the scores; failures have no score or rank."""
    ok = [c for c in meta["candidates"] if c["error"] is None]
    best = min(ok, key=lambda c: c["rank"])
    assert best["rank"] == 1
    assert best["backend"] == meta["best"]
    by_score = sorted(ok, key=lambda c: -c["score"])
    assert [c["rank"] for c in by_score] == sorted(c["rank"] for c in ok)
    for c in meta["candidates"]:
        if c["error"] is not None:
            assert c["score"] is None
            assert c["rank"] is None


# ---------------------------------------------------------------- concurrency


def test_sync_invoke_calls_backends_concurrently(tiny_ranker: PairRanker) -> None:
    llm = blender(tiny_ranker, backends=three_backends(delay=1.0))
    start = time.perf_counter()
    msg = llm.invoke(QUESTION)
    elapsed = time.perf_counter() - start
    assert 1.0 <= elapsed < 2.2, f"three 1 s backends took {elapsed:.2f} s: not concurrent"
    assert all(c["latency_s"] >= 1.0 for c in msg.response_metadata["blender"]["candidates"])


async def test_async_invoke_calls_backends_concurrently(tiny_ranker: PairRanker) -> None:
    llm = blender(tiny_ranker, backends=three_backends(delay=1.0))
    start = time.perf_counter()
    msg = await llm.ainvoke(QUESTION)
    elapsed = time.perf_counter() - start
    assert 1.0 <= elapsed < 2.2, f"three 1 s backends took {elapsed:.2f} s: not concurrent"
    assert len(msg.response_metadata["blender"]["candidates"]) == 3


def test_max_concurrency_one_runs_backends_in_turn(tiny_ranker: PairRanker) -> None:
    llm = blender(tiny_ranker, backends=three_backends(delay=0.3), max_concurrency=1)
    start = time.perf_counter()
    llm.invoke(QUESTION)
    assert time.perf_counter() - start >= 0.9


# ---------------------------------------------------------------- failures


def failing_backends() -> dict[str, ScriptedChatModel]:
    return three_backends(
        beta=ScriptedChatModel(error="backend exploded", model_name="beta-1"),
        gamma=ScriptedChatModel(reply="too late", delay=3.0, model_name="gamma-1"),
    )


def test_failing_and_slow_backends_are_dropped_and_reported(tiny_ranker: PairRanker) -> None:
    llm = blender(tiny_ranker, backends=failing_backends(), timeout=0.5)
    start = time.perf_counter()
    msg = llm.invoke(QUESTION)
    assert time.perf_counter() - start < 2.0, "the call waited for the backend past its timeout"
    meta = msg.response_metadata["blender"]
    errors = {c["backend"]: c["error"] for c in meta["candidates"]}
    assert errors["alpha"] is None
    assert errors["beta"] == "RuntimeError: backend exploded"
    assert errors["gamma"].startswith("TimeoutError")
    assert meta["best"] == "alpha"
    assert msg.content == "The answer is four."
    check_account(meta)


async def test_async_failing_and_slow_backends_are_dropped(tiny_ranker: PairRanker) -> None:
    llm = blender(tiny_ranker, backends=failing_backends(), timeout=0.5)
    start = time.perf_counter()
    msg = await llm.ainvoke(QUESTION)
    assert time.perf_counter() - start < 2.0
    errors = {c["backend"]: c["error"] for c in msg.response_metadata["blender"]["candidates"]}
    assert errors["beta"] == "RuntimeError: backend exploded"
    assert errors["gamma"].startswith("TimeoutError")
    assert msg.content == "The answer is four."


def test_all_backends_failing_is_a_clear_error(tiny_ranker: PairRanker) -> None:
    backends = {n: ScriptedChatModel(error=f"{n} is down") for n in ("a", "b", "c")}
    llm = blender(tiny_ranker, backends=backends)
    with pytest.raises(EnsembleError, match=r"only 0 of 3 backends answered.*a: RuntimeError: a is down"):
        llm.invoke(QUESTION)
    with pytest.raises(EnsembleError, match="only 0 of 3"):
        list(llm.stream(QUESTION))


async def test_fewer_than_min_successes_fails(tiny_ranker: PairRanker) -> None:
    llm = blender(tiny_ranker, backends=failing_backends(), timeout=0.5, min_successes=2)
    with pytest.raises(EnsembleError, match=r"only 1 of 3 backends answered, fewer than min_successes=2"):
        await llm.ainvoke(QUESTION)


# ---------------------------------------------------------------- metadata and usage


def test_metadata_matches_the_ranker_and_usage_is_summed(tiny_ranker: PairRanker) -> None:
    backends = three_backends()
    backends["alpha"] = ScriptedChatModel(reply="The answer is four.", usage=(10, 5))
    backends["beta"] = ScriptedChatModel(reply="It is 4 because 2 plus 2 makes 4.", usage=(11, 7))
    backends["gamma"] = ScriptedChatModel(reply="five", usage=(12, 1))
    llm = blender(tiny_ranker, backends=backends)
    msg = llm.invoke([HumanMessage(QUESTION)])
    meta = msg.response_metadata["blender"]
    texts = [c["text"] for c in meta["candidates"]]
    order = expected_order(tiny_ranker, QUESTION, texts)
    names = [c["backend"] for c in meta["candidates"]]
    assert meta["best"] == names[order[0]]
    assert meta["chosen"] == [names[order[0]]]
    assert [c["rank"] for c in meta["candidates"]] == [order.index(i) + 1 for i in range(3)]
    assert msg.content == texts[order[0]]
    assert meta["fuser"] is None
    assert meta["fused"] is False
    check_account(meta)
    assert msg.usage_metadata == {"input_tokens": 33, "output_tokens": 13, "total_tokens": 46}
    assert meta["usage_by_backend"]["beta"] == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert msg.response_metadata["model_name"] == "blender-llm"


def test_fuser_chat_model_fuses_the_top_k_and_its_usage_counts(tiny_ranker: PairRanker) -> None:
    fuser = ScriptedChatModel(reply="Two plus two is four.", usage=(50, 6), model_name="fuser-1")
    backends = {n: ScriptedChatModel(reply=r, usage=(1, 1)) for n, r in three_backends_replies().items()}
    llm = blender(tiny_ranker, backends=backends, fuser=fuser, top_k=2)
    msg = llm.invoke(QUESTION)
    meta = msg.response_metadata["blender"]
    assert msg.content == "Two plus two is four."
    assert meta["fused"] is True
    assert meta["fuser"] == "chat:fuser-1"
    assert meta["fuser_error"] is None
    order = expected_order(tiny_ranker, QUESTION, list(three_backends_replies().values()))
    top = [list(backends)[i] for i in order[:2]]
    assert meta["chosen"] == top
    # the fuser read the question and the two best answers, best first
    prompt = fuser.calls[-1]["messages"][-1].text
    replies = three_backends_replies()
    assert QUESTION in prompt
    assert prompt.index(replies[top[0]]) < prompt.index(replies[top[1]])
    left_out = next(r for n, r in replies.items() if n not in top)
    assert left_out not in prompt
    assert msg.usage_metadata == {"input_tokens": 53, "output_tokens": 9, "total_tokens": 62}
    assert meta["fuser_usage"] == {"input_tokens": 50, "output_tokens": 6, "total_tokens": 56}


def three_backends_replies() -> dict[str, str]:
    return {n: m.reply for n, m in three_backends().items()}


def test_a_core_fuser_object_is_accepted(tiny_ranker: PairRanker) -> None:
    fuser = ChatModelFuser(ScriptedChatModel(reply="fused"), name="my-fuser")
    msg = blender(tiny_ranker, fuser=fuser).invoke(QUESTION)
    assert msg.content == "fused"
    assert msg.response_metadata["blender"]["fuser"] == "my-fuser"


# ---------------------------------------------------------------- streaming


def test_stream_yields_only_the_fused_answer_then_the_account(tiny_ranker: PairRanker) -> None:
    fuser = ScriptedChatModel(reply="Two plus two is four.", model_name="fuser-1")
    llm = blender(tiny_ranker, fuser=fuser)
    chunks = list(llm.stream(QUESTION))
    texts = [c.content for c in chunks]
    assert texts == ["Two", " plus", " two", " is", " four.", ""]
    assert all(c.response_metadata.get("blender") is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.response_metadata["blender"]["fused"] is True
    assert last.usage_metadata is not None
    assert last.usage_metadata["total_tokens"] > 0
    assert sum(c.usage_metadata is not None for c in chunks) == 1


async def test_astream_yields_the_chosen_answer_without_a_fuser(tiny_ranker: PairRanker) -> None:
    llm = blender(tiny_ranker)
    chunks = [c async for c in llm.astream(QUESTION)]
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    meta = full.response_metadata["blender"]
    best = next(c for c in meta["candidates"] if c["backend"] == meta["best"])
    assert full.content == best["text"]
    assert len(chunks) == 2
    assert chunks[-1].chunk_position == "last"


def test_fuser_past_its_time_to_first_token_falls_back_to_the_best(tiny_ranker: PairRanker) -> None:
    fuser = ScriptedChatModel(reply="too slow to matter", delay=3.0)
    llm = blender(tiny_ranker, fuser=fuser, timeout=0.5)
    start = time.perf_counter()
    msg = llm.invoke(QUESTION)
    assert time.perf_counter() - start < 2.0
    meta = msg.response_metadata["blender"]
    assert meta["fused"] is False
    assert meta["chosen"] == [meta["best"]]
    assert "time-to-first-token" in meta["fuser_error"]
    best = next(c for c in meta["candidates"] if c["backend"] == meta["best"])
    assert msg.content == best["text"]


async def test_async_fuser_time_to_first_token_and_errors_fall_back(tiny_ranker: PairRanker) -> None:
    slow = blender(tiny_ranker, fuser=ScriptedChatModel(reply="slow", delay=3.0), timeout=0.5)
    start = time.perf_counter()
    chunks = [c async for c in slow.astream(QUESTION)]
    assert time.perf_counter() - start < 2.0
    assert "time-to-first-token" in chunks[-1].response_metadata["blender"]["fuser_error"]
    broken = blender(tiny_ranker, fuser=ScriptedChatModel(error="fuser down"))
    msg = await broken.ainvoke(QUESTION)
    assert msg.response_metadata["blender"]["fuser_error"] == "RuntimeError: fuser down"
    assert msg.content in three_backends_replies().values()


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.tokens: list[tuple[Any, str]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.starts.append({"run_id": run_id, **kwargs})

    def on_llm_new_token(self, token: str, *, run_id: Any, **kwargs: Any) -> None:
        self.tokens.append((run_id, token))


def walk(run: Any) -> Iterator[Any]:
    yield run
    for child in run.child_runs:
        yield from walk(child)


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_backend_and_fuser_calls_are_tagged_child_runs(tiny_ranker: PairRanker, mode: str) -> None:
    collector = RunCollectorCallbackHandler()
    llm = blender(tiny_ranker, fuser=ScriptedChatModel(reply="fused answer"))
    if mode == "invoke":
        llm.invoke(QUESTION, config={"callbacks": [collector]})
    else:
        list(llm.stream(QUESTION, config={"callbacks": [collector]}))
    (root,) = collector.traced_runs
    assert root.name == "BlenderLLM"
    children = {c.name: c for c in root.child_runs}
    assert set(children) == {"alpha", "beta", "gamma", "fuser"}
    for name in ("alpha", "beta", "gamma"):
        assert {"blender:backend", "nostream"} <= set(children[name].tags)
        assert children[name].parent_run_id == root.id
    assert {"blender:fuser", "nostream"} <= set(children["fuser"].tags)


async def test_plain_handlers_see_one_chat_model_unless_asked(tiny_ranker: PairRanker) -> None:
    recorder = TokenRecorder()
    llm = blender(tiny_ranker, fuser=ScriptedChatModel(reply="fused answer"))
    chunks = [c async for c in llm.astream(QUESTION, config={"callbacks": [recorder]})]
    assert len(recorder.starts) == 1  # token counters and printers see the BlenderLLM only
    (_run_id,) = {r for r, _ in recorder.tokens}
    assert "".join(t for _, t in recorder.tokens) == "".join(c.text for c in chunks)

    recorder = TokenRecorder()
    every = blender(tiny_ranker, backend_callbacks="all")
    await every.ainvoke(QUESTION, config={"callbacks": [recorder]})
    blender_run = recorder.starts[0]["run_id"]
    backend_starts = recorder.starts[1:]
    assert len(backend_starts) == 3
    assert all(s["parent_run_id"] == blender_run and "nostream" in s["tags"] for s in backend_starts)


def test_langgraph_message_stream_carries_only_the_blended_answer(tiny_ranker: PairRanker) -> None:
    from langgraph.graph import START, MessagesState, StateGraph

    llm = blender(tiny_ranker, fuser=ScriptedChatModel(reply="fused answer here"))

    def node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("model", node).add_edge(START, "model").compile()
    streamed = [m for m, _ in graph.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="messages")]
    text = "".join(m.text for m in streamed if isinstance(m, AIMessageChunk))
    assert text == "fused answer here"
    assert not any(m.text in three_backends_replies().values() for m in streamed)


# ---------------------------------------------------------------- tools


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


def tool_backends() -> dict[str, ScriptedChatModel]:
    return {
        "paris": ScriptedChatModel(tool_args={"city": "Paris"}),
        "lyon": ScriptedChatModel(tool_args={"city": "Lyon"}),
        "paris2": ScriptedChatModel(tool_args={"city": "Paris"}),
    }


def test_bind_tools_forwards_to_every_backend_without_mutating(tiny_ranker: PairRanker) -> None:
    backends = tool_backends()
    llm = blender(tiny_ranker, backends=backends, fuser=ScriptedChatModel(reply="never used"))
    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    msg = bound.invoke("Weather in France?")
    assert llm.backends == backends
    assert all(b is backends[n] for n, b in llm.backends.items())
    for backend in backends.values():
        (call,) = backend.calls
        assert [t["function"]["name"] for t in call["tools"]] == ["get_weather"]
        assert call["tool_choice"] == "get_weather"
    meta = msg.response_metadata["blender"]
    ranked = [
        canonical_tool_calls([{"name": "get_weather", "args": {"city": c}}])
        for c in ("Paris", "Lyon", "Paris")
    ]
    order = expected_order(tiny_ranker, prompt_text([HumanMessage("Weather in France?")]), ranked)
    assert meta["best"] == list(backends)[order[0]]
    assert meta["fused"] is False
    assert meta["fuser"] is None
    (call,) = msg.tool_calls
    assert call["name"] == "get_weather"
    assert call["args"] == backends[meta["best"]].tool_args
    assert msg.content == ""


def test_equal_tool_calls_rank_equal(tiny_ranker: PairRanker) -> None:
    msg = blender(tiny_ranker, backends=tool_backends()).bind_tools([get_weather]).invoke("Weather?")
    scores = {c["backend"]: c["score"] for c in msg.response_metadata["blender"]["candidates"]}
    assert scores["paris"] == pytest.approx(scores["paris2"])


async def test_streamed_tool_call_rebuilds_the_calls(tiny_ranker: PairRanker) -> None:
    bound = blender(tiny_ranker, backends=tool_backends()).bind_tools([get_weather])
    full = None
    async for chunk in bound.astream("Weather in France?"):
        full = chunk if full is None else full + chunk
    assert isinstance(full, AIMessageChunk)
    (call,) = full.tool_calls
    assert call["name"] == "get_weather"
    assert call["args"]["city"] in ("Paris", "Lyon")
    assert call["id"]


def test_agent_loop_with_create_agent(tiny_ranker: PairRanker) -> None:
    from langchain.agents import create_agent

    agent = create_agent(model=blender(tiny_ranker, backends=tool_backends()), tools=[get_weather])
    result = agent.invoke({"messages": [HumanMessage("Weather in France?")]})
    kinds = [m.type for m in result["messages"]]
    assert kinds == ["human", "ai", "tool", "ai"]
    assert result["messages"][2].content.startswith("It is sunny in ")
    assert result["messages"][-1].content == "hello there"


def test_with_structured_output_parses_the_chosen_call(tiny_ranker: PairRanker) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    backends = {n: ScriptedChatModel(tool_args={"city": c}) for n, c in (("a", "Paris"), ("b", "Rome"))}
    out = blender(tiny_ranker, backends=backends).with_structured_output(City).invoke("Pick a city.")
    assert isinstance(out, City)
    assert out.city in ("Paris", "Rome")


# ---------------------------------------------------------------- LCEL and construction


def test_lcel_prompt_model_parser_and_batch(tiny_ranker: PairRanker) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    chain = prompt | blender(tiny_ranker, fuser=ScriptedChatModel(reply="Four.")) | StrOutputParser()
    assert chain.invoke({"question": QUESTION}) == "Four."
    assert chain.batch([{"question": QUESTION}, {"question": "And 3 + 3?"}]) == ["Four.", "Four."]


def test_any_runnable_answering_text_is_a_backend(tiny_ranker: PairRanker) -> None:
    from langchain_core.runnables import RunnableLambda

    chain = RunnableLambda(lambda messages: f"echo: {messages[-1].text}")
    broken = RunnableLambda(lambda messages: 42)
    llm = blender(tiny_ranker, backends={"chain": chain, "broken": broken, "model": ScriptedChatModel()})
    meta = llm.invoke(QUESTION).response_metadata["blender"]
    candidates = {c["backend"]: c for c in meta["candidates"]}
    assert candidates["chain"]["text"] == f"echo: {QUESTION}"
    assert candidates["broken"]["error"] == "TypeError: backend 'broken' returned int, expected an AI message"


def test_list_backends_are_named_after_their_models(tiny_ranker: PairRanker) -> None:
    a, b = ScriptedChatModel(model_name="m"), ScriptedChatModel(model_name="m")
    llm = BlenderLLM(backends=[a, b, ScriptedChatModel(model_name="n")], ranker=tiny_ranker)
    assert list(llm.backends) == ["m", "m#2", "n"]
    assert llm.backends["m"] is a
    assert llm.backends["m#2"] is b


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backends": []}, "backends is empty"),
        ({"backends": ["not a model"]}, "not a LangChain chat model"),
        ({"min_successes": 4}, "min_successes=4 but only 3 backends"),
        ({"strategy": "random"}, "unknown strategy 'random'"),
        ({"ranker": 42}, "ranker must be a ranker object"),
        ({"fuser": "gpt"}, "fuser must be None"),
        ({"timeout": -1.0}, "timeout must be a positive, finite number"),
        ({"timeout": float("nan")}, "timeout must be a positive, finite number"),
        ({"top_k": 0}, "top_k must be a positive int"),
    ],
)
def test_invalid_settings_are_rejected(tiny_ranker: PairRanker, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        blender(tiny_ranker, **kwargs)


def test_per_call_model_override_is_rejected(tiny_ranker: PairRanker) -> None:
    with pytest.raises(ValueError, match="per-call model override"):
        blender(tiny_ranker).invoke(QUESTION, model="gpt-x")


def test_stop_and_standard_params_reach_the_backends(tiny_ranker: PairRanker) -> None:
    backends = three_backends()
    blender(tiny_ranker, backends=backends, temperature=0.0, max_tokens=64).invoke(QUESTION, stop=["\n"])
    for backend in backends.values():
        (call,) = backend.calls
        assert call["stop"] == ["\n"]
        assert call["temperature"] == 0.0
        assert call["max_tokens"] == 64


def test_input_messages_are_not_modified(tiny_ranker: PairRanker) -> None:
    messages = [HumanMessage(QUESTION)]
    before = [m.model_dump() for m in messages]
    msg = blender(tiny_ranker).invoke(messages)
    assert [m.model_dump() for m in messages] == before
    assert isinstance(msg, AIMessage)


def test_backend_retries(tiny_ranker: PairRanker) -> None:
    class Flaky(ScriptedChatModel):
        def _respond(self, messages: Any, kwargs: dict[str, Any]) -> AIMessage:
            if not self.calls:
                self.calls.append({})
                raise RuntimeError("first call fails")
            return super()._respond(messages, kwargs)

    flaky = Flaky(reply="second time lucky")
    msg = blender(tiny_ranker, backends={"flaky": flaky, "ok": ScriptedChatModel()}, max_retries=1).invoke(
        QUESTION
    )
    assert {c["backend"]: c["error"] for c in msg.response_metadata["blender"]["candidates"]}["flaky"] is None


async def test_event_loop_keeps_running_during_ainvoke(tiny_ranker: PairRanker) -> None:
    async with ticking(0.01) as ticks:
        await blender(tiny_ranker, backends=three_backends(delay=0.3)).ainvoke(QUESTION)
    assert ticks.count >= 10
