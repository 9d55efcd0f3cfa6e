"""The windowed relative attention gives the same bits as transformers' own, on every DeBERTa-v2 layout."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from transformers import DebertaV2Config, DebertaV2Model
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention

from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.ranking.windowed_attention import (
    MIN_WINDOW,
    WindowedSelfAttention,
    position_window,
    use_windowed_attention,
)

LAYOUTS = {
    "v3 (shared key, both, 256 buckets)": {},
    "log buckets cut in (8 buckets)": {"position_buckets": 8},
    "no buckets, 24 positions": {"position_buckets": -1, "max_relative_positions": 24},
    "own position projections": {"share_att_key": False},
    "c2p only": {"pos_att_type": ["c2p"]},
    "p2c only": {"pos_att_type": ["p2c"], "share_att_key": False},
}


def encoder(**overrides: object) -> DebertaV2Model:
    kwargs: dict[str, object] = {
        "vocab_size": 50,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "relative_attention": True,
        "position_buckets": 256,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
    }
    torch.manual_seed(0)
    return DebertaV2Model(DebertaV2Config(**{**kwargs, **overrides})).eval()


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("length", [5, 12, 37, 90])
def test_same_bits_as_transformers(layout: str, length: int) -> None:
    original = encoder(**LAYOUTS[layout])
    windowed = copy.deepcopy(original)
    assert use_windowed_attention(windowed) == 2
    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(3, 50, (3, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, length // 2 :] = 0  # a padded row
    with torch.no_grad():
        want = original(input_ids=ids, attention_mask=mask).last_hidden_state
        got = windowed(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(got, want)


def test_gradients_match() -> None:
    original = encoder().train()
    windowed = copy.deepcopy(original)
    use_windowed_attention(windowed)
    ids = torch.randint(3, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    original(input_ids=ids).last_hidden_state.square().sum().backward()
    torch.manual_seed(2)  # the same dropout masks
    windowed(input_ids=ids).last_hidden_state.square().sum().backward()
    for (name, a), b in zip(original.named_parameters(), windowed.parameters(), strict=True):
        assert a.grad is not None, name
        assert b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_the_ranker_model_uses_it_and_pickles(tiny_ranker: PairRanker) -> None:
    layers = [m for m in tiny_ranker.model.modules() if isinstance(m, DisentangledSelfAttention)]
    assert layers
    assert all(type(m) is WindowedSelfAttention for m in layers)
    again = pickle.loads(pickle.dumps(tiny_ranker.model))
    assert all(
        type(m) is WindowedSelfAttention for m in again.modules() if isinstance(m, DisentangledSelfAttention)
    )
    assert set(again.state_dict()) == set(tiny_ranker.model.state_dict())


def test_other_encoders_are_left_as_they_are() -> None:
    from transformers import BertConfig

    enc = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = PairRMModel(
        PairRMModel.config_class(
            encoder_config=enc.to_dict(),
            source_prefix_id=36,
            cand1_prefix_id=37,
            cand2_prefix_id=38,
            cand_prefix_id=39,
        )
    )
    assert use_windowed_attention(model) == 0


def test_the_window_holds_every_position_used() -> None:
    index = torch.tensor([[250, 256], [256, 262]])
    assert position_window(index, 512) == slice(250, 282)  # widened to MIN_WINDOW
    assert position_window(torch.tensor([0, 300]), 512) == slice(0, 301)
    assert position_window(torch.tensor([500, 511]), 512) == slice(512 - MIN_WINDOW, 512)  # kept inside
    assert position_window(torch.tensor([3, 5]), 16) == slice(0, 16)  # fewer positions than the minimum
