"""langchain_tests standard suites for BlenderLLM, offline: three scripted fake backends, the tiny ranker."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from blender_core.ranking.pairrm.pair_ranker import PairRanker
from langchain_blender import BlenderLLM
from tests.helpers.langchain_fakes import three_backends


class _BlenderParams:
    _ranker: PairRanker | None = None

    @pytest.fixture(autouse=True)
    def _tiny(self, tiny_ranker: PairRanker) -> None:
        type(self)._ranker = tiny_ranker

    @property
    def chat_model_class(self) -> type[BlenderLLM]:
        return BlenderLLM

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backends": three_backends(), "ranker": self._ranker, "top_k": 2}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # a BlenderLLM has no single model; it rejects per-call model overrides


class TestBlenderLLMUnit(_BlenderParams, ChatModelUnitTests):
    pass


class TestBlenderLLMIntegration(_BlenderParams, ChatModelIntegrationTests):
    pass
