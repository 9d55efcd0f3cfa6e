"""The LangChain BlenderLLM records without the server: its ``sinks`` get every answered call (invoke, stream,
async), with the chat, and a TrafficRecorder among them writes the lines label-pairs reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from blender_core.ensemble.sinks import Answered
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.recording import TrafficRecorder
from blender_core.recording.files import traffic_files
from langchain_blender import BlenderLLM
from tests.helpers.langchain_fakes import ScriptedChatModel, three_backends

CHAT = [
    SystemMessage("Be brief."),
    HumanMessage("What is 2 + 2?"),
    AIMessage("4"),
    HumanMessage("And 3 + 3?"),
]


async def test_every_entry_point_hands_the_chat_and_outcome_to_the_sinks(tiny_ranker: PairRanker) -> None:
    seen: list[Answered] = []
    llm = BlenderLLM(backends=three_backends(), ranker=tiny_ranker, top_k=2, sinks=[seen.append])
    whole = llm.invoke(CHAT)
    streamed = "".join(str(chunk.content) for chunk in llm.stream(CHAT))
    awaited = await llm.ainvoke("What is 2 + 2?")
    assert len(seen) == 3
    assert [a.outcome.text for a in seen] == [whole.content, streamed, awaited.content]
    assert seen[0].messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
    )
    assert seen[0].prompt.startswith("SYSTEM: Be brief.\nUSER: What is 2 + 2?\nASSISTANT: 4")
    assert seen[2].messages == ({"role": "user", "content": "What is 2 + 2?"},)
    meta = whole.response_metadata["blender"]
    assert seen[0].outcome.best.backend == meta["best"]


def test_a_traffic_recorder_as_sink_writes_the_served_choice(tiny_ranker: PairRanker, tmp_path: Path) -> None:
    with TrafficRecorder(tmp_path) as recorder:
        llm = BlenderLLM(backends=three_backends(), ranker=tiny_ranker, sinks=[recorder])
        reply = llm.invoke(CHAT)
        bound = llm.bind_tools([])  # a bound copy shares the engine, and its sinks
        bound.invoke("Hi")
        assert recorder.flush()
        assert recorder.stats().written == 2
    first, second = (json.loads(line) for f in traffic_files(tmp_path) for line in f.read_text().splitlines())
    assert first["answer"] == reply.content
    assert first["best_model"] == reply.response_metadata["blender"]["best"]
    assert first["models"] == ["alpha", "beta", "gamma"]
    assert first["messages"][-1] == {"role": "user", "content": "And 3 + 3?"}
    assert second["prompt"] == "Hi"


def test_a_failing_sink_never_fails_the_call(tiny_ranker: PairRanker) -> None:
    def broken(answered: Answered) -> None:
        raise RuntimeError("disk on fire")

    llm = BlenderLLM(backends=three_backends(), ranker=tiny_ranker, sinks=[broken])
    assert llm.invoke("What is 2 + 2?").content
    assert llm.engine.sinks.errors == 1


def test_sinks_must_be_callables(tiny_ranker: PairRanker) -> None:
    with pytest.raises(ValueError, match=r"sinks\[0\] is a str, not callable"):
        BlenderLLM(backends={"a": ScriptedChatModel()}, ranker=tiny_ranker, sinks=["traffic/"])
