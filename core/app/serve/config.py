"""The configuration of ``blender-llm serve``: a TOML file validated with pydantic.

It lists the backends (OpenAI-compatible endpoints, local Hugging Face chat models), the ensemble's ranker,
fuser and limits, and the server's own API keys. Keys never appear in the file: it names the environment
variables that hold them, read when the server starts (:func:`server_keys`, :func:`backend_key`). An invalid
file is a :class:`ConfigError` naming each wrong field and what is wrong with it.

Example (``scripts/ensemble.example.toml`` has every field with its default):

.. code-block:: toml

    [server]
    api_key_envs = ["BLENDER_API_KEY"]

    [ensemble]
    ranker = "builtin:pairrm-minilm-l6"
    top_k = 2
    timeout = 30.0
    fuser = "gpt"

    [[backends]]
    name = "gpt"
    kind = "openai"
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from blender_core.app.local_chat import LocalBackend
from blender_core.ensemble.settings import BackendSettings, EnsembleSettings
from blender_core.ranking.registry import check_ranker_spec
from blender_core.recording.settings import RecordSettings

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The shortest key accepted. Every key, the server's and the upstreams', is masked wherever it would appear
#: (answers, the account, errors, log lines); a shorter one is easily guessed, and masking it would mangle
#: ordinary text.
MIN_KEY_CHARS = 8
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:#@+-]*")


class ConfigError(ValueError):
    """The configuration is invalid; the message names each wrong field and says what is wrong."""


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        # the value is not repeated: it may be a key pasted where its variable's name belongs
        raise ValueError(
            "not an environment variable name (letters, digits, _); the file names the variable holding a "
            "key, never the key itself"
        )
    return value


def _backend_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a backend name: use letters, digits and _ . : # @ + -")
    return value


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
        raise ValueError(f"{value!r} is not an http(s) URL, e.g. 'http://127.0.0.1:11434/v1'")
    return value.rstrip("/")


def _ranker(value: str | None) -> str | None:
    check_ranker_spec(value)
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
BackendName = Annotated[str, AfterValidator(_backend_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Section(BaseModel):
    # a typo in a field name is an error, not a silently ignored setting
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """``[server]``: who may call, and under which model name."""

    # Names of environment variables holding the accepted bearer keys; none: no auth, loopback only.
    api_key_envs: list[EnvName] = Field(default_factory=list)
    # The model id clients send and GET /v1/models lists.
    model_name: str = Field(default="blender-llm", min_length=1)
    # Where GET /metrics (Prometheus text) is served: "api" on the API's port, behind the same keys as /v1;
    # "port" on a listener of its own (metrics_host:metrics_port, no keys: keep it where only the scraper
    # reaches); "off" nowhere. On by default: counting costs microseconds per request.
    metrics: Literal["api", "port", "off"] = "api"
    # The metrics listener's port, with metrics = "port" (required there, refused elsewhere).
    metrics_port: int | None = Field(default=None, ge=1, le=65535, validate_default=True)
    # The metrics listener's address, with metrics = "port": loopback unless set, since it takes no keys.
    metrics_host: str = Field(default="127.0.0.1", min_length=1)

    @field_validator("metrics_port")
    @classmethod
    def _metrics_listener(cls, port: int | None, info: ValidationInfo) -> int | None:
        metrics = info.data.get("metrics")
        if metrics is None:  # itself invalid, and said so
            return port
        if metrics == "port" and port is None:
            raise ValueError('required with metrics = "port": the port the scraper reads')
        if metrics != "port" and port is not None:
            raise ValueError(
                f'set, but metrics = "{metrics}"; set metrics = "port" to serve the metrics on that port, or '
                "remove metrics_port"
            )
        return port


class LimitSettings(_Section):
    """``[limits]``: what one request may ask and how many run at once."""

    # 1 MiB holds a long chat; a bigger body is refused with 413 before it is read.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Messages per request (400 beyond): every backend gets the whole chat.
    max_messages: int = Field(default=256, ge=1)
    # Chat completions admitted at once, running or waiting for a slot (429 beyond). Waiting costs little
    # (no backend is called, the body is not read): a long queue absorbs bursts, and a request that could
    # not be answered before its deadline is refused at once anyway. See the README on sizing it.
    max_in_flight: int = Field(default=256, ge=1)
    # Chat completions running at once (at most max_in_flight); the others wait. One server process is one
    # event loop, one core: measured, it serves its most at about 32 (far more makes it slower, and delays
    # the backends' answers past their timeout). Lowered for a while when the loop falls behind.
    max_running: int = Field(default=32, ge=1)
    # The whole request's deadline in seconds (504 past it): backends, ranking and fusion together.
    request_timeout: float = Field(default=120.0, gt=0)
    # The Retry-After of a 429, in seconds.
    retry_after: int = Field(default=1, ge=1)
    # Seconds a shutdown waits for the requests in flight (None: request_timeout, so none is cut).
    shutdown_timeout: float | None = Field(default=None, gt=0)



class EnsembleSection(EnsembleSettings):
    """``[ensemble]``: the ranker, the fuser and the engine's settings (:class:`EnsembleSettings`, the same
    as ``BlenderLLM``'s fields, with the same defaults and checks)."""

    # a typo in a field name is an error, not a silently ignored setting
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Any spec load_ranker accepts; None: the library's default ranker (llm-blender/PairRM, from the hub).
    ranker: Annotated[str | None, AfterValidator(_ranker)] = None
    # A backend name whose model fuses the top K; None: the top-ranked answer is returned.
    fuser: str | None = None


class OpenAIBackend(_Section, BackendSettings):
    """An OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, LiteLLM, llama.cpp's server, hosted APIs (with
    the ensemble's per-backend settings: ``tier``, ``samples``, ``price_in``, ``price_out``)."""

    kind: Literal["openai"]
    name: BackendName
    base_url: HttpUrl
    model: str = Field(min_length=1)
    # None: the endpoint takes no key (a local vLLM or Ollama); OPENAI_API_KEY is never read implicitly.
    api_key_env: EnvName | None = None
    # The ensemble drops a failing backend; retries only add latency to every request.
    max_retries: int = Field(default=0, ge=0)
    # Ask for usage in streamed fusions (stream_options); off for servers that reject the field.
    stream_usage: bool = True


class HuggingFaceBackend(_Section, BackendSettings):
    """A local transformers chat model (a folder, or a hub id fetched once), run as the demo runs its own
    (:mod:`blender_core.app.local_chat`), with the ensemble's per-backend settings."""

    kind: Literal["huggingface"]
    name: BackendName
    # A local folder with a chat model, or a hub id (downloaded on first start, then cached).
    model: str = Field(min_length=1)
    revision: str | None = None
    # Put in front of chats that bring no system message of their own.
    system_prompt: str = Field(default="You are a helpful assistant.", min_length=1)
    max_new_tokens: int = Field(default=256, ge=1)
    # Greedy by default: reproducible answers.
    do_sample: bool = False
    temperature: float | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # None: CUDA when available, else CPU.
    device: str | None = None

    @model_validator(mode="after")
    def _sampling(self) -> HuggingFaceBackend:
        self.local_backend()  # LocalBackend's own check of the sampling settings
        return self

    def local_backend(self) -> LocalBackend:
        """This backend as a :class:`~blender_core.app.local_chat.LocalBackend`."""
        return LocalBackend(
            self.name,
            self.system_prompt,
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
        )


Backend = Annotated[OpenAIBackend | HuggingFaceBackend, Field(discriminator="kind")]


class ServeConfig(_Section):
    """The whole file: ``[server]``, ``[ensemble]``, ``[limits]``, ``[record]`` and one ``[[backends]]`` table per
    backend."""

    server: ServerSettings = ServerSettings()
    ensemble: EnsembleSection = EnsembleSection()
    limits: LimitSettings = LimitSettings()
    # Recording the traffic (blender_core.recording.RecordSettings, the one declaration): off unless path is set.
    record: RecordSettings = RecordSettings()
    backends: list[Backend] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        names = [b.name for b in self.backends]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"backends: names must be unique, {', '.join(map(repr, repeated))} repeated")
        fuser = self.ensemble.fuser
        if fuser is not None and fuser not in names:
            raise ValueError(
                f"ensemble.fuser: {fuser!r} is not a backend name; name one of {', '.join(names)} or leave it out "
                "to return the top-ranked answer"
            )
        if self.ensemble.min_successes > len(names):
            raise ValueError(
                f"ensemble.min_successes: {self.ensemble.min_successes} but only {len(names)} backends; lower it "
                "or add backends"
            )
        return self

    def backend(self, name: str) -> OpenAIBackend | HuggingFaceBackend:
        """The backend called ``name``."""
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def shutdown_timeout(self) -> float:
        """Seconds a shutdown waits for the requests in flight."""
        return self.limits.shutdown_timeout or self.limits.request_timeout


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """``('backends', 0, 'openai', 'base_url')`` as ``backends[0] ('gpt').base_url``."""
    out = ""
    node = data
    for k, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']!r})"
            continue
        if k > 0 and isinstance(loc[k - 1], int) and part in ("openai", "huggingface"):
            continue  # the union's tag, already said by `kind`
        out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out


def _messages(exc: ValidationError, data: Any) -> list[str]:
    lines = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = _where(tuple(err["loc"]), data)
        shown = err["type"] != "value_error" and not isinstance(err["input"], (dict, list))
        # an extra field's value or a wrong key name may be a secret: never repeated
        if err["type"] == "extra_forbidden" or "api_key" in where:
            shown = False
        got = f" (got {err['input']!r})" if shown else ""
        field = str(err["loc"][-1]) if err["loc"] else ""
        if where and field and msg.startswith(f"{field} "):  # the shared settings' checks name the field
            lines.append(f"{where} {msg.removeprefix(field + ' ')}{got}")
        else:
            lines.append(f"{where}: {msg}{got}" if where else msg)
    return lines


def parse_config(data: Mapping[str, Any], source: str = "the config") -> ServeConfig:
    """Validate a parsed config (a dict, as read from TOML).

    Raises:
        ConfigError: one line per wrong field, e.g. ``ensemble.top_k: Input should be greater than or equal
            to 1 (got 0)``.
    """
    try:
        return ServeConfig.model_validate(dict(data))
    except ValidationError as exc:
        lines = "\n".join(f"  {line}" for line in _messages(exc, dict(data)))
        raise ConfigError(f"{source} is invalid:\n{lines}") from None


def load_config(path: str | Path) -> ServeConfig:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a field is wrong (each one named).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not valid TOML: {exc}") from None
    return parse_config(data, repr(str(path)))


def _env_value(name: str, environ: Mapping[str, str], where: str, hint: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{where}: the environment variable {name!r} is not set or empty; {hint}")
    return value


def _key(name: str, environ: Mapping[str, str], where: str, hint: str) -> str:
    """A key from the environment, at least :data:`MIN_KEY_CHARS` long (the error names the variable, never
    the value)."""
    value = _env_value(name, environ, where, hint)
    if len(value) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{where}: the environment variable {name!r} holds {len(value)} characters; a key needs at least "
            f"{MIN_KEY_CHARS} (keys are masked wherever they would appear, and masking a shorter one would "
            f"mangle ordinary text); {hint}"
        )
    return value


def server_keys(config: ServeConfig, environ: Mapping[str, str]) -> list[str]:
    """The accepted bearer keys, read from the environment variables ``[server] api_key_envs`` names.

    Raises:
        ConfigError: a variable is not set, or holds fewer than :data:`MIN_KEY_CHARS` characters.
    """
    return [
        _key(
            name,
            environ,
            f"server.api_key_envs[{k}]",
            "export a long random key (python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
            "or remove it from api_key_envs",
        )
        for k, name in enumerate(config.server.api_key_envs)
    ]


def backend_key(backend: OpenAIBackend, environ: Mapping[str, str], index: int) -> str | None:
    """The backend's upstream key from its ``api_key_env`` (None when it names none).

    Raises:
        ConfigError: the variable is not set, or holds fewer than :data:`MIN_KEY_CHARS` characters.
    """
    if backend.api_key_env is None:
        return None
    where = f"backends[{index}] ({backend.name!r}).api_key_env"
    return _key(
        backend.api_key_env,
        environ,
        where,
        "export its key, or remove api_key_env for an endpoint that takes no key",
    )
