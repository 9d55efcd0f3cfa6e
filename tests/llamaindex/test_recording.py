"""The LlamaIndex BlenderLLM records without the server: its ``sinks`` get every answered chat and completion
(sync, async, streamed), with the chat, and a TrafficRecorder among them writes the lines label-pairs reads."""

from __future__ import annotations

import json
from pathlib import Path

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from blender_core.ensemble.sinks import Answered
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.recording import TrafficRecorder
from blender_core.recording.files import traffic_files
from llamaindex_blender import BlenderLLM
from tests.helpers.llamaindex_fakes import FakeLLM

CHAT = [
    ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
    ChatMessage(role=MessageRole.USER, content="What is 2 + 2?"),
]


def backends() -> list[FakeLLM]:
    return [FakeLLM(text="four", name="a"), FakeLLM(text="It is 4, since 2 + 2 = 4.", name="b"), FakeLLM(text="5", name="c")]


async def test_every_entry_point_hands_the_chat_and_outcome_to_the_sinks(tiny_ranker: PairRanker) -> None:
    seen: list[Answered] = []
    llm = BlenderLLM(backends(), ranker=tiny_ranker, sinks=[seen.append])
    chat = llm.chat(CHAT)
    streamed = list(llm.stream_chat(CHAT))[-1]
    achat = await llm.achat(CHAT)
    completed = llm.complete("2 + 2?")
    acompleted = await llm.acomplete("2 + 2?")
    assert [a.outcome.text for a in seen] == [
        chat.message.content,
        streamed.message.content,
        achat.message.content,
        completed.text,
        acompleted.text,
    ]
    assert seen[0].messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"})
    assert seen[3].messages == ({"role": "user", "content": "2 + 2?"},)
    assert seen[0].outcome.best.backend == chat.raw["blender"]["best"]


def test_a_traffic_recorder_as_sink_writes_the_served_choice(tiny_ranker: PairRanker, tmp_path: Path) -> None:
    with TrafficRecorder(tmp_path) as recorder:
        reply = BlenderLLM(backends(), ranker=tiny_ranker, sinks=[recorder]).chat(CHAT)
        assert recorder.flush()
    (line,) = (json.loads(text) for f in traffic_files(tmp_path) for text in f.read_text().splitlines())
    assert line["answer"] == reply.message.content
    assert line["best_model"] == reply.raw["blender"]["best"]
    assert line["models"] == ["a", "b", "c"]
    assert line["messages"][0] == {"role": "system", "content": "Be brief."}


def test_a_failing_sink_never_fails_the_call(tiny_ranker: PairRanker) -> None:
    def broken(answered: Answered) -> None:
        raise OSError(28, "No space left on device")

    llm = BlenderLLM(backends(), ranker=tiny_ranker, sinks=[broken])
    assert llm.complete("2 + 2?").text
    assert llm.engine.sinks.errors == 1
