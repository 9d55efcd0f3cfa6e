"""BlenderLLM over fake LlamaIndex LLMs: concurrency, failures, timeouts, fusion, streaming, events, usage."""

from __future__ import annotations

import time
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponseGen,
    MessageRole,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler, TokenCountingHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from blender_core.ensemble import EnsembleError, FusionError, render_prompt
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from llamaindex_blender import BlenderLLM, LlamaIndexFuser
from tests.helpers.llamaindex_fakes import FakeLLM

ANSWERS = {
    "alpha": "the answer is four because two and two make four",
    "beta": "four",
    "gamma": "it is 5, I think",
}
QUESTION = "what is two plus two?"


class BrokenStreamLLM(FakeLLM):
    """A fuser whose stream fails before its first token."""

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            raise RuntimeError("stream broke")
            yield  # pragma: no cover

        return gen()


def fakes(delay: float = 0.0, **overrides: Any) -> dict[str, FakeLLM]:
    return {
        name: FakeLLM(**{"text": text, "delay": delay, "name": name, **overrides.get(name, {})})
        for name, text in ANSWERS.items()
    }


def user(text: str = QUESTION) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.SYSTEM, content="be brief"), ChatMessage(role=MessageRole.USER, content=text)]


def ranked_best(ranker: PairRanker, prompt: str, names: list[str]) -> str:
    """The backend the ranker itself prefers among ``names``, derived independently of BlenderLLM."""
    (r,) = ranker.rank([prompt], [[ANSWERS[n] for n in names]])
    return names[r.best]


def raw_of(x: Any) -> Any:
    """A response's raw (or an event's payload), checked to be there."""
    value = x if isinstance(x, dict) else x.raw
    assert isinstance(value, dict)
    return value


CHAT_PROMPT = render_prompt([("system", "be brief"), ("user", QUESTION)])


# ---------------------------------------------------------------------- construction and metadata
def test_metadata_is_the_most_restrictive_of_the_backends(tiny_ranker: PairRanker) -> None:
    backends = fakes(alpha={"window": 8000, "max_out": 500}, beta={"window": 2000, "max_out": -1})
    llm = BlenderLLM(backends, ranker=tiny_ranker)
    meta = llm.metadata
    assert meta.context_window == 2000
    assert meta.num_output == 256  # beta's -1 means unknown and is ignored
    assert meta.is_chat_model is True
    assert meta.model_name == "blender(alpha,beta,gamma)"


def test_a_list_of_backends_gets_unique_names(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM([FakeLLM(name="m"), FakeLLM(name="m"), FakeLLM(name="n")], ranker=tiny_ranker)
    assert list(llm.backends) == ["m", "m#2", "n"]  # one naming for every adapter


def test_bad_settings_are_refused(tiny_ranker: PairRanker) -> None:
    with pytest.raises(ValueError, match="backends is empty"):
        BlenderLLM([], ranker=tiny_ranker)
    with pytest.raises(ValueError, match="min_successes=4 but only 3 backends"):
        BlenderLLM(fakes(), ranker=tiny_ranker, min_successes=4)
    with pytest.raises(ValueError, match="timeout must be a positive, finite number of seconds"):
        BlenderLLM(fakes(), ranker=tiny_ranker, timeout=0)
    with pytest.raises(ValueError, match="unknown strategy"):
        BlenderLLM(fakes(), ranker=tiny_ranker, strategy="best")
    with pytest.raises(ValueError, match="fuser must be None, a BaseFuser or a LlamaIndex LLM"):
        BlenderLLM(fakes(), ranker=tiny_ranker, fuser="gpt")


# ---------------------------------------------------------------------- choosing
def test_chat_returns_the_answer_the_ranker_prefers(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker)
    messages = user()
    before = [m.model_dump() for m in messages]
    response = llm.chat(messages)
    best = ranked_best(tiny_ranker, CHAT_PROMPT, list(ANSWERS))
    assert response.message.content == ANSWERS[best]
    assert response.raw["blender"]["best"] == best
    assert [c["backend"] for c in response.raw["blender"]["candidates"]] == list(ANSWERS)
    assert [m.model_dump() for m in messages] == before  # the caller's messages are untouched


def test_complete_ranks_against_the_prompt(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker)
    response = llm.complete(QUESTION)
    best = ranked_best(tiny_ranker, QUESTION, list(ANSWERS))
    assert response.text == ANSWERS[best]
    assert response.raw["blender"]["best"] == best


def test_sync_backends_run_concurrently(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(delay=1.0), ranker=tiny_ranker)
    llm.chat(user())  # warm the ranker up
    start = time.perf_counter()
    response = llm.chat(user())
    elapsed = time.perf_counter() - start
    assert 0.95 < elapsed < 2.0, elapsed
    assert all(c["latency_s"] >= 0.95 for c in response.raw["blender"]["candidates"])


async def test_async_backends_run_concurrently(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(delay=1.0), ranker=tiny_ranker)
    await llm.acomplete(QUESTION)  # warm the ranker up
    start = time.perf_counter()
    response = await llm.achat(user())
    elapsed = time.perf_counter() - start
    assert 0.95 < elapsed < 2.0, elapsed
    assert response.message.content == ANSWERS[ranked_best(tiny_ranker, CHAT_PROMPT, list(ANSWERS))]


def test_failures_and_timeouts_are_dropped_and_reported(tiny_ranker: PairRanker) -> None:
    backends = fakes(beta={"error": "boom"}, gamma={"delay": 2.0})
    llm = BlenderLLM(backends, ranker=tiny_ranker, timeout=0.5)
    start = time.perf_counter()
    response = llm.chat(user())
    assert time.perf_counter() - start < 1.5  # the slow backend is not waited for
    assert response.message.content == ANSWERS["alpha"]
    by_name = {c["backend"]: c for c in response.raw["blender"]["candidates"]}
    assert (by_name["alpha"]["error"], by_name["alpha"]["rank"]) == (None, 1)
    assert (by_name["beta"]["error"], by_name["beta"]["score"]) == ("RuntimeError: boom", None)
    assert by_name["gamma"]["error"].startswith("TimeoutError")
    assert response.raw["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


async def test_async_timeouts_are_dropped(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(gamma={"delay": 5.0}), ranker=tiny_ranker, timeout=0.5)
    start = time.perf_counter()
    response = await llm.achat(user())
    assert time.perf_counter() - start < 1.5
    assert response.raw["blender"]["candidates"][2]["error"].startswith("TimeoutError")
    assert response.message.content == ANSWERS[ranked_best(tiny_ranker, CHAT_PROMPT, ["alpha", "beta"])]


def test_too_few_answers_is_a_clear_error(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(alpha={"error": "down"}, beta={"error": "down"}), ranker=tiny_ranker, min_successes=2)
    with pytest.raises(EnsembleError, match=r"only 1 of 3 backends answered, fewer than min_successes=2"):
        llm.chat(user())


async def test_all_failing_is_a_clear_error_async(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(alpha={"error": "down"}, beta={"error": "down"}, gamma={"error": "down"}), ranker=tiny_ranker)
    with pytest.raises(EnsembleError, match=r"only 0 of 3 backends answered.*alpha: RuntimeError: down"):
        await llm.acomplete(QUESTION)


# ---------------------------------------------------------------------- fusion and usage
def test_a_llamaindex_llm_fuses_the_top_k_and_its_usage_is_summed(tiny_ranker: PairRanker) -> None:
    fuser = FakeLLM(text="fused: four", prompt_tokens=100, completion_tokens=7, name="fuser")
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, fuser=fuser, top_k=2)
    assert isinstance(llm.fuser, LlamaIndexFuser)
    response = llm.chat(user())
    meta = response.raw["blender"]
    assert response.message.content == "fused: four"
    assert (meta["fused"], meta["fuser"]) == (True, "llamaindex:fuser")
    (r,) = tiny_ranker.rank([CHAT_PROMPT], [list(ANSWERS.values())])
    assert meta["chosen"] == [list(ANSWERS)[i] for i in r.order[:2]]
    assert response.raw["usage"] == {"prompt_tokens": 3 * 3 + 100, "completion_tokens": 3 * 5 + 7, "total_tokens": 24 + 107}


def test_fuser_failure_falls_back_to_the_best_answer(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, fuser=FakeLLM(error="fuser down"))
    response = llm.chat(user())
    assert response.message.content == ANSWERS[ranked_best(tiny_ranker, CHAT_PROMPT, list(ANSWERS))]
    assert response.raw["blender"]["fused"] is False
    assert response.raw["blender"]["fuser_error"] == "RuntimeError: fuser down"


def test_token_counting_reads_the_summed_usage(tiny_ranker: PairRanker) -> None:
    counter = TokenCountingHandler(tokenizer=lambda s: s.split())
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, callback_manager=CallbackManager([counter]))
    llm.chat(user())
    llm.complete(QUESTION)
    assert counter.prompt_llm_token_count == 2 * 3 * 3
    assert counter.completion_llm_token_count == 2 * 3 * 5


async def test_llamaindex_fuser_prompts_and_usage() -> None:
    echoed = LlamaIndexFuser(MockLLM()).fuse(["say hi"], [["hi", "hello"]])[0]  # MockLLM echoes its prompt
    assert "Instruction:\nsay hi" in echoed
    assert "Candidate 1:\nhi" in echoed
    assert "Candidate 2:\nhello" in echoed
    fuser = LlamaIndexFuser(FakeLLM(text="merged answer", prompt_tokens=10, completion_tokens=2, name="f"))
    sink: list[dict[str, int]] = []
    assert fuser.fuse(["q"], [["a", "b"]], usage_sink=sink) == ["merged answer"]
    assert await fuser.afuse(["q", "r"], [["a"], ["b"]], usage_sink=sink) == ["merged answer"] * 2
    assert "".join(fuser.stream("q", ["a"], usage_sink=sink)) == "merged answer"
    assert "".join([p async for p in fuser.astream("q", ["a"], usage_sink=sink)]) == "merged answer"
    assert sink == [{"input_tokens": 10, "output_tokens": 2}] * 5


# ---------------------------------------------------------------------- streaming
def test_stream_chat_streams_the_fuser_tokens(tiny_ranker: PairRanker) -> None:
    fuser = FakeLLM(text="two plus two is four", prompt_tokens=50, completion_tokens=5, name="fuser")
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, fuser=fuser)
    chunks = list(llm.stream_chat(user()))
    assert [c.delta for c in chunks] == ["two", " plus", " two", " is", " four"]
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].message.content == "two plus two is four"
    assert all(c.raw is None for c in chunks[:-1])
    final = chunks[-1].raw
    assert (final["blender"]["fused"], final["blender"]["fuser"]) == (True, "llamaindex:fuser")
    assert final["usage"]["prompt_tokens"] == 3 * 3 + 50


async def test_astream_chat_streams_the_fuser_tokens(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(delay=0.2), ranker=tiny_ranker, fuser=FakeLLM(text="so it is four", name="fuser"))
    chunks = [c async for c in await llm.astream_chat(user())]
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].message.content == "so it is four"
    assert len(chunks) == 4
    assert chunks[-1].raw["blender"]["fused"] is True


def test_stream_without_a_fuser_yields_the_chosen_answer(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker)
    chunks = list(llm.stream_complete(QUESTION))
    best = ranked_best(tiny_ranker, QUESTION, list(ANSWERS))
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].text == ANSWERS[best]
    assert chunks[-1].raw["blender"]["best"] == best


async def test_astream_complete_matches_acomplete(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker)
    chunks = [c async for c in await llm.astream_complete(QUESTION)]
    assert chunks[-1].text == (await llm.acomplete(QUESTION)).text


def test_stream_falls_back_when_the_fuser_fails_before_its_first_token(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, fuser=BrokenStreamLLM())
    chunks = list(llm.stream_chat(user()))
    assert chunks[-1].message.content == ANSWERS[ranked_best(tiny_ranker, CHAT_PROMPT, list(ANSWERS))]
    assert chunks[-1].raw["blender"]["fuser_error"] == "RuntimeError: stream broke"
    strict = BlenderLLM(fakes(), ranker=tiny_ranker, fuser=BrokenStreamLLM(), fallback_on_fuser_error=False)
    with pytest.raises(FusionError, match="stream broke"):
        list(strict.stream_chat(user()))


def test_stream_falls_back_when_the_fuser_misses_the_first_token_deadline(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, fuser=FakeLLM(text="late", delay=2.0), timeout=0.5)
    start = time.perf_counter()
    chunks = list(llm.stream_chat(user()))
    assert time.perf_counter() - start < 1.5
    assert chunks[-1].message.content == ANSWERS[ranked_best(tiny_ranker, CHAT_PROMPT, list(ANSWERS))]
    assert raw_of(chunks[-1])["blender"]["fuser_error"] == "FirstItemTimeout: no output within 0.5 s (time-to-first-token limit)"


async def test_astream_falls_back_when_the_fuser_misses_the_first_token_deadline(tiny_ranker: PairRanker) -> None:
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, fuser=FakeLLM(text="late", delay=2.0), timeout=0.5)
    start = time.perf_counter()
    chunks = [c async for c in await llm.astream_chat(user())]
    assert time.perf_counter() - start < 1.5
    assert raw_of(chunks[-1])["blender"]["fused"] is False
    assert raw_of(chunks[-1])["blender"]["fuser_error"].startswith("FirstItemTimeout")


# ---------------------------------------------------------------------- events
def test_callback_and_instrumentation_events(tiny_ranker: PairRanker, collected: list[Any]) -> None:
    debug = LlamaDebugHandler()
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, callback_manager=CallbackManager([debug]))
    response = llm.chat(user())
    # one callback LLM event, the blender's own: the backends report to their own callback managers
    (pair,) = debug.get_llm_inputs_outputs()
    assert raw_of(pair[1].payload)["response"].raw["blender"]["best"] == raw_of(response)["blender"]["best"]
    starts = [e for e in collected if isinstance(e, LLMChatStartEvent)]
    ends: list[Any] = [e for e in collected if isinstance(e, LLMChatEndEvent)]
    assert len(starts) == len(ends) == 4  # the blender and its three backends
    mine = [e for e in ends if e.response is not None and e.response.raw and "blender" in e.response.raw]
    assert [e.response.message.content for e in mine] == [response.message.content]


def test_stream_events_fire_when_the_stream_ends(tiny_ranker: PairRanker) -> None:
    debug = LlamaDebugHandler()
    llm = BlenderLLM(fakes(), ranker=tiny_ranker, callback_manager=CallbackManager([debug]))
    chunks = list(llm.stream_chat(user()))
    (pair,) = debug.get_event_pairs(CBEventType.LLM)
    assert raw_of(pair[1].payload)["response"] is chunks[-1]


# ---------------------------------------------------------------------- LlamaIndex integration
@pytest.fixture
def settings_llm():
    saved = Settings._llm
    yield
    Settings._llm = saved


def test_settings_llm_in_a_query_engine(tiny_ranker: PairRanker, collected: list[Any], settings_llm: None) -> None:
    Settings.llm = BlenderLLM(fakes(), ranker=tiny_ranker)
    docs = [Document(text="two plus two is four"), Document(text="the sky is blue")]
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))
    response = index.as_query_engine(similarity_top_k=2).query(QUESTION)
    (end,) = [e for e in collected if isinstance(e, LLMChatEndEvent) and e.response and "blender" in (e.response.raw or {})]
    best = raw_of(end.response)["blender"]["best"]
    # the ranker saw the query engine's prompt; its own choice among the answers must be what was returned
    prompt = render_prompt([(m.role.value, m.content or "") for m in end.messages])
    assert best == ranked_best(tiny_ranker, prompt, list(ANSWERS))
    assert str(response) == ANSWERS[best]
    assert len(response.source_nodes) == 2

