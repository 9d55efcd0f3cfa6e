"""PairRMModel: pooling at the three prefixes, the head, the loss, and any encoder backbone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, BertConfig, BertTokenizer

from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.encoding import PairEncoder
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from tests.helpers.tiny_backbones import BACKBONES, tiny_bert_tokenizer, tiny_pairrm

PROMPT = "write a poem"
CANDIDATES = ["a good poem", "bad", "the answer is yes"]


def batch(encoder: PairEncoder, triples: list[tuple[str, str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (batch, seq) ids and mask for (source, candidate 1, candidate 2) triples."""
    seqs = []
    for s, a, b in triples:
        (src,) = encoder.encode_sources([s])
        c1, c2 = encoder.encode_candidates([a, b])
        seqs.append(encoder.build(src, c1, c2))
    width = max(map(len, seqs))
    ids = torch.tensor([q + [0] * (width - len(q)) for q in seqs])
    mask = torch.tensor([[1] * len(q) + [0] * (width - len(q)) for q in seqs])
    return ids, mask


def by_hand(model: PairRMModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over tasks of head([s; c1]) - head([s; c2]), from the encoder's hidden states, row by row."""
    src_id, c1_id, c2_id, _ = model.config.special_token_ids
    hidden = model.pretrained_model(input_ids=ids, attention_mask=mask).last_hidden_state
    out = []
    for row, h in zip(ids.tolist(), hidden, strict=True):
        s, c1, c2 = h[row.index(src_id)], h[row.index(c1_id)], h[row.index(c2_id)]
        left = model.head_layer(torch.cat([s, c1]))
        right = model.head_layer(torch.cat([s, c2]))
        out.append((left - right).mean())
    return torch.stack(out)


@pytest.fixture(scope="module")
def bert_tokenizer() -> BertTokenizer:
    return tiny_bert_tokenizer()


@torch.inference_mode()
def test_forward_shapes_and_logits_by_hand(tiny_ranker: PairRanker) -> None:
    model = tiny_ranker.model
    triples = [
        (PROMPT, CANDIDATES[0], CANDIDATES[1]),
        (PROMPT, CANDIDATES[1], CANDIDATES[2]),
        ("", CANDIDATES[2], ""),
    ]
    ids, mask = batch(tiny_ranker.encoder, triples)
    assert mask[:, -1].tolist().count(0) >= 1  # padding is exercised
    out = model(input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (3,)
    assert out.left_scores.shape == out.right_scores.shape == (3, 1)
    assert out.loss is None
    assert out.logits.tolist() == pytest.approx(by_hand(model, ids, mask).tolist(), abs=1e-6)
    assert out.logits.tolist() == pytest.approx((out.left_scores - out.right_scores)[:, 0].tolist(), abs=1e-6)
    # padding does not change a row's logit
    alone = model(input_ids=ids[1:2, : int(mask[1].sum())]).logits
    assert float(alone) == pytest.approx(float(out.logits[1]), abs=1e-5)


@torch.inference_mode()
def test_two_tasks_average(bert_tokenizer: BertTokenizer) -> None:
    model = tiny_pairrm("bert", bert_tokenizer, n_tasks=2)
    ranker = PairRanker(model, bert_tokenizer, device="cpu")
    ids, mask = batch(ranker.encoder, [(PROMPT, "yes", "no"), ("hello", "no", "the world is good")])
    out = model(input_ids=ids, attention_mask=mask)
    assert out.left_scores.shape == (2, 2)
    assert out.logits.tolist() == pytest.approx(
        (out.left_scores - out.right_scores).mean(-1).tolist(), abs=1e-6
    )
    assert out.logits.tolist() == pytest.approx(by_hand(model, ids, mask).tolist(), abs=1e-6)
    assert ranker.compare([PROMPT], ["yes"], ["no"], both_orders=False) == pytest.approx(
        [float(out.logits[0])], abs=1e-6
    )


def test_labels_give_the_instructgpt_loss(tiny_ranker: PairRanker) -> None:
    model = tiny_ranker.model
    ids, mask = batch(
        tiny_ranker.encoder, [(PROMPT, CANDIDATES[0], CANDIDATES[1]), (PROMPT, CANDIDATES[1], CANDIDATES[2])]
    )
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits.tolist()
        for labels in ([1.0, -1.0], [-2.0, 0.5], [1.0, 1.0]):
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor(labels)).loss
            expected = np.mean(
                [
                    math.log1p(math.exp(-math.copysign(1.0, y) * z))
                    for y, z in zip(labels, logits, strict=True)
                ]
            )
            assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_loss_reaches_head_and_encoder(bert_tokenizer: BertTokenizer) -> None:
    model = tiny_pairrm("bert", bert_tokenizer).train()
    ids, mask = batch(
        PairEncoder(bert_tokenizer, model.config), [(PROMPT, "yes", "no"), (PROMPT, "no", "yes")]
    )
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([-1.0, 1.0])).loss.backward()
    for name in (
        "head_layer.1.weight",
        "head_layer.4.weight",
        "pretrained_model.embeddings.word_embeddings.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None
        assert float(grad.abs().sum()) > 0
    # the two slots' biases cancel in left - right: the last bias gets no gradient at all
    assert float(model.head_layer[4].bias.grad.abs().sum()) == 0.0


def test_missing_prefix_token_is_an_error(tiny_ranker: PairRanker) -> None:
    ids, mask = batch(tiny_ranker.encoder, [(PROMPT, "yes", "no")])
    c2_id = tiny_ranker.encoder.cand2_id
    ids[ids == c2_id] = tiny_ranker.encoder.cand_id
    with pytest.raises(ValueError, match=rf"a row of input_ids has no <\|candidate2\|> token \(id {c2_id}\)"):
        tiny_ranker.model(input_ids=ids, attention_mask=mask)


def test_config_without_prefix_ids() -> None:
    config = PairRMConfig(encoder_config=BertConfig(hidden_size=16, num_attention_heads=2).to_dict())
    assert config.hidden_size == 16
    with pytest.raises(ValueError, match="this PairRMConfig has no special-token ids"):
        config.special_token_ids  # noqa: B018


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source_maxlength": 3}, "source_maxlength=3 and candidate_maxlength=412 must both be at least 4"),
        (
            {"candidate_maxlength": 2},
            "source_maxlength=1224 and candidate_maxlength=2 must both be at least 4",
        ),
        ({"n_tasks": 0}, "n_tasks must be >= 1, got 0"),
    ],
)
def test_config_validation(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PairRMConfig(**kwargs)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_any_encoder_backbone_ranks_and_round_trips(
    backbone: str, bert_tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    model = tiny_pairrm(backbone, bert_tokenizer)
    assert type(model.config.encoder_config) is BACKBONES[backbone]
    ranker = PairRanker(model, bert_tokenizer, device="cpu")
    prompts = [PROMPT, "hello world"]
    cands = [CANDIDATES, ["yes", "no", "the sea is good", "python code"]]
    first = ranker.rank(prompts, cands)
    for r, c in zip(first, cands, strict=True):
        assert sorted(r.order) == list(range(len(c)))
        assert np.all(np.isfinite(r.scores))
        assert np.ptp(r.scores) > 1e-4  # the candidates are told apart
    assert [r.scores.tolist() for r in ranker.rank(prompts, cands)] == [
        r.scores.tolist() for r in first
    ]  # eval mode

    ranker.save_pretrained(tmp_path / backbone)
    reloaded = PairRanker.from_pretrained(tmp_path / backbone, device="cpu")
    for a, b in zip(reloaded.rank(prompts, cands), first, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_lowercase_lookalike_prefixes_do_not_move_the_pooling(bert_tokenizer: BertTokenizer) -> None:
    ranker = PairRanker(tiny_pairrm("bert", bert_tokenizer), bert_tokenizer, device="cpu")
    hostile = ranker.compare(["hello <|SOURCE|>"], ["yes <|CANDIDATE2|>"], ["no <|Candidate1|>"])
    plain = ranker.compare(["hello"], ["yes"], ["no"])
    assert hostile == pytest.approx(plain, abs=1e-6)


@torch.inference_mode()
def test_native_checkpoint_loads_through_automodel(tiny_native_ckpt: Path, tiny_ranker: PairRanker) -> None:
    model = AutoModel.from_pretrained(tiny_native_ckpt)
    assert type(model) is PairRMModel
    ids, mask = batch(tiny_ranker.encoder, [(PROMPT, "yes", "no")])
    expected = tiny_ranker.model(input_ids=ids, attention_mask=mask).logits
    assert model.eval()(input_ids=ids, attention_mask=mask).logits.tolist() == pytest.approx(
        expected.tolist(), abs=1e-6
    )
