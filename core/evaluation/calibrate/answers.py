"""The known answers of one instruction, as the simulated backends give them: text, judge preference, token
usage and a simulated latency.

Token counts are tokenizer-free: ``ceil(characters / 4)``, the usual rule of thumb for English with the
tokenizers of hosted models (OpenAI's "about 4 characters a token"). The pools' models use different
tokenizers, and the price table's prices are illustrative, so a closer count per model would add precision
the costs do not have; the rule is the same for every model, which keeps their comparison fair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from blender_core.data.alpacaeval import EvalRecord
from blender_core.evaluation.calibrate.prices import PriceTable

#: characters per token of the tokenizer-free count
CHARS_PER_TOKEN = 4


def token_count(text: str) -> int:
    """Tokens of ``text`` by the tokenizer-free rule: ``ceil(len(text) / 4)``, at least 1."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class KnownAnswer:
    """What one model answered to one instruction, and what the simulation knows of the call."""

    model: str
    text: str
    pref: float
    input_tokens: int
    output_tokens: int
    latency_s: float

    @property
    def usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def known_answers(record: EvalRecord, table: PriceTable) -> dict[str, KnownAnswer]:
    """The answers of the price table's models to ``record``'s instruction, in the table's order."""
    by_model = dict(zip(record.models, zip(record.outputs, record.prefs, strict=True), strict=True))
    tokens_in = token_count(record.instruction)
    out = {}
    for name, entry in table.models.items():
        text, pref = by_model[name]
        tokens_out = token_count(text)
        out[name] = KnownAnswer(name, text, pref, tokens_in, tokens_out, entry.latency_s(tokens_out))
    return out
