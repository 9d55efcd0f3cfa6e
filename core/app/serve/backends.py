"""The served ensemble: the configured backends as LangChain chat models, behind one ``BlenderLLM``.

``kind = "openai"`` backends are :class:`~blender_core.app.serve.upstream.UpstreamChat` over one shared
``httpx.AsyncClient`` per endpoint (its key in the client's headers, never read from ``OPENAI_API_KEY``; no
retries by default: the ensemble drops a failing backend; connections pooled, as many as the running
requests can use at once; error bodies scrubbed of keys). ``kind = "huggingface"`` backends are local chat
models (:func:`blender_core.app.local_chat.chat_backends`, as the demo's), one loaded model shared by every
backend naming it. The fuser is the named backend's model: an ``UpstreamChat`` (fused through
``BlenderLLM``'s chat-model fuser, streamed) or, for a local model, the local fuser over it
(:func:`blender_core.app.local_chat.local_fuser`, as the demo's).

Everything the ensemble does (concurrent calls, timeouts, ``min_successes``, ranking, streamed fusion with
its fallback, tools, the account, summed usage) is ``BlenderLLM``'s, hence the core engine's; the server
only translates the OpenAI protocol to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blender_core.app.local_chat import chat_backends, check_packages, load_chat_model, local_fuser
from blender_core.app.serve.config import (
    ConfigError,
    HuggingFaceBackend,
    OpenAIBackend,
    ServeConfig,
    backend_key,
    server_keys,
)
from blender_core.app.serve.recording import traffic_recorder
from blender_core.app.serve.redaction import Redactor, redacting_http_client
from blender_core.ensemble import Backend as EnsembleBackend

logger = logging.getLogger(__name__)

INSTALL_SERVE = 'pip install "blender-llm[serve]"'
# an OpenAI-compatible endpoint without keys (a local vLLM or Ollama) still gets a bearer header
NO_KEY = "no-key"


def check_serve_packages() -> None:
    """Raise one :class:`ImportError` naming the extra to install when the server's packages are missing."""
    import importlib.util

    needed = {
        "fastapi": "fastapi",
        "uvicorn": "uvicorn",
        "openai": "openai",
        "langchain_core": "langchain-core",
        "prometheus_client": "prometheus-client",
    }
    missing = [dist for module, dist in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(
            f"blender-llm serve needs {', '.join(missing)}, not installed; install with: {INSTALL_SERVE}"
        )


@dataclass
class ServedEnsemble:
    """What the server serves: the ``BlenderLLM``, its model name, the server's keys, a redactor for every
    secret, the HTTP clients to close at shutdown, and the traffic recorder (``[record]``; None when off)."""

    llm: Any  # langchain_blender.BlenderLLM
    model_name: str
    server_keys: list[str]
    redactor: Redactor
    clients: list[Any] = field(default_factory=list)
    recorder: Any = None  # blender_core.recording.TrafficRecorder | None

    def warm_up(self) -> None:
        """Load the ranker now (a request would otherwise pay for it)."""
        _ = self.llm.engine.pipeline.ranker

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        if self.recorder is not None:  # what is queued is written, off the event loop
            await asyncio.to_thread(self.recorder.close)


def _local_call(chat: Any, name: str) -> Any:
    """A local chat model as a backend: its sync generation, which ``ainvoke`` runs in a worker thread (the
    Hugging Face pipeline has no async path; a generation past the timeout ends in the background, within
    its ``max_new_tokens``), ignoring per-request options (temperature, stop, ...): the config sets its
    generation."""
    from langchain_core.runnables import RunnableConfig, RunnableLambda

    def generate(messages: Any, config: RunnableConfig, **_options: Any) -> Any:
        return chat.invoke(messages, config)

    return RunnableLambda(generate, name=name)


def _openai_model(backend: OpenAIBackend, config: ServeConfig, client: Any) -> Any:
    from blender_core.app.serve.upstream import UpstreamChat

    return UpstreamChat(
        model=backend.model,
        client=client,
        max_retries=backend.max_retries,
        stream_usage=backend.stream_usage,
        name=backend.name,
    )


def _connections(backend: OpenAIBackend, config: ServeConfig) -> int:
    """An upstream's connections: as many as the running requests call it at once (each one call per
    sample, and one more when it fuses)."""
    running = min(config.limits.max_running, config.limits.max_in_flight)
    return running * (backend.samples + (backend.name == config.ensemble.fuser))


def _openai_client(backend: OpenAIBackend, key: str | None, config: ServeConfig, redactor: Redactor) -> Any:
    """The upstream's one HTTP client, shared by every request: its URL, key, timeout and pool."""
    return redacting_http_client(
        redactor,
        max_connections=_connections(backend, config),
        base_url=backend.base_url + "/",
        headers={"authorization": f"Bearer {key or NO_KEY}"},
        timeout=config.ensemble.timeout,
    )


def _local_folder(backend: HuggingFaceBackend) -> Path:
    """The model's folder: the path given, or the hub id's snapshot (downloaded once, then cached)."""
    path = Path(backend.model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    logger.info("fetching %s from the Hugging Face hub (once; cached afterwards)", backend.model)
    return Path(snapshot_download(backend.model, revision=backend.revision))


def _local_models(
    config: ServeConfig,
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any, str]]]:
    """The local backends as chat models, and each one's loaded ``(model, tokenizer, model id)``."""
    local = [(k, b) for k, b in enumerate(config.backends) if isinstance(b, HuggingFaceBackend)]
    if not local:
        return {}, {}
    check_packages(smollm2=False, needed_by="a huggingface backend")
    loaded: dict[tuple[str, str | None, str | None], tuple[Any, Any, str]] = {}
    models: dict[str, Any] = {}
    owners: dict[str, tuple[Any, Any, str]] = {}
    for k, b in local:
        key = (b.model, b.revision, b.device)
        if key not in loaded:
            try:
                loaded[key] = load_chat_model(_local_folder(b), device=b.device)
            except (OSError, ValueError) as exc:  # no such folder, not a chat model, not on the hub
                raise ConfigError(f"backends[{k}] ({b.name!r}).model: {exc}") from exc
        model, tokenizer, model_id = owners[b.name] = loaded[key]
        (chat,) = chat_backends(
            model, tokenizer, [b.local_backend()], max_new_tokens=b.max_new_tokens, model_id=model_id
        ).values()
        models[b.name] = _local_call(chat, b.name)
    return models, owners


def build_served(config: ServeConfig, environ: Mapping[str, str]) -> ServedEnsemble:
    """Build the served ensemble from a validated config; keys are read from ``environ``.

    Raises:
        ConfigError: an environment variable the config names is not set, or a local backend's model
            cannot be loaded.
        ImportError: a package the configured backends need is missing (naming the extra to install).
    """
    check_serve_packages()
    from langchain_blender import BlenderLLM

    keys = server_keys(config, environ)
    upstream_keys = {
        b.name: backend_key(b, environ, k)
        for k, b in enumerate(config.backends)
        if isinstance(b, OpenAIBackend)
    }
    redactor = Redactor([*keys, *(k for k in upstream_keys.values() if k)])
    backends, owners = _local_models(config)
    clients = []
    for b in config.backends:
        if isinstance(b, OpenAIBackend):
            client = _openai_client(b, upstream_keys[b.name], config, redactor)
            clients.append(client)
            backends[b.name] = _openai_model(b, config, client)
    backends = {b.name: backends[b.name] for b in config.backends}  # in the config's order

    e = config.ensemble
    fuser: Any = None
    if e.fuser is not None:
        spec = config.backend(e.fuser)
        if isinstance(spec, HuggingFaceBackend):
            model, tokenizer, model_id = owners[spec.name]
            fuser = local_fuser(
                model, tokenizer, name=f"{spec.name} ({model_id})", max_new_tokens=spec.max_new_tokens
            )
        else:
            fuser = backends[spec.name]
        fuser = EnsembleBackend(fuser, price_in=spec.price_in, price_out=spec.price_out)  # its calls priced
    # each backend with its tier, samples and prices
    settings = {b.name: EnsembleBackend(backends[b.name], **b.backend_settings()) for b in config.backends}
    recorder = traffic_recorder(config, redactor)
    llm = BlenderLLM(
        backends=settings,
        ranker=e.ranker,
        fuser=fuser,
        model_name=config.server.model_name,
        sinks=[recorder] if recorder is not None else [],
        **e.ensemble_settings(),
    )
    return ServedEnsemble(llm, config.server.model_name, keys, redactor, clients, recorder)
