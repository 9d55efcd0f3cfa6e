"""Every LlamaIndex consumer runs with each kind of ranker (PairRM, a reward model, an LLM judge)."""

from __future__ import annotations

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.schema import NodeWithScore, TextNode

from blender_core.ranking import Ranker
from blender_core.ranking.interface import rank_one
from llamaindex_blender import BlenderLLM, PairRankerRerank
from tests.helpers.llamaindex_fakes import FakeLLM

QUESTION = "What is the capital of France?"
ANSWERS = {
    "short": "Paris.",
    "long": "The capital of France is Paris, on the Seine.",
    "wrong": "Lyon, I think.",
}


def test_blender_llm(any_ranker: Ranker) -> None:
    llm = BlenderLLM([FakeLLM(text=t, name=k) for k, t in ANSWERS.items()], ranker=any_ranker)
    response = llm.chat([ChatMessage(role="user", content=QUESTION)])
    best = rank_one(any_ranker, QUESTION, list(ANSWERS.values()))[0].index
    assert response.raw["blender"]["best"] == list(ANSWERS)[best]
    assert response.message.content == list(ANSWERS.values())[best]


def test_node_postprocessor(any_ranker: Ranker) -> None:
    texts = list(ANSWERS.values())
    nodes = [NodeWithScore(node=TextNode(text=t, id_=k), score=0.5) for k, t in ANSWERS.items()]
    out = PairRankerRerank(ranker=any_ranker, top_n=None).postprocess_nodes(nodes, query_str=QUESTION)
    assert [n.node.get_content() for n in out] == [
        texts[c.index] for c in rank_one(any_ranker, QUESTION, texts)
    ]
