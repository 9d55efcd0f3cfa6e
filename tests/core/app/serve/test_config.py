"""``blender-llm serve`` before it listens: the config file and its errors, the keys read from the
environment, and the refusal to listen beyond loopback without keys (no socket is opened here)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blender_core.app.cli import app
from blender_core.app.serve.config import (
    ConfigError,
    HuggingFaceBackend,
    OpenAIBackend,
    backend_key,
    load_config,
    parse_config,
    server_keys,
)
from blender_core.app.serve.redaction import RedactingFilter, Redactor
from blender_core.app.serve.run import check_bind, is_loopback

ROOT = Path(__file__).resolve().parents[4]
EXAMPLE = ROOT / "scripts" / "ensemble.example.toml"

MINIMAL = """
[ensemble]
ranker = "builtin:pairrm-minilm-l6"

[[backends]]
name = "gpt"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "gpt-4o-mini"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ensemble.toml"
    path.write_text(text)
    return path


def test_the_example_config_is_valid_and_has_the_documented_shape() -> None:
    config = load_config(EXAMPLE)
    assert config.server.api_key_envs == ["BLENDER_API_KEY"]
    e = config.ensemble
    assert (e.ranker, e.top_k, e.timeout, e.min_successes, e.fuser) == (
        "builtin:pairrm-minilm-l6",
        2,
        30.0,
        1,
        "gpt",
    )
    assert [(b.name, b.kind) for b in config.backends] == [
        ("gpt", "openai"),
        ("llama", "openai"),
        ("smol", "huggingface"),
    ]
    gpt, llama, smol = config.backends
    assert isinstance(gpt, OpenAIBackend)
    assert isinstance(llama, OpenAIBackend)
    assert isinstance(smol, HuggingFaceBackend)
    assert gpt.api_key_env == "OPENAI_API_KEY"
    assert llama.api_key_env is None
    assert smol.max_new_tokens == 256
    assert config.shutdown_timeout == config.limits.request_timeout == 120.0


def test_defaults_of_a_minimal_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.server.api_key_envs == []
    assert config.server.model_name == "blender-llm"
    assert (config.ensemble.top_k, config.ensemble.timeout, config.ensemble.fuser) == (3, 30.0, None)
    limits = config.limits
    assert (limits.max_body_bytes, limits.max_messages) == (1_048_576, 256)
    assert (limits.max_in_flight, limits.max_running) == (256, 32)
    gpt = config.backends[0]
    assert isinstance(gpt, OpenAIBackend)
    assert (gpt.max_retries, gpt.base_url) == (0, "http://127.0.0.1:9/v1")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("top_k = 2", "top_k = 0"),
            "ensemble.top_k must be a positive int (candidates handed to the fuser), got 0",
        ),
        (
            ("timeout = 30.0", "timeout = -1"),
            "ensemble.timeout must be a positive, finite number of seconds or None, got -1",
        ),
        (
            ('fuser = "gpt"', 'fuser = "gtp"'),
            "ensemble.fuser: 'gtp' is not a backend name; name one of gpt, llama, smol",
        ),
        (
            ('ranker = "builtin:pairrm-minilm-l6"', 'ranker = "builtin:nope"'),
            "ensemble.ranker: no built-in ranker named 'builtin:nope'",
        ),
        (
            ('base_url = "https://api.openai.com/v1"', 'base_url = "api.openai.com"'),
            "backends[0] ('gpt').base_url: 'api.openai.com' is not an http(s) URL",
        ),
        (
            ('kind = "openai"                         # or', 'kind = "openia"  # or'),
            "backends[0] ('gpt'): Input tag 'openia' found using 'kind' does not match any of the expected tags",
        ),
        (
            ('name = "llama"', 'name = "gpt"'),
            "backends: names must be unique, 'gpt' repeated",
        ),
        (
            ("min_successes = 1", "min_successes = 4"),
            "ensemble.min_successes: 4 but only 3 backends",
        ),
        (
            ("max_new_tokens = 256", "max_new_tokens = 256\ntemperature = 0.5"),
            "backends[2] ('smol'): backend 'smol': temperature / top_p only apply with do_sample=True",
        ),
        (
            ("max_in_flight = 256", "max_in_flight = 0"),
            "limits.max_in_flight: Input should be greater than or equal to 1 (got 0)",
        ),
    ],
)
def test_an_error_names_the_field_and_what_is_wrong(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    text = EXAMPLE.read_text()
    assert edit[0] in text
    with pytest.raises(ConfigError, match="is invalid") as info:
        load_config(write(tmp_path, text.replace(edit[0], edit[1], 1)))
    assert expected in str(info.value)


def test_a_key_pasted_into_the_file_is_never_repeated(tmp_path: Path) -> None:
    secret = "sk-proj-PASTEDKEY1234567890"
    text = EXAMPLE.read_text().replace('api_key_env = "OPENAI_API_KEY"', f'api_key = "{secret}"')
    text = text.replace('api_key_envs = ["BLENDER_API_KEY"]', f'api_key_envs = ["{secret}"]')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "backends[0] ('gpt').api_key: Extra inputs are not permitted" in message
    assert "server.api_key_envs[0]: not an environment variable name" in message
    assert secret not in message


def test_unreadable_and_invalid_toml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[ensemble\ntop_k = 2"))
    with pytest.raises(ConfigError, match="backends: Field required"):
        parse_config({"ensemble": {"top_k": 2}})


def test_keys_come_from_the_named_environment_variables() -> None:
    config = load_config(EXAMPLE)
    env = {"BLENDER_API_KEY": " server-key-1 ", "OPENAI_API_KEY": "sk-upstream"}
    assert server_keys(config, env) == ["server-key-1"]
    gpt, llama, _ = config.backends
    assert isinstance(gpt, OpenAIBackend)
    assert isinstance(llama, OpenAIBackend)
    assert backend_key(gpt, env, 0) == "sk-upstream"
    assert backend_key(llama, env, 1) is None  # no api_key_env: no key, OPENAI_API_KEY is not read
    with pytest.raises(
        ConfigError, match=r"server.api_key_envs\[0\]: the environment variable 'BLENDER_API_KEY'"
    ):
        server_keys(config, {})
    with pytest.raises(
        ConfigError,
        match=r"backends\[0\] \('gpt'\).api_key_env: the environment variable 'OPENAI_API_KEY' is not set",
    ):
        backend_key(gpt, {"OPENAI_API_KEY": "  "}, 0)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_without_keys_only_loopback_may_be_bound(tmp_path: Path) -> None:
    open_config = load_config(write(tmp_path, MINIMAL))
    check_bind("127.0.0.1", open_config)
    with pytest.raises(ValueError, match=r"refusing to listen on '0.0.0.0' without API keys.*api_key_envs"):
        check_bind("0.0.0.0", open_config)
    check_bind("0.0.0.0", load_config(EXAMPLE))  # keys configured: any address


def test_the_command_refuses_a_public_address_without_keys_before_loading_anything(tmp_path: Path) -> None:
    # sockets are disabled in this module: binding, or loading a model from the hub, would fail differently
    res = CliRunner().invoke(app, ["serve", "--config", str(write(tmp_path, MINIMAL)), "--host", "0.0.0.0"])
    assert res.exit_code == 2
    assert "error: refusing to listen on '0.0.0.0' without API keys" in res.stderr


def test_the_command_reports_a_config_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["serve", "--config", str(write(tmp_path, MINIMAL.replace("gpt-4o-mini", "")))]
    )
    assert res.exit_code == 2
    assert "backends[0] ('gpt').model: String should have at least 1 character" in res.stderr


def test_the_redactor_masks_every_secret_however_it_is_written() -> None:
    redact = Redactor(["sk-upstream-123456", "server-key-abcdef", "k/y+9=z&", ""])
    text = "Bearer sk-upstream-123456 and server-key-abcdef; short stays"
    assert redact(text) == "Bearer *** and ***; short stays"
    assert redact.data(text.encode()) == b"Bearer *** and ***; short stays"
    # in a URL (percent-encoded, as a client may send it) and inside a JSON string
    assert redact("?key=k%2Fy%2B9%3Dz%26 ?key=k/y%2B9%3Dz%26 ?key=k%2Fy%2B9%3Dz%26") == "?key=*** ?key=*** ?key=***"
    assert redact(json.dumps({"a": 'say "k/y+9=z&"'})) == '{"a": "say \\"***\\""}'
    assert redact.partial_end("the key is sk-ups") == len("sk-ups")  # held back by a stream
    assert redact.partial_end("the key is sk-upstream-123456") == 0  # whole: masked, not held
    assert redact.tree({"a": ["k/y+9=z&", 3, {"b": ("sk-upstream-123456",)}]}) == {"a": ["***", 3, {"b": ["***"]}]}


def test_a_key_shorter_than_8_characters_is_refused_naming_its_variable_not_its_value(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    env = {"BLENDER_API_KEY": "abc1234", "OPENAI_API_KEY": "sk-a-long-enough-key"}
    with pytest.raises(ConfigError, match=r"server.api_key_envs\[0\]: the environment variable 'BLENDER_API_KEY' "
                       r"holds 7 characters; a key needs at least 8") as info:  # fmt: skip
        server_keys(config, env)
    assert "abc1234" not in str(info.value)
    backend = config.backends[0]
    assert isinstance(backend, OpenAIBackend)
    with pytest.raises(ConfigError, match=r"\('gpt'\).api_key_env: the environment variable 'OPENAI_API_KEY' holds 5") as info:
        backend_key(backend, {"OPENAI_API_KEY": "k-123"}, 0)
    assert "k-123" not in str(info.value)
    assert "remove api_key_env for an endpoint that takes no key" in str(info.value)
    assert server_keys(config, {**env, "BLENDER_API_KEY": "abcd1234"}) == ["abcd1234"]


def test_the_log_filter_masks_secrets_in_messages_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-upstream-123456"
    caplog.handler.addFilter(RedactingFilter(Redactor([secret])))
    log = logging.getLogger("tests.serve.redaction")
    log.warning("upstream said: %s", f"bad key {secret}")
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        log.exception("call failed")
    assert "upstream said: bad key ***" in caplog.text
    assert "RuntimeError: failed with ***" in caplog.text
    assert secret not in caplog.text
