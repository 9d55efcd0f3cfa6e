"""RewardModelRanker: one pass per candidate, scores equal to a plain transformers forward pass over the chat
template's text whatever the batch, every strategy giving the reward order, and errors that say what to do."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from blender_core.ranking import Ranker, load_ranker, registry
from blender_core.ranking.reward import RemoteCodeError, RewardModelRanker
from blender_core.ranking.strategies import STRATEGIES
from blender_core.testing.fusers import make_tiny_causal_lm
from blender_core.testing.rewards import make_tiny_reward_model

PROMPTS = ["What is 2+2?", "Write a poem about the sea and the sky, please."]
CANDS = [
    ["4", "5", "It is 4, because two and two make four.", "four"],
    ["a good poem", "bad", "the sea is blue and the sky is blue and the world is good at this time."],
]
Conversation = list[dict[str, str]]


def chat(*turns: str, system: str | None = None) -> Conversation:
    """Alternating user / assistant turns, after an optional system turn."""
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(turns)]


def plain_rewards(
    folder: Path, conversations: list[Conversation], keep_last: int | None = None, dtype: Any = torch.float32
) -> np.ndarray:
    """The reference: transformers alone, one conversation per forward pass, no padding."""
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    out = []
    for conv in conversations:
        enc = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_tensors="pt")
        ids = enc["input_ids"] if keep_last is None else enc["input_ids"][:, -keep_last:]  # (1, seq)
        with torch.no_grad():
            out.append(model(input_ids=ids).logits[0, 0].float().item())
    return np.array(out)


@contextmanager
def counting_rows(ranker: RewardModelRanker) -> Iterator[list[int]]:
    """Rows of every forward pass the ranker's model runs in the block (a hook that only records)."""
    rows: list[int] = []
    handle = ranker.model.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(int(kw["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        yield rows
    finally:
        handle.remove()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_reward_model(tmp_path_factory.mktemp(f"rm-{request.param}"), arch=request.param)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_reward_model(tmp_path_factory.mktemp("rm-llama"), arch="llama", seed=1)


@pytest.fixture(scope="module")
def ranker(llama_folder: Path) -> RewardModelRanker:
    return RewardModelRanker.from_pretrained(llama_folder, device="cpu", batch_size=3)


def _with_config(src: Path, dest: Path, file: str, **fields: Any) -> Path:
    """A copy of a checkpoint folder with fields set in one of its JSON files."""
    dest.mkdir()
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    raw = json.loads((dest / file).read_text())
    (dest / file).write_text(json.dumps({**raw, **fields}))
    return dest


# ---------------------------------------------------------------- parity and batching
@pytest.mark.parametrize("batch_size", [1, 2, 3, 64])
def test_scores_equal_a_plain_forward_pass_whatever_the_batch(folder: Path, batch_size: int) -> None:
    ranker = RewardModelRanker.from_pretrained(folder, device="cpu", batch_size=batch_size)
    prompts = [p for p, c in zip(PROMPTS, CANDS, strict=True) for _ in c]
    cands = [x for c in CANDS for x in c]
    want = plain_rewards(folder, [chat(p, c) for p, c in zip(prompts, cands, strict=True)])
    got = np.array(ranker.score(prompts, cands))
    assert np.abs(got - want).max() <= 1e-5
    assert want.std() > 0.1  # the random rewards differ, so the check has teeth
    alone = [ranker.score([p], [c])[0] for p, c in zip(prompts[:3], cands[:3], strict=True)]
    assert alone == pytest.approx(want[:3], abs=1e-5)
    dup = ranker.score([prompts[0], *prompts, prompts[0]], [cands[0], *cands, cands[0]])
    assert dup == pytest.approx([want[0], *want, want[0]], abs=1e-5)
    (ranking,) = ranker.rank([PROMPTS[1]], [CANDS[1]], batch_size=1)
    assert ranking.scores == pytest.approx(want[len(CANDS[0]) :], abs=1e-5)


def test_rewards_run_in_fp32_on_cpu_and_in_the_dtype_asked(llama_folder: Path) -> None:
    assert RewardModelRanker.from_pretrained(llama_folder, device="cpu").model.dtype == torch.float32
    half = RewardModelRanker.from_pretrained(llama_folder, device="cpu", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    convs = [chat(PROMPTS[0], "4"), chat(PROMPTS[1], "a poem")]
    want = plain_rewards(llama_folder, convs, dtype=torch.bfloat16)
    assert half.score(PROMPTS, ["4", "a poem"]) == pytest.approx(want, abs=0.02)


# ---------------------------------------------------------------- rank and the other verbs
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gives_the_reward_order(ranker: RewardModelRanker, strategy: str) -> None:
    rankings = ranker.rank(PROMPTS, CANDS, strategy=strategy)
    for prompt, cands, r in zip(PROMPTS, CANDS, rankings, strict=True):
        rewards = np.array(ranker.score([prompt] * len(cands), cands))
        assert r.scores == pytest.approx(rewards, abs=1e-5)  # another batch: fp32 rounding may move
        assert list(r.order) == sorted(range(len(cands)), key=lambda i: -rewards[i])
        assert r.best == int(np.argmax(rewards))
        assert list(r.ranks) == [1 + int((rewards > v).sum()) for v in rewards]
        assert (r.strategy, r.aggregation, r.matrix, r.n_forward) == (strategy, None, None, len(cands))


def test_n_candidates_cost_n_passes_and_duplicates_run_once(ranker: RewardModelRanker) -> None:
    with counting_rows(ranker) as rows:
        rankings = ranker.rank(PROMPTS, CANDS, strategy="full", batch_size=64)
    assert [r.n_forward for r in rankings] == [len(c) for c in CANDS]
    assert sum(rows) == sum(len(c) for c in CANDS) == 7  # not n(n-1) = 18 as for a pairwise ranker
    with counting_rows(ranker) as rows:
        rankings = ranker.rank(["p", "p", "q"], [["a", "b", "a"], ["b", "c"], ["a", "b"]])
    assert [r.n_forward for r in rankings] == [3, 2, 2]
    assert sum(rows) == 5  # (p, a), (p, b), (p, c), (q, a), (q, b)
    assert rankings[0].scores[0] == rankings[0].scores[2]
    with counting_rows(ranker) as rows:
        (single,) = ranker.rank(["p"], [["only"]])  # the trivial ranking, as for every Ranker
    assert (rows, single.n_forward, list(single.scores), single.best) == ([], 0, [0.0], 0)


def test_rank_one_best_of_n_and_compare(ranker: RewardModelRanker) -> None:
    rewards = [np.array(ranker.score([p] * len(c), c)) for p, c in zip(PROMPTS, CANDS, strict=True)]
    ranked = ranker.rank_one(PROMPTS[0], CANDS[0], top_k=2)
    assert [c.index for c in ranked] == list(np.argsort(-rewards[0])[:2])
    assert [c.score for c in ranked] == pytest.approx(sorted(rewards[0], reverse=True)[:2])
    for strategy in STRATEGIES:
        assert ranker.best_of_n(PROMPTS, CANDS, strategy=strategy) == [int(np.argmax(r)) for r in rewards]
    diff = ranker.compare(PROMPTS, [CANDS[0][0], CANDS[1][0]], [CANDS[0][2], CANDS[1][1]])
    assert diff == pytest.approx([rewards[0][0] - rewards[0][2], rewards[1][0] - rewards[1][1]])
    assert ranker.compare(PROMPTS[:1], ["5"], ["5"]) == [0.0]


def test_conversations_score_the_last_assistant_turn_in_context(
    llama_folder: Path, ranker: RewardModelRanker
) -> None:
    convs = [
        chat("hello", "hello, thanks!", "What is 2+2?", "It is 4."),
        chat("What is 2+2?", "It is 4.", system="You are a good model."),
        chat("What is 2+2?", "It is 4."),
    ]
    shouted = [{"role": t["role"].upper(), "content": t["content"]} for t in convs[0]]
    got = ranker.score_conversations([*convs, shouted])
    want = plain_rewards(llama_folder, convs)
    assert np.abs(np.array(got[:3]) - want).max() <= 1e-5
    assert got[3] == pytest.approx(got[0], abs=1e-6)  # roles in any case
    assert shouted[0]["role"] == "USER"  # the caller's turns are not changed
    assert abs(got[0] - got[2]) > 1e-3  # the earlier turns are read: same last turn, other reward
    assert ranker.score_conversations([convs[2]]) == pytest.approx(
        ranker.score(["What is 2+2?"], ["It is 4."])
    )
    diff = ranker.compare_conversations(convs[:2], [convs[2], convs[2]])
    assert diff == pytest.approx([got[0] - got[2], got[1] - got[2]], abs=1e-6)


@pytest.mark.parametrize(
    ("conversation", "error", "message"),
    [
        (
            chat("hi"),
            ValueError,
            r"conversations\[0\] ends with a 'user' turn; the scored turn must be the last",
        ),
        ([], ValueError, r"conversations\[0\] has no turns"),
        ([{"role": "bot", "content": "x"}], ValueError, r"turn 0 has role 'bot'; use one of system, user"),
        ([{"content": "x"}], TypeError, r"turn 0 must be a dict with 'role' and 'content'"),
        ("hello", TypeError, r"conversations\[0\] must be a list of \{'role', 'content'\} turns, got str"),
        ([{"role": "assistant", "content": 3}], TypeError, r"turn 0 content is a int, not a str"),
    ],
)
def test_bad_conversations(ranker: RewardModelRanker, conversation: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ranker.score_conversations([conversation])


def test_bad_arguments_say_what_was_received(ranker: RewardModelRanker, llama_folder: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'best'; choose one of 'full', 'bubble'"):
        ranker.rank(PROMPTS, CANDS, strategy="best")
    with pytest.raises(ValueError, match=r"rank\(\): batch_size must be a positive int .* got 0"):
        ranker.rank(PROMPTS, CANDS, batch_size=0)
    with pytest.raises(
        ValueError, match=r"score\(\) needs lists of equal length, got prompts=2, candidates=1"
    ):
        ranker.score(PROMPTS, ["x"])
    with pytest.raises(ValueError, match=r"max_length \(tokens per text\) must be a positive int, got 0"):
        RewardModelRanker.from_pretrained(llama_folder, device="cpu", max_length=0)


# ---------------------------------------------------------------- loading rules
def test_remote_code_is_refused(llama_folder: Path, tmp_path: Path) -> None:
    # transformers itself would load this one as a plain Llama: the auto_map must be checked.
    mapped = _with_config(
        llama_folder,
        tmp_path / "a",
        "config.json",
        auto_map={"AutoModelForSequenceClassification": "rm.MyRM"},
    )
    with pytest.raises(RemoteCodeError, match=r"config.json of .* has an auto_map .*MyRM.*never runs code"):
        RewardModelRanker.from_pretrained(mapped, device="cpu")
    tok = _with_config(
        llama_folder, tmp_path / "b", "tokenizer_config.json", auto_map={"AutoTokenizer": ["t.T", None]}
    )
    with pytest.raises(RemoteCodeError, match=r"tokenizer_config.json of .* has an auto_map"):
        RewardModelRanker.from_pretrained(tok, device="cpu")
    unknown = _with_config(llama_folder, tmp_path / "c", "config.json", model_type="my_secret_rm")
    with pytest.raises(
        RemoteCodeError, match=r"not a class transformers .* knows .*my_secret_rm.*: it needs remote code"
    ):
        RewardModelRanker.from_pretrained(unknown, device="cpu")


def test_models_that_are_not_reward_models_are_refused(tmp_path: Path) -> None:
    two = make_tiny_reward_model(tmp_path / "two", num_labels=2)
    with pytest.raises(ValueError, match=r"has 2 output labels .* a reward model has one output"):
        RewardModelRanker.from_pretrained(two, device="cpu")
    no_template = make_tiny_reward_model(tmp_path / "tpl", chat_template=False)
    with pytest.raises(ValueError, match=r"has no chat template.*set tokenizer.chat_template"):
        RewardModelRanker.from_pretrained(no_template, device="cpu")
    chat_lm = make_tiny_causal_lm(tmp_path / "lm", num_labels=1)  # its config says one label, no reward head
    with pytest.raises(ValueError, match=r"missing keys: score.weight.*not a reward model"):
        RewardModelRanker.from_pretrained(chat_lm, device="cpu")
    with pytest.raises(ValueError, match=r"is a file; pass the folder of a reward model or its hub id"):
        RewardModelRanker.from_pretrained(two / "config.json")
    with pytest.raises(OSError, match=r"could not load the config of .*nowhere.* Pass an existing folder"):
        RewardModelRanker.from_pretrained(tmp_path / "nowhere", local_files_only=True)


def test_without_a_pad_token_the_eos_pads(tmp_path: Path) -> None:
    folder = make_tiny_reward_model(tmp_path / "nopad", pad_token=False, seed=2)
    ranker = RewardModelRanker.from_pretrained(folder, device="cpu", batch_size=8)
    eos = ranker.tokenizer.eos_token_id
    assert (ranker.tokenizer.pad_token_id, ranker.pad_id, ranker.model.config.pad_token_id) == (
        None,
        eos,
        eos,
    )
    convs = [chat(p, c) for p, cands in zip(PROMPTS, CANDS, strict=True) for c in cands]
    assert np.abs(np.array(ranker.score_conversations(convs)) - plain_rewards(folder, convs)).max() <= 1e-5

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.eos_token = None
    with pytest.raises(ValueError, match=r"has no pad token: .* Set tokenizer.pad_token"):
        RewardModelRanker(model, tok, device="cpu")


def test_a_text_that_ends_in_the_pad_token_is_read_before_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ranker = RewardModelRanker.from_pretrained(
        make_tiny_reward_model(tmp_path / "eos", pad_token=False), device="cpu"
    )
    text = ranker.tokenizer.apply_chat_template(chat("2+2?", "4"), tokenize=False).rstrip()  # ends in eos
    with caplog.at_level(logging.WARNING, logger="blender_core.ranking.reward"):
        (with_eos, without), _ = ranker.reward_texts([text, text.removesuffix("<|im_end|>")])
    assert "1 text(s) end in the pad token" in caplog.text
    assert with_eos == pytest.approx(without, abs=1e-5)  # as transformers reads it


def test_too_long_texts_keep_their_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_tiny_reward_model(tmp_path / "short", max_position_embeddings=40)
    ranker = RewardModelRanker.from_pretrained(folder, device="cpu")
    long = " ".join(["the answer is yes because it is good"] * 4)
    with caplog.at_level(logging.WARNING, logger="blender_core.ranking.reward"):
        (ranking,) = ranker.rank(["Why?"], [["yes", long]])
    assert ranking.issues == (
        "candidate 1 was longer than 40 tokens; its reward is of its last 40 (the start of the conversation "
        "was dropped)",
    )
    assert "1 text(s) longer than 40 tokens kept their last 40" in caplog.text
    want = plain_rewards(folder, [chat("Why?", "yes"), chat("Why?", long)], keep_last=40)
    assert ranking.scores == pytest.approx(want, abs=1e-5)
    assert RewardModelRanker.from_pretrained(folder, device="cpu", max_length=12).max_length == 12


# ---------------------------------------------------------------- load_ranker
def test_load_ranker_takes_a_reward_spec(llama_folder: Path) -> None:
    registry.clear_ranker_cache()
    spec = f"reward:{llama_folder}"
    ranker = load_ranker(spec, device="cpu", batch_size=4)
    assert isinstance(ranker, RewardModelRanker)
    assert isinstance(ranker, Ranker)
    assert (ranker.name, ranker.batch_size) == (spec, 4)
    assert load_ranker(spec, device="cpu", batch_size=4) is ranker
    assert load_ranker(ranker.name, device="cpu", batch_size=4) is ranker  # its name is its spec
    registry.clear_ranker_cache()
