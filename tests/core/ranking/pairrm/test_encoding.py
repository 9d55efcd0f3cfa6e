"""The PairRM input layout: exact ids, per-prompt truncation, the candidates' slack, sanitising user text."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerBase

from blender_core.ranking.pairrm.configuration_pairrm import SPECIAL_TOKENS, PairRMConfig
from blender_core.ranking.pairrm.encoding import PairEncoder, add_pairrm_tokens
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.testing.pairrm import build_tiny_tokenizer
from tests.helpers.tiny_backbones import tiny_bert_tokenizer

SRC_MAX, CAND_MAX = 8, 6
# The tiny sentencepiece model puts [PAD] [CLS] [SEP] [UNK] at ids 0-3.
CLS, SEP = 1, 2
LONG = "the answer is good and the question is bad and the world is good"


def _encoder(
    tokenizer: PreTrainedTokenizerBase, source_maxlength: int, candidate_maxlength: int
) -> PairEncoder:
    ids = add_pairrm_tokens(tokenizer)
    config = PairRMConfig(
        source_maxlength=source_maxlength,
        candidate_maxlength=candidate_maxlength,
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
    )
    return PairEncoder(tokenizer, config)


@pytest.fixture(scope="module")
def enc() -> PairEncoder:
    return _encoder(build_tiny_tokenizer(), SRC_MAX, CAND_MAX)


def words(enc: PairEncoder, text: str) -> list[int]:
    """Ids of the words of ``text``, each a single sentencepiece piece in the tiny vocabulary."""
    ids = [enc.tokenizer.convert_tokens_to_ids("▁" + w) for w in text.split()]
    assert enc.tokenizer.unk_token_id not in ids, f"a word of {text!r} is not one piece"
    return ids


def test_prefix_ids_follow_the_base_vocabulary() -> None:
    tokenizer = build_tiny_tokenizer()
    base = len(tokenizer)
    assert add_pairrm_tokens(tokenizer) == (base, base + 1, base + 2, base + 3)
    assert add_pairrm_tokens(tokenizer) == (base, base + 1, base + 2, base + 3)  # idempotent
    assert len(tokenizer) == base + 4
    assert tokenizer.convert_ids_to_tokens([base, base + 1, base + 2, base + 3]) == list(SPECIAL_TOKENS)


def test_layout_of_one_comparison(enc: PairEncoder) -> None:
    src, c1, c2 = enc.source_id, enc.cand1_id, enc.cand2_id
    (source,) = enc.encode_sources(["the answer"])
    yes, no = enc.encode_candidates(["yes", "no"])
    assert source == [CLS, src, *words(enc, "the answer"), SEP]
    assert yes == [CLS, enc.cand_id, *words(enc, "yes"), SEP]
    seq = enc.build(source, yes, no)
    assert seq == [
        CLS,
        src,
        *words(enc, "the answer"),
        SEP,
        CLS,
        c1,
        *words(enc, "yes"),
        SEP,
        CLS,
        c2,
        *words(enc, "no"),
        SEP,
    ]
    assert enc.tokenizer.convert_ids_to_tokens(seq) == [
        "[CLS]", "<|source|>", "▁the", "▁answer", "[SEP]",
        "[CLS]", "<|candidate1|>", "▁yes", "[SEP]",
        "[CLS]", "<|candidate2|>", "▁no", "[SEP]",
    ]  # fmt: skip


def test_swapping_slots_swaps_only_the_candidates(enc: PairEncoder) -> None:
    (source,) = enc.encode_sources(["the answer"])
    yes, no = enc.encode_candidates(["yes", "no"])
    assert enc.build(source, no, yes) == [
        CLS, enc.source_id, *words(enc, "the answer"), SEP,
        CLS, enc.cand1_id, *words(enc, "no"), SEP,
        CLS, enc.cand2_id, *words(enc, "yes"), SEP,
    ]  # fmt: skip


def test_source_truncated_to_its_limit_keeping_left_part_and_final_sep(enc: PairEncoder) -> None:
    (source,) = enc.encode_sources([LONG])
    assert len(source) == SRC_MAX
    assert source == [CLS, enc.source_id, *words(enc, "the answer is good and"), SEP]


@pytest.mark.parametrize(
    ("source_text", "source_len", "budget"),
    [
        ("", 3, 8),  # 6 + (8 - 3) // 2
        ("the", 4, 8),  # 6 + 4 // 2
        ("the answer", 5, 7),  # 6 + 3 // 2
        ("the answer is", 6, 7),
        ("the answer is good", 7, 6),  # 6 + 1 // 2: odd slack rounds down
        (LONG, 8, 6),  # a source at its limit leaves no slack
    ],
)
def test_candidate_budget_takes_the_slack_of_a_short_source(
    enc: PairEncoder, source_text: str, source_len: int, budget: int
) -> None:
    (source,) = enc.encode_sources([source_text])
    assert len(source) == source_len
    assert enc.candidate_budget(source_len) == budget
    long_cand, short_cand = enc.encode_candidates([LONG, "yes"])
    seq = enc.build(source, long_cand, short_cand)
    # candidate 1 cut to the budget (left part and final [SEP] kept); the short one untouched
    cand1 = [CLS, enc.cand1_id, *words(enc, LONG)[: budget - 3], SEP]
    assert seq == [*source, *cand1, CLS, enc.cand2_id, *words(enc, "yes"), SEP]
    both_long = enc.build(source, long_cand, long_cand)
    assert len(both_long) == source_len + 2 * budget
    assert len(both_long) <= SRC_MAX + 2 * CAND_MAX


def test_separator_in_user_text_becomes_a_space(enc: PairEncoder) -> None:
    assert enc.sanitize("yes[SEP]no") == "yes no"
    assert enc.encode_candidates(["yes[SEP]no"]) == enc.encode_candidates(["yes no"])
    assert enc.encode_sources(["[SEP]the answer[SEP]"]) == enc.encode_sources([" the answer "])
    (source,) = enc.encode_sources(["the[SEP]answer"])
    assert source.count(SEP) == 1


def test_prefix_strings_in_user_text_are_sanitised(enc: PairEncoder) -> None:
    assert enc.sanitize("a<|source|>b<|candidate1|>c<|candidate2|>d<|candidate|>e") == "a b c d e"
    (source,) = enc.encode_sources(["the <|candidate1|> answer <|source|>"])
    cand_a, cand_b = enc.encode_candidates(["yes <|source|><|candidate2|>", "<|candidate|>no<|candidate1|>"])
    seq = enc.build(source, cand_a, cand_b)
    for token_id, count in ((enc.source_id, 1), (enc.cand1_id, 1), (enc.cand2_id, 1), (enc.cand_id, 0)):
        assert seq.count(token_id) == count
    assert seq.index(enc.source_id) == 1
    assert seq.index(enc.cand1_id) == len(source) + 1
    assert seq.index(enc.cand2_id) == len(source) + len(cand_a) + 1


def test_empty_strings_give_bare_segments(enc: PairEncoder) -> None:
    assert enc.encode_sources([""]) == [[CLS, enc.source_id, SEP]]
    (empty,) = enc.encode_candidates([""])
    assert enc.build([CLS, enc.source_id, SEP], empty, empty) == [
        CLS, enc.source_id, SEP, CLS, enc.cand1_id, SEP, CLS, enc.cand2_id, SEP,
    ]  # fmt: skip
    assert enc.encode_sources([]) == []


def test_lone_surrogates_become_replacement_characters(enc: PairEncoder) -> None:
    # e.g. text decoded with errors="surrogateescape": not valid UTF-8, which the tokenizer would reject
    assert enc.sanitize("yes\udcff no\ud800") == "yes\ufffd no\ufffd"
    assert enc.encode_candidates(["yes\udcff"]) == enc.encode_candidates(["yes\ufffd"])


def test_leading_combining_mark_does_not_swallow_the_prefix(enc: PairEncoder) -> None:
    # Under NFC, "<|candidate|>" + "\u0338…" fuses ">" with the mark into "≯": the prefix token vanished.
    text = "\u0338yes"
    (cand,) = enc.encode_candidates([text])
    body = enc.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert cand == [CLS, enc.cand_id, *body, SEP]
    (source,) = enc.encode_sources(["\u0338" + LONG])
    assert len(source) == SRC_MAX
    assert source[:2] == [CLS, enc.source_id]
    assert source[-1] == SEP
    assert source.count(enc.source_id) == 1


def test_lowercasing_tokenizer_cannot_turn_user_text_into_a_prefix() -> None:
    # BERT uncased normalises before matching added tokens: "<|SOURCE|>" would read as "<|source|>".
    bert = _encoder(tiny_bert_tokenizer(), 16, 16)
    (source,) = bert.encode_sources(["hello <|SOURCE|> world <|Candidate2|>"])
    cand_a, cand_b = bert.encode_candidates(["yes <|CANDIDATE2|> <|candidatE|>", "no <|sóurce|>"])
    seq = bert.build(source, cand_a, cand_b)
    for token_id in (bert.source_id, bert.cand1_id, bert.cand2_id):
        assert seq.count(token_id) == 1
    assert bert.cand_id not in seq
    assert seq.index(bert.cand2_id) == len(source) + len(cand_a) + 1
    # the look-alike prefixes are dropped, the rest of the text kept
    assert bert.tokenizer.convert_ids_to_tokens(source) == ["[CLS]", "<|source|>", "hello", "world", "[SEP]"]
    assert bert.tokenizer.convert_ids_to_tokens(cand_a) == ["[CLS]", "<|candidate|>", "yes", "[SEP]"]


def test_ranker_accepts_hostile_texts(tiny_ranker: PairRanker) -> None:
    hostile = ["<|candidate2|> yes [SEP]", "\u0338no", "", "<|source|><|candidate|><|candidate1|>", "\udcff"]
    (r,) = tiny_ranker.rank(["<|candidate1|>write [SEP] a poem\u0338"], [hostile])
    assert sorted(r.order) == [0, 1, 2, 3, 4]
    # a sanitised string scores exactly as the text with spaces in its place
    (clean,) = tiny_ranker.rank([" write   a poem\u0338"], [[" yes  ", "\u0338no", "", "   ", "\ufffd"]])
    assert r.scores == pytest.approx(clean.scores, abs=1e-6)
