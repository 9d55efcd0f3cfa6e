"""train-fuser: examples from ranked candidate sets, a few steps on tiny models, the saved fusers load."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
from typer.testing import CliRunner

from blender_core.data.alpacaeval import load_alpacaeval
from blender_core.fusion.causal import LLMFuser
from blender_core.fusion.seq2seq import GenFuser
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.testing.fusers import make_tiny_causal_lm, make_tiny_gen_fuser
from blender_core.training.fuser import (
    FuserTrainConfig,
    FuserTrainer,
    build_examples,
    read_examples,
    split_examples,
)
from blender_core.training.fuser.encoding import IGNORE_INDEX, Collator, encode_causal
from blender_core.training.fuser.examples import FuserExample, pref_rank_fn
from blender_core.training.fuser.trainer import dev_loss

WORDS = "the answer is good because data value first example number yes no hello world".split()


def _record(i: int) -> dict:
    outputs = [" ".join(WORDS[(i + j) % len(WORDS) : (i + j) % len(WORDS) + 3 + j]) for j in range(4)]
    return {
        "idx": i,
        "instruction": f"question {i}: write the {WORDS[i % len(WORDS)]} answer",
        "dataset": "toy",
        "reference": f"the {WORDS[i % len(WORDS)]} answer is {i}",
        "reference_model": "ref",
        "judge": "toy",
        "candidates": [
            {"model": f"m{j}", "output": o, "pref": 1.0 + ((i * 7 + j * 3) % 5) / 4}
            for j, o in enumerate(outputs)
        ],
    }


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "toy.dev.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(10):
            f.write(json.dumps(_record(i)) + "\n")
    return path


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gen_fuser(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def test_examples_follow_the_ranker(pool_file: Path, tiny_ranker: PairRanker) -> None:
    records = load_alpacaeval(pool_file)[:3]
    examples = build_examples(records, lambda p, c: [list(r.order) for r in tiny_ranker.rank(p, c)], top_k=2)
    for rec, ex in zip(records, examples, strict=True):
        order = tiny_ranker.rank([rec.instruction], [list(rec.outputs)])[0].order
        assert ex.candidates == (rec.outputs[order[0]], rec.outputs[order[1]])
        assert ex.target == rec.reference
        assert ex.instruction == rec.instruction
    by_pref = build_examples(records, pref_rank_fn(records), top_k=1)
    assert [ex.candidates[0] for ex in by_pref] == [
        r.outputs[max(range(4), key=lambda j: (r.prefs[j], -j))] for r in records
    ]


def test_split_is_by_instruction_and_stable() -> None:
    exs = [FuserExample(f"instruction {i}", ("a",), "t") for i in range(200)]
    train, dev = split_examples(exs, 0.2, seed=1)
    assert 20 <= len(dev) <= 60
    assert len(train) + len(dev) == 200
    assert split_examples(exs, 0.2, seed=1) == (train, dev)


def test_causal_labels_cover_the_answer_only(lm_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(lm_dir)
    feats = encode_causal(tok, FuserExample("q", ("a", "b"), "yes it is"), FuserTrainConfig())
    answer = tok("yes it is", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(feats["input_ids"]) - len(answer)
    assert feats["labels"] == [IGNORE_INDEX] * n_prompt + answer
    assert tok.decode(feats["input_ids"][:n_prompt]).rstrip().endswith("<|im_start|>assistant")
    batch = Collator(0)([feats, {"input_ids": [5], "labels": [5]}])
    assert batch["labels"][1].tolist()[1:] == [IGNORE_INDEX] * (len(answer) + n_prompt - 1)


def _examples(pool_file: Path) -> list[FuserExample]:
    records = load_alpacaeval(pool_file)
    return build_examples(records, pref_rank_fn(records), top_k=3)


def test_seq2seq_training_lowers_the_loss(pool_file: Path, t5_dir: Path, tmp_path: Path) -> None:
    examples = _examples(pool_file)[:6]
    model = AutoModelForSeq2SeqLM.from_pretrained(t5_dir)
    tok = AutoTokenizer.from_pretrained(t5_dir)
    config = FuserTrainConfig(
        learning_rate=3e-3,
        max_steps=12,
        batch_size=3,
        grad_accum=1,
        warmup_ratio=0.0,
        eval_every=6,
        progress=False,
    )
    trainer = FuserTrainer(model, tok, config)
    loader = torch.utils.data.DataLoader(trainer.encode(examples), batch_size=3, collate_fn=Collator(0))
    before = dev_loss(model, loader, torch.device("cpu"))
    result = trainer.train(examples, examples, tmp_path / "run")
    after = dev_loss(model, loader, torch.device("cpu"))
    assert result.kind == "seq2seq"
    assert result.steps == 12
    assert result.stopped_by == "max_steps"
    assert after < before - 0.5
    assert result.best_dev_loss is not None
    assert result.best_dev_loss < before
    fused = GenFuser.from_pretrained(result.best_dir, device="cpu").fuse(
        ["q"], [["a", "b"]], num_beams=1, max_new_tokens=4
    )
    assert isinstance(fused[0], str)
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    dev_rows = [r for r in rows if "dev_loss" in r]
    assert [r["step"] for r in dev_rows] == [0, 6, 12]
    assert dev_rows[0]["dev_loss"] == pytest.approx(before, rel=1e-4)
    assert result.initial_dev_loss == pytest.approx(before, rel=1e-4)
    assert dev_rows[-1]["dev_loss"] < before - 0.5
    assert len([r for r in rows if "loss" in r]) == 12


def test_causal_lora_training_lowers_the_loss(pool_file: Path, lm_dir: Path, tmp_path: Path) -> None:
    examples = _examples(pool_file)[:4]
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    tok = AutoTokenizer.from_pretrained(lm_dir)
    config = FuserTrainConfig(
        lora=True,
        learning_rate=1e-2,
        max_steps=10,
        batch_size=2,
        grad_accum=1,
        warmup_ratio=0.0,
        eval_every=0,
        candidate_maxlength=8,
        progress=False,
    )
    result = FuserTrainer(model, tok, config).train(examples, None, tmp_path / "run")
    assert result.kind == "causal"
    assert result.first_loss is not None
    assert result.last_loss is not None
    assert result.last_loss < result.first_loss
    assert (result.last_dir / "adapter" / "adapter_config.json").exists()
    fuser = LLMFuser.from_pretrained(result.last_dir, device="cpu")  # a merged, plain checkpoint
    assert isinstance(fuser.fuse(["q"], [["a"]], max_new_tokens=3)[0], str)


def test_train_fuser_command(pool_file: Path, t5_dir: Path, tmp_path: Path) -> None:
    from blender_core.app.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        [
            "train-fuser",
            "--data",
            str(pool_file),
            "--rank-by",
            "pref",
            "--base",
            str(t5_dir),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--dev-fraction",
            "0.3",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "result.json").read_text())["steps"] == 2
    train, dev = read_examples(out / "examples.train.jsonl.gz"), read_examples(out / "examples.dev.jsonl.gz")
    assert len(train) + len(dev) == 10
    assert all(len(e.candidates) == 3 for e in train)
    bad = CliRunner().invoke(app, ["train-fuser", "--base", str(t5_dir), "--out", str(out)])
    assert bad.exit_code != 0
    assert "exactly one of --data" in bad.output
