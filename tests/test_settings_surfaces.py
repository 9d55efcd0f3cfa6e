"""The ensemble's settings are declared once (``blender_core.ensemble.EnsembleSettings``) and every surface
exposes exactly them: the LangChain ``BlenderLLM``, the LlamaIndex ``BlenderLLM`` and the server's
``[ensemble]`` section. Same names, same defaults, same errors, and each reaches the engine.

A setting added to one surface only fails ``test_every_surface_exposes_exactly_the_settings``; a setting
added to ``EnsembleSettings`` without a value in ``NON_DEFAULT`` / ``BAD`` below fails the tables' checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from llama_index.core.llms import LLM
from pydantic import BaseModel, ValidationError

from blender_core.app.serve.backends import build_served
from blender_core.app.serve.config import (
    ConfigError,
    EnsembleSection,
    HuggingFaceBackend,
    OpenAIBackend,
    parse_config,
)
from blender_core.ensemble import Backend, BackendSettings, EnsembleConfig, EnsembleSettings
from blender_core.ensemble.sinks import SinkFields
from langchain_blender import BlenderLLM as LangChainBlender
from llamaindex_blender import BlenderLLM as LlamaIndexBlender
from tests.helpers.core_fakes import LengthRanker
from tests.helpers.langchain_fakes import three_backends
from tests.helpers.llamaindex_fakes import FakeLLM

SETTINGS = EnsembleSettings.setting_names()
# Building the server's ChatOpenAI backends makes langchain_openai probe which socket options the OS has
# (it opens a socket and connects nowhere); pytest-socket warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:A test tried to use socket.socket")

# Each surface's own fields, beside its framework's and the ensemble settings: anything else a surface
# declares is an ensemble setting added there only.
OWN_FIELDS: dict[str, tuple[type[BaseModel], type[BaseModel] | None, set[str]]] = {
    "langchain": (
        LangChainBlender,
        BaseChatModel,
        {
            "backends",
            "ranker",
            "fuser",
            "backend_settings",
            "fuser_settings",
            "backend_callbacks",
            "model_name",
            "temperature",
            "max_tokens",
            "stop",
            "max_retries",
            "streaming",
            "tracer_provider",
            "sinks",
        },
    ),
    "llamaindex": (
        LlamaIndexBlender,
        LLM,
        {"backends", "ranker", "fuser", "backend_settings", "fuser_settings", "tracer_provider", "sinks"},
    ),
    "server": (EnsembleSection, None, {"ranker", "fuser"}),
}

# A valid value other than the default, for every setting.
NON_DEFAULT: dict[str, Any] = {
    "top_k": 2,
    "strategy": "knockout",
    "timeout": 7.5,
    "min_successes": 2,
    "max_concurrency": 2,
    "fusion_timeout": 12.0,
    "max_stuck_calls": 3,
    "rank_batch_window_ms": 5.0,
    "rank_max_batch": 1,
    "fallback_on_fuser_error": False,
    "quorum": 2,
    "quorum_grace": 0.5,
    "accept_score": 0.25,
    "layers": 2,
    "max_cost": 0.01,
    "trace_content": True,
}
# A bad value for every setting.
BAD: dict[str, Any] = {
    "top_k": 0,
    "strategy": "random",
    "timeout": -1.0,
    "min_successes": 0,
    "max_concurrency": 0,
    "fusion_timeout": float("nan"),
    "max_stuck_calls": True,
    "rank_batch_window_ms": 5000,
    "rank_max_batch": 0,
    "fallback_on_fuser_error": "sometimes",
    "quorum": 0,
    "quorum_grace": -1.0,
    "accept_score": float("inf"),
    "layers": 0,
    "max_cost": -0.5,
    "trace_content": "yes",
}


def test_both_adapters_take_sinks_from_one_declaration() -> None:
    declared = SinkFields.model_fields["sinks"]
    for model in (LangChainBlender, LlamaIndexBlender):
        field = model.model_fields["sinks"]
        assert (field.description, field.exclude) == (declared.description, True)


def test_the_tables_cover_every_setting() -> None:
    assert set(NON_DEFAULT) == set(SETTINGS)
    assert set(BAD) == set(SETTINGS)
    defaults = EnsembleSettings()
    for name, value in NON_DEFAULT.items():
        assert getattr(defaults, name) != value, name


@pytest.mark.parametrize("surface", sorted(OWN_FIELDS))
def test_every_surface_exposes_exactly_the_settings(surface: str) -> None:
    model, framework, own = OWN_FIELDS[surface]
    inherited = set(framework.model_fields) if framework is not None else set()
    settings = set(model.model_fields) - inherited - own
    assert settings == set(SETTINGS)


@pytest.mark.parametrize("surface", sorted(OWN_FIELDS))
def test_every_surface_has_the_same_defaults_and_descriptions(surface: str) -> None:
    model = OWN_FIELDS[surface][0]
    for name in SETTINGS:
        declared, exposed = EnsembleSettings.model_fields[name], model.model_fields[name]
        assert exposed.default == declared.default, name
        assert exposed.description == declared.description, name


def _server_config(**ensemble: Any) -> dict[str, Any]:
    backends = [
        {"name": n, "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": n} for n in ("a", "b", "c")
    ]
    return {"ensemble": {"ranker": "builtin:pairrm-minilm-l6", **ensemble}, "backends": backends}


def _langchain(**settings: Any) -> EnsembleConfig:
    return LangChainBlender(backends=three_backends(), ranker=LengthRanker(), **settings).engine.config


def _llamaindex(**settings: Any) -> EnsembleConfig:
    fakes = [FakeLLM(name=n) for n in ("a", "b", "c")]
    return LlamaIndexBlender(fakes, ranker=LengthRanker(), **settings).engine.config


def _server(**settings: Any) -> EnsembleConfig:
    served = build_served(parse_config(_server_config(**settings)), {})
    return served.llm.engine.config


BUILDERS = {"langchain": _langchain, "llamaindex": _llamaindex, "server": _server}


@pytest.mark.parametrize("surface", sorted(BUILDERS))
def test_every_setting_reaches_the_engine(surface: str) -> None:
    assert BUILDERS[surface]() == EnsembleConfig()
    assert BUILDERS[surface](**NON_DEFAULT) == EnsembleConfig(**NON_DEFAULT)


def _declared_error(name: str) -> str:
    with pytest.raises(ValidationError) as info:
        EnsembleConfig(**{name: BAD[name]})
    (error,) = info.value.errors()
    return str(error["msg"]).removeprefix("Value error, ")


@pytest.mark.parametrize("surface", sorted(BUILDERS))
@pytest.mark.parametrize("name", SETTINGS)
def test_every_surface_refuses_a_bad_value_with_the_same_error(surface: str, name: str) -> None:
    expected = _declared_error(name)
    with pytest.raises((ValueError, ConfigError)) as info:
        BUILDERS[surface](**{name: BAD[name]})
    assert expected.removeprefix(f"{name} ") in str(info.value)


def test_the_server_section_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"ensemble\.quorom: Extra inputs are not permitted"):
        parse_config(_server_config(quorom=2))  # a typo is an error, not an ignored setting


# ------------------------------------------------------------------------- per-backend settings
BACKEND_SETTINGS = BackendSettings.setting_names()
BACKEND_NON_DEFAULT: dict[str, Any] = {"tier": 2, "samples": 3, "price_in": 0.5, "price_out": 1.5}
BACKEND_BAD: dict[str, Any] = {"tier": 0, "samples": True, "price_in": -1.0, "price_out": float("nan")}


def test_the_backend_tables_cover_every_backend_setting() -> None:
    assert set(BACKEND_NON_DEFAULT) == set(BACKEND_SETTINGS) == set(BACKEND_BAD)


@pytest.mark.parametrize("surface", [Backend, OpenAIBackend, HuggingFaceBackend])
def test_every_backend_surface_declares_the_same_backend_settings(surface: type[BaseModel]) -> None:
    for name in BACKEND_SETTINGS:
        declared, exposed = BackendSettings.model_fields[name], surface.model_fields[name]
        assert (exposed.default, exposed.description) == (declared.default, declared.description), name


def _backend_config(**backend: Any) -> dict[str, Any]:
    tables = [
        {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "a", **backend},
        {"name": "b", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "b"},
    ]
    return {"ensemble": {"ranker": "builtin:pairrm-minilm-l6"}, "backends": tables}


def _lc_backend(**settings: Any) -> dict[str, BackendSettings]:
    models = three_backends()
    models["alpha"] = Backend(models["alpha"], **settings)  # type: ignore[assignment]
    return LangChainBlender(backends=models, ranker=LengthRanker()).engine.backends


def _li_backend(**settings: Any) -> dict[str, BackendSettings]:
    llms: list[Any] = [Backend(FakeLLM(name="alpha"), **settings), FakeLLM(name="b")]
    return LlamaIndexBlender(llms, ranker=LengthRanker()).engine.backends


def _server_backend(**settings: Any) -> dict[str, BackendSettings]:
    backends = build_served(parse_config(_backend_config(**settings)), {}).llm.engine.backends
    return {"alpha" if k == "a" else k: v for k, v in backends.items()}


BACKEND_BUILDERS = {"langchain": _lc_backend, "llamaindex": _li_backend, "server": _server_backend}


@pytest.mark.parametrize("surface", sorted(BACKEND_BUILDERS))
def test_every_backend_setting_reaches_the_engine(surface: str) -> None:
    assert BACKEND_BUILDERS[surface](**BACKEND_NON_DEFAULT)["alpha"] == BackendSettings(**BACKEND_NON_DEFAULT)


@pytest.mark.parametrize("surface", sorted(BACKEND_BUILDERS))
@pytest.mark.parametrize("name", BACKEND_SETTINGS)
def test_every_backend_surface_refuses_a_bad_value_with_the_same_error(surface: str, name: str) -> None:
    with pytest.raises(ValidationError) as info:
        BackendSettings(**{name: BACKEND_BAD[name]})
    expected = str(info.value.errors()[0]["msg"]).removeprefix("Value error, ").removeprefix(f"{name} ")
    with pytest.raises((ValueError, ConfigError)) as raised:
        BACKEND_BUILDERS[surface](**{name: BACKEND_BAD[name]})
    assert expected in str(raised.value)
