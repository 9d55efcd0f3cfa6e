"""Every LangChain consumer runs with each kind of ranker (PairRM, a reward model, an LLM judge) and
chooses what that ranker ranks first."""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage

from blender_core.ranking import Ranker
from blender_core.ranking.interface import rank_one
from langchain_blender import BlenderLLM, PairRankerCompressor, PairRankerRunnable, choose_best_message
from tests.helpers.langchain_fakes import ScriptedChatModel

QUESTION = "What is the capital of France?"
ANSWERS = {
    "short": "Paris.",
    "long": "The capital of France is Paris, on the Seine.",
    "wrong": "Lyon, I think.",
}


def best_of(ranker: Ranker, texts: list[str]) -> int:
    return rank_one(ranker, QUESTION, texts)[0].index


def test_blender_llm(any_ranker: Ranker) -> None:
    llm = BlenderLLM(backends={k: ScriptedChatModel(reply=v) for k, v in ANSWERS.items()}, ranker=any_ranker)
    msg = llm.invoke(QUESTION)
    best = list(ANSWERS)[best_of(any_ranker, list(ANSWERS.values()))]
    assert msg.response_metadata["blender"]["best"] == best
    assert msg.text == ANSWERS[best]


def test_compressor_runnable_and_selection(any_ranker: Ranker) -> None:
    texts = list(ANSWERS.values())
    expected = [c.index for c in rank_one(any_ranker, QUESTION, texts)]
    docs = [Document(page_content=t, metadata={"k": k}) for k, t in ANSWERS.items()]
    kept = PairRankerCompressor(ranker=any_ranker, top_n=None).compress_documents(docs, QUESTION)
    assert [d.page_content for d in kept] == [texts[i] for i in expected]
    out = PairRankerRunnable(any_ranker).invoke({"prompt": QUESTION, "candidates": texts})
    assert out["order"] == expected
    index, meta = choose_best_message([HumanMessage(QUESTION)], [AIMessage(t) for t in texts], any_ranker)
    assert index == expected[0]
    assert meta["best"] == f"candidate_{expected[0]}"


def test_agent_middleware(any_ranker: Ranker) -> None:
    from langchain.agents import create_agent

    from langchain_blender import BestOfModelsMiddleware

    primary = ScriptedChatModel(reply=ANSWERS["short"], model_name="primary-m")
    other = ScriptedChatModel(reply=ANSWERS["long"], model_name="other-m")
    agent = create_agent(model=primary, middleware=[BestOfModelsMiddleware(other, ranker=any_ranker)])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    final = result["messages"][-1]
    best = best_of(any_ranker, [ANSWERS["short"], ANSWERS["long"]])
    assert final.response_metadata["blender"]["best"] == ["primary", "other-m"][best]
    assert final.content == [ANSWERS["short"], ANSWERS["long"]][best]
