"""The three losses against hand-computed values, and each one going down on a tiny ranker in a few steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from blender_core.data.records import read_records
from blender_core.ranking.pairrm.build import build_pairrm_from_encoder
from blender_core.ranking.pairrm.encoding import PairEncoder
from blender_core.training.ranker.config import TrainConfig
from blender_core.training.ranker.dataset import Collator, ComparisonDataset, TokenCache, plan_epoch
from blender_core.training.ranker.losses import bce_loss, get_loss, instructgpt_loss, mse_loss
from tests.helpers.training import make_candidate_file, make_tiny_encoder

LEFT = torch.tensor([[2.0], [0.0], [5.0]])
RIGHT = torch.tensor([[0.0], [1.0], [5.0]])
SIGN = torch.tensor([1, -1, 0])  # the third row is a tie: ignored


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_instructgpt_loss_by_hand() -> None:
    want = (-math.log(_sig(2.0)) - math.log(_sig(1.0))) / 2
    assert float(instructgpt_loss(LEFT, RIGHT, SIGN)) == pytest.approx(want, rel=1e-6)


def test_bce_loss_by_hand() -> None:
    # row 1: left should be 1, right 0; row 2: left 0, right 1
    left = (-math.log(_sig(2.0)) - math.log(1 - _sig(0.0))) / 2
    right = (-math.log(1 - _sig(0.0)) - math.log(_sig(1.0))) / 2
    assert float(bce_loss(LEFT, RIGHT, SIGN)) == pytest.approx(left + right, rel=1e-6)


def test_mse_loss_by_hand() -> None:
    left = ((_sig(2.0) - 1) ** 2 + _sig(0.0) ** 2) / 2
    right = (_sig(0.0) ** 2 + (_sig(1.0) - 1) ** 2) / 2
    assert float(mse_loss(LEFT, RIGHT, SIGN)) == pytest.approx(left + right, rel=1e-6)


@pytest.mark.parametrize("name", ["instructgpt", "bce", "mse"])
def test_a_batch_of_ties_gives_zero_with_a_graph(name: str) -> None:
    left = torch.ones(2, 1, requires_grad=True)
    loss = get_loss(name)(left, torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert left.grad is not None


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; choose one of 'instructgpt', 'bce', 'mse'"):
        get_loss("hinge")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("enc"))


@pytest.mark.parametrize("name", ["instructgpt", "bce", "mse"])
def test_loss_goes_down_on_a_tiny_ranker(tiny_encoder: Path, tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model, tok = build_pairrm_from_encoder(tiny_encoder, source_maxlength=16, candidate_maxlength=24, drop_out=0.0)
    records = read_records(make_candidate_file(tmp_path / "c.jsonl.gz", n=6))
    config = TrainConfig(sampling="top_bottom", num_pos=2, num_neg=2, loss=name)  # type: ignore[arg-type]
    cache = TokenCache(PairEncoder(tok, model.config), records)
    data = ComparisonDataset(cache, plan_epoch(records, cache, config, seed=0))
    batch = Collator(0)([data[k] for k in range(len(data))])
    assert set(batch["sign"].tolist()) == {-1, 1}
    loss_fn = get_loss(name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def loss_now(train: bool) -> torch.Tensor:
        model.train(train)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return loss_fn(out.left_scores, out.right_scores, batch["sign"])

    with torch.no_grad():
        first = float(loss_now(False))
    for _ in range(20):
        opt.zero_grad()
        loss_now(True).backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_now(False)) < 0.8 * first


def test_skip_truncated_pairs_only_answers_seen_whole(tiny_encoder: Path) -> None:
    from blender_core.data.records import CandidateSet, Pair

    model, tok = build_pairrm_from_encoder(tiny_encoder, source_maxlength=8, candidate_maxlength=8)
    long_text = "good " * 30
    records = [CandidateSet("q", ("bad", "fine yes", long_text), (1.0, 1.5, 2.0)), Pair("q", long_text, "bad", 0)]
    cache = TokenCache(PairEncoder(tok, model.config), records)
    keep = TrainConfig(sampling="top_bottom", num_pos=3, num_neg=3, random_swap=False)
    skip = TrainConfig(sampling="top_bottom", num_pos=3, num_neg=3, random_swap=False, skip_truncated=True)
    assert len(plan_epoch(records, cache, keep, seed=0)) == 4
    (only,) = plan_epoch(records, cache, skip, seed=0)
    assert (only.cand1, only.cand2, only.sign) == (cache.text_index["fine yes"], cache.text_index["bad"], 1)


def test_pairs_identical_within_the_limit_are_dropped(tiny_encoder: Path) -> None:
    from blender_core.data.records import Pair

    model, tok = build_pairrm_from_encoder(tiny_encoder, source_maxlength=8, candidate_maxlength=8)
    long_text = "good " * 30
    records = [Pair("q", long_text, long_text + " bad bad", 0), Pair("q", "good yes", "good yes bad", 0)]
    cache = TokenCache(PairEncoder(tok, model.config), records)
    # The first pair differs only past the candidate limit: the ranker would see two equal answers.
    (kept,) = plan_epoch(records, cache, TrainConfig(random_swap=False), seed=0)
    assert (kept.cand1, kept.cand2) == (cache.text_index["good yes"], cache.text_index["good yes bad"])
