"""A local chat model as an LLM judge, on the tiny random causal LM: the judge built from ``--judge``, then
``eval-ranker --judge`` and ``eval-fusion --judge`` end to end. A random model's verdicts mean nothing, so
the tests check the path: the calls made, the tokens counted, unreadable replies reported as ties."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel
from typer.testing import CliRunner

from blender_core.app.cli import app
from blender_core.app.commands._judge import judge_from_option
from blender_core.data.records import Pair, read_records
from blender_core.fusion.chat import LocalChat
from blender_core.ranking import CallableChat, ChatReply, JudgeRanker
from blender_core.ranking.judge.prompts import VERDICT_ONLY_PAIR
from blender_core.ranking.judge.verdict import parse_verdict
from tests.helpers.core_fakes import forcing_reply
from tests.helpers.training import make_pair_file, make_tiny_encoder

QUESTIONS = ["What is 2+2?", "Name a colour."]
ANSWERS = [["It is 4.", "five"], ["blue", "The sky is blue, so blue."]]


@pytest.fixture(scope="module")
def chat(tiny_causal_lm_dir: Path) -> LocalChat:
    """The same model as the judge's, loaded apart: what each judge call must have replied."""
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir, local_files_only=True)
    return LocalChat(model, AutoTokenizer.from_pretrained(tiny_causal_lm_dir, local_files_only=True))


def expected_calls(chat: LocalChat, questions: list[str], answers: list[list[str]]) -> list[tuple[str, dict[str, int]]]:
    """The reply and usage of every judge call on two-answer sets: both orders, verdict-only prompt."""
    judge = JudgeRanker(lambda m: "", prompt=VERDICT_ONLY_PAIR)
    return [
        chat.complete(judge.messages(q, first, second))
        for q, (a, b) in zip(questions, answers, strict=True)
        for first, second in ((a, b), (b, a))
    ]


def test_the_local_judge_asks_both_orders_and_reports_unreadable_replies(tiny_causal_lm_dir: Path, chat: LocalChat) -> None:
    judge, settings = judge_from_option(str(tiny_causal_lm_dir), device="cpu", max_new_tokens=6)
    assert settings == {
        "name": f"judge:{tiny_causal_lm_dir.name}", "spec": str(tiny_causal_lm_dir), "prompt": "verdict", "max_new_tokens": 6,
        "timeout_s": 120.0, "concurrency": 1,
    }  # fmt: skip
    assert judge.prompt == VERDICT_ONLY_PAIR
    rankings = judge.rank(QUESTIONS, ANSWERS, strategy="full")
    calls = expected_calls(LocalChat(chat.model, chat.tokenizer, max_new_tokens=6), QUESTIONS, ANSWERS)
    assert sum(r.usage["input_tokens"] for r in rankings if r.usage) == sum(u["input_tokens"] for _, u in calls)
    assert sum(r.usage["output_tokens"] for r in rankings if r.usage) == sum(u["output_tokens"] for _, u in calls)
    unreadable = [text for text, _ in calls if parse_verdict(text) is None]
    assert sum(len(r.issues) for r in rankings) == len(unreadable) > 0  # a random model writes no tag
    assert all("counted as a tie" in issue for r in rankings for issue in r.issues)


def test_a_verdict_the_local_chat_writes_is_read(chat: LocalChat) -> None:
    """The tiny model made to answer "[[A]]": every verdict is read (no issue), and a judge that always
    says A has pure position bias, which the two orders cancel into a tie."""

    def complete(messages: list[dict[str, str]]) -> ChatReply:
        text, usage = chat.complete(messages, prefix_allowed_tokens_fn=forcing_reply(chat.tokenizer, "[[A]]"))
        return ChatReply(text, usage)

    (ranking,) = JudgeRanker(CallableChat(complete)).rank(QUESTIONS[:1], ANSWERS[:1], strategy="full")
    assert ranking.issues == ()
    assert ranking.matrix is not None
    assert ranking.matrix.tolist() == [[0.0, 1.0], [1.0, 0.0]]  # A won in both orders
    assert ranking.scores.tolist() == [0.0, 0.0]
    n_tag = len(chat.tokenizer.encode("[[A]]", add_special_tokens=False))
    assert ranking.usage is not None
    assert ranking.usage["output_tokens"] == 2 * (n_tag + 1)


def test_eval_ranker_with_a_local_judge(tmp_path: Path, tiny_causal_lm_dir: Path, chat: LocalChat) -> None:
    data = make_pair_file(tmp_path / "mini.pairs.jsonl.gz", n=5)
    pairs = [r for r in read_records(data) if isinstance(r, Pair)]
    assert all(p.a != p.b for p in pairs)  # else a pair is a tie without a call
    out = tmp_path / "report"
    result = CliRunner().invoke(app, [
        "eval-ranker", "--judge", str(tiny_causal_lm_dir), "--data", str(data), "--out", str(out), "--no-plot", "--no-progress",
        "--judge-max-new-tokens", "8",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    calls = expected_calls(
        LocalChat(chat.model, chat.tokenizer, max_new_tokens=8), [p.prompt for p in pairs], [[p.a, p.b] for p in pairs]
    )
    judge = report["judge"]
    assert report["model"] == judge["name"] == f"judge:{tiny_causal_lm_dir.name}"
    assert judge["comparisons"] == 2 * len(pairs)
    assert judge["usage"]["input_tokens"] == sum(u["input_tokens"] for _, u in calls)
    assert judge["usage"]["output_tokens"] == sum(u["output_tokens"] for _, u in calls)
    assert judge["issues"] == sum(parse_verdict(text) is None for text, _ in calls)
    assert report["sets"]["mini.pairs"]["n"] == 5
    md = (out / "report.md").read_text()
    assert f"- {2 * len(pairs)} comparisons; token usage: {judge['usage']['input_tokens']} input" in md
    assert f"- issues: {judge['issues']} comparisons counted as ties" in md


def test_judge_and_model_are_exclusive_and_a_bad_judge_says_so(tmp_path: Path, tiny_causal_lm_dir: Path) -> None:
    data = make_pair_file(tmp_path / "p.jsonl.gz", n=2)
    runner = CliRunner()
    both = runner.invoke(app, [
        "eval-ranker", "--judge", str(tiny_causal_lm_dir), "--model", "builtin:pairrm-minilm-l6", "--data", str(data),
        "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    assert both.exit_code == 2
    assert "--judge and --model are exclusive" in both.output
    missing = runner.invoke(app, [
        "eval-ranker", "--judge", str(tmp_path / "nowhere"), "--data", str(data), "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    assert missing.exit_code == 1
    assert "could not load the judge" in missing.output
    assert "is not a local model folder" in missing.output


def _pool_file(path: Path) -> Path:
    rows = [
        {
            "idx": k,
            "instruction": f"write a poem {k}",
            "reference": f"a good poem number {k}",
            "candidates": [
                {"model": "m0", "output": f"poem {k}", "pref": 1.2},
                {"model": "m1", "output": f"a good poem {k} for you", "pref": 1.8},
                {"model": "m2", "output": "no", "pref": 1.0},
            ],
        }
        for k in range(4)
    ]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _six_layer_encoder(path: Path) -> Path:
    """The tiny BERT encoder with the 6 layers the command's BERTScore reads, and a length limit (BERTScore
    truncates to it)."""
    make_tiny_encoder(path)
    config = BertConfig.from_pretrained(path)
    config.num_hidden_layers = 6
    BertModel(config).save_pretrained(path)
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = config.max_position_embeddings
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def test_eval_fusion_with_a_local_judge_reports_gpt_rank(tmp_path: Path, tiny_causal_lm_dir: Path) -> None:
    out = tmp_path / "fusion"
    result = CliRunner().invoke(app, [
        "eval-fusion", "--data", str(_pool_file(tmp_path / "pool.jsonl.gz")), "--out", str(out),
        "--ranker", "longest", "--fuser", str(tiny_causal_lm_dir), "--n", "2", "--top-k", "2", "--max-new-tokens", "6",
        "--device", "cpu", "--bertscore-model", str(_six_layer_encoder(tmp_path / "encoder")), "--no-progress",
        "--judge", str(tiny_causal_lm_dir), "--judge-candidates", "2", "--judge-max-new-tokens", "4",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ranked = report["settings"]["gpt_rank"]
    assert report["settings"]["judge"]["max_new_tokens"] == 4
    assert ranked["strategy"] == "full"
    assert ranked["candidates"] == 2
    pools = [row["gpt_rank"]["pool_size"] for row in report["rows"]]
    assert pools == [3, 3]  # m0's, m1's and the fused answer (the top-1 and the best single model's are m1's)
    assert ranked["comparisons"] == sum(n * (n - 1) for n in pools)  # full: every ordered pair, distinct texts
    assert ranked["usage"]["output_tokens"] <= 4 * ranked["comparisons"]
    assert 0 < ranked["issues"] <= ranked["comparisons"]
    for row in report["rows"]:
        ranks = {**row["gpt_rank"]["systems"], **row["gpt_rank"]["models"]}
        assert all(1.0 <= r <= row["gpt_rank"]["pool_size"] for r in ranks.values())
        # midranks: the distinct outputs' ranks add up to 1 + 2 + ... + n
        by_text = {row["texts"][s]: row["gpt_rank"]["systems"][s] for s in row["gpt_rank"]["systems"]}
        outputs = {"m0": f"poem {row['idx']}", "m1": f"a good poem {row['idx']} for you"}
        by_text.update({outputs[m]: r for m, r in row["gpt_rank"]["models"].items()})
        n = row["gpt_rank"]["pool_size"]
        assert len(by_text) == n
        assert sum(by_text.values()) == pytest.approx(n * (n + 1) / 2)
    assert set(report["summary"]["fused"]) >= {"gpt_rank", "gpt_rank_se", "token_f1"}
    md = (out / "report.md").read_text()
    assert "| GPT-Rank |" in md
    assert "## GPT-Rank: average rank (1 = best)" in md
    assert f"judge: `judge:{tiny_causal_lm_dir.name}`, strategy `full`" in md
