"""The PairRM input layout: sanitising, per-prompt truncation and the concatenated comparison ids."""

from __future__ import annotations

import re
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from blender_core.ranking.pairrm.configuration_pairrm import (
    CANDIDATE1_TOKEN,
    CANDIDATE2_TOKEN,
    CANDIDATE_TOKEN,
    SOURCE_TOKEN,
    SPECIAL_TOKENS,
    PairRMConfig,
)

# Lone surrogates (e.g. from bytes decoded with errors="surrogateescape") are not valid UTF-8: tokenizers rejects them.
_SURROGATES = re.compile("[\ud800-\udfff]")


class PairEncoder:
    """Turns (source, candidate 1, candidate 2) texts into PairRM input ids, as the reference does.

    - a literal separator token (``[SEP]``) in any text becomes a space (reference behaviour), and so do the
      four prefix strings, which would otherwise add a second prefix token and break the layout;
    - the source is ``[CLS] <|source|> text [SEP]`` truncated to ``source_maxlength`` (left part kept,
      final ``[SEP]`` kept);
    - each candidate is ``[CLS] <|candidate|> text [SEP]`` truncated to
      ``candidate_maxlength + (source_maxlength - len(source_ids)) // 2`` (a short source's slack goes to
      the candidates), its prefix id then replaced by the slot's ``<|candidate1|>`` / ``<|candidate2|>`` id.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: PairRMConfig) -> None:
        self.tokenizer = tokenizer
        self.source_maxlength = config.source_maxlength
        self.candidate_maxlength = config.candidate_maxlength
        self.source_id, self.cand1_id, self.cand2_id, self.cand_id = config.special_token_ids
        sep = tokenizer.sep_token if tokenizer.sep_token is not None else tokenizer.eos_token
        if sep is None:
            raise ValueError(
                "the ranker's tokenizer has neither a sep_token nor an eos_token; PairRM needs one"
            )
        self.sep_token: str = sep
        self.sep_id = int(tokenizer.convert_tokens_to_ids(sep))  # type: ignore[arg-type]  # one token, one id
        self._banned = (sep, *SPECIAL_TOKENS)
        self._prefix_ids = frozenset((self.source_id, self.cand1_id, self.cand2_id, self.cand_id))
        # The longest any candidate can be: its own limit plus the whole slack of a 3-token source.
        self._cand_cap = self.candidate_maxlength + (self.source_maxlength - 3) // 2

    def sanitize(self, text: str) -> str:
        """Replace the separator and the four prefix strings by a space, lone surrogates by U+FFFD."""
        for token in self._banned:
            if token in text:
                text = text.replace(token, " ")
        if not text.isascii():
            text = _SURROGATES.sub("\ufffd", text)
        return text

    def _encode(self, texts: Sequence[str], prefix: str, prefix_id: int, max_length: int) -> list[list[int]]:
        if not texts:
            return []
        clean = [self.sanitize(t) for t in texts]
        batch = [prefix + t for t in clean]
        enc = self.tokenizer(batch, add_special_tokens=True, truncation=True, max_length=max_length)
        out = []
        for text, ids in zip(clean, enc["input_ids"], strict=True):
            ids = list(ids)
            if [t for t in ids if t in self._prefix_ids] != [prefix_id]:  # rare: see _encode_apart
                ids = self._encode_apart(text, prefix, prefix_id, max_length)
            out.append(ids)
        return out

    def _encode_apart(self, text: str, prefix: str, prefix_id: int, max_length: int) -> list[int]:
        """Fallback when the tokenizer's normaliser lost the prefix or made one out of user text.

        E.g. a leading combining mark (U+0338) fuses with the prefix's ``>`` under NFC, and a lowercasing
        tokenizer (BERT uncased) reads ``<|SOURCE|>`` as ``<|source|>``. The text is then tokenized on its
        own, any prefix id in it dropped, and placed in the prefix's template (``[CLS] prefix … [SEP]``).
        """
        template = list(self.tokenizer(prefix, add_special_tokens=True)["input_ids"])
        cut = template.index(prefix_id) + 1
        body = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        body = [t for t in body if t not in self._prefix_ids][: max(0, max_length - len(template))]
        return template[:cut] + body + template[cut:]

    def encode_sources(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] <|source|> text [SEP]``, truncated to ``source_maxlength``."""
        return self._encode(texts, SOURCE_TOKEN, self.source_id, self.source_maxlength)

    def encode_candidates(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] <|candidate|> text [SEP]``, truncated only to the largest budget any source allows."""
        return self._encode(texts, CANDIDATE_TOKEN, self.cand_id, self._cand_cap)

    def candidate_budget(self, source_len: int) -> int:
        """Token budget of each candidate next to a source of ``source_len`` ids."""
        return self.candidate_maxlength + (self.source_maxlength - source_len) // 2

    def fit_candidate(self, cand_ids: list[int], budget: int, slot_id: int) -> list[int]:
        """A candidate's ids as the ranker sees them: cut to ``budget`` (ending in the separator), in a slot."""
        ids = cand_ids if len(cand_ids) <= budget else [*cand_ids[: budget - 1], self.sep_id]
        return [slot_id if t == self.cand_id else t for t in ids]

    def build(self, source_ids: list[int], cand1_ids: list[int], cand2_ids: list[int]) -> list[int]:
        """Concatenate one comparison: source, candidate 1 (slot 1), candidate 2 (slot 2)."""
        budget = self.candidate_budget(len(source_ids))
        return (
            source_ids
            + self.fit_candidate(cand1_ids, budget, self.cand1_id)
            + self.fit_candidate(cand2_ids, budget, self.cand2_id)
        )


def add_pairrm_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int, int, int]:
    """Add the four prefix tokens (plain added tokens, in the reference's order) and return their ids."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
    order = (SOURCE_TOKEN, CANDIDATE1_TOKEN, CANDIDATE2_TOKEN, CANDIDATE_TOKEN)
    src, c1, c2, c = (int(tokenizer.convert_tokens_to_ids(t)) for t in order)  # type: ignore[arg-type]
    return src, c1, c2, c
