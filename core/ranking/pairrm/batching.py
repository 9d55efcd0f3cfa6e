"""The batched forward-pass engine of the PairRM ranker: from (source, candidate 1, candidate 2) comparisons
to logits, with repeated comparisons run once, an optional LRU cache, length-sorted batches and padding
per batch only (:func:`pair_logits`); and the driver that runs one ranking strategy per prompt, each round's
comparisons of every prompt in one such call (:func:`drive_strategies`).

:meth:`PairRanker.logits <blender_core.ranking.pairrm.pair_ranker.PairRanker.logits>` and
:meth:`PairRanker.run_strategies <blender_core.ranking.pairrm.pair_ranker.PairRanker.run_strategies>` are their
public entry points; every verb of the ranker goes through them. The batches themselves (length-sorted,
padded per batch) come from :mod:`blender_core.ranking.batches`, which the reward-model ranker shares.
"""

from __future__ import annotations

import hashlib
import numbers
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from blender_core.ranking import strategies
from blender_core.ranking.batches import length_batches, pad_batch
from blender_core.ranking.pairrm.encoding import PairEncoder
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel

#: one comparison: (source, candidate in slot 1, candidate in slot 2)
Comparison = tuple[str, str, str]


class LogitCache:
    """Comparison logits remembered across calls, keyed by a hash of the texts; the oldest go first.

    Args:
        size: how many logits to keep (0 = off: nothing is hashed or stored).
    """

    def __init__(self, size: int = 0) -> None:
        self.size = size
        self._values: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    @staticmethod
    def key(source: str, a: str, b: str) -> bytes:
        """A 16-byte digest of one comparison's three texts."""
        h = hashlib.blake2b(digest_size=16)
        for part in (source, a, b):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.digest()

    def get(self, key: bytes) -> float | None:
        """The remembered logit (now the most recently used), or None."""
        if key not in self._values:
            return None
        self._values.move_to_end(key)
        return self._values[key]

    def put(self, key: bytes, value: float) -> None:
        """Remember a logit (call :meth:`trim` once a batch of puts is done)."""
        self._values[key] = value

    def trim(self) -> None:
        """Forget the least recently used logits beyond ``size``."""
        while len(self._values) > self.size:
            self._values.popitem(last=False)


@torch.inference_mode()
def pair_logits(
    model: PairRMModel,
    encoder: PairEncoder,
    requests: Sequence[Comparison],
    *,
    batch_size: int,
    exact: bool,
    pad_id: int,
    device: torch.device,
    cache: LogitCache,
    progress: tqdm | None = None,
) -> np.ndarray:
    """Logits of the comparisons, (len(requests),) float64: > 0 means candidate 1 is better.

    Each distinct comparison runs once per call (and not at all when ``cache`` has it); sources and
    candidates are tokenized once each; the sequences run in :func:`length_batches`. ``progress`` is
    advanced by one per request, cached ones at once.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"pair_logits(): batch_size must be a positive int, got {batch_size!r}")
    out = np.zeros(len(requests), dtype=np.float64)
    if not requests:
        return out
    todo: dict[Comparison, list[int]] = {}
    keys: dict[Comparison, bytes] = {}
    for k, req in enumerate(requests):
        if cache.size:
            key = keys.setdefault(req, cache.key(*req))
            hit = cache.get(key)
            if hit is not None:
                out[k] = hit
                continue
        todo.setdefault(req, []).append(k)
    if progress is not None:
        progress.update(len(requests) - sum(len(v) for v in todo.values()))
    if not todo:
        return out

    uniq = list(todo)
    src_texts = list(dict.fromkeys(r[0] for r in uniq))
    cand_texts = list(dict.fromkeys(t for r in uniq for t in r[1:]))
    src_ids = dict(zip(src_texts, encoder.encode_sources(src_texts), strict=True))
    cand_ids = dict(zip(cand_texts, encoder.encode_candidates(cand_texts), strict=True))
    seqs = [encoder.build(src_ids[s], cand_ids[a], cand_ids[b]) for s, a, b in uniq]

    values = np.zeros(len(seqs))
    for idx in length_batches([len(s) for s in seqs], batch_size, exact=exact):
        ids, mask = pad_batch([seqs[i] for i in idx], pad_id)  # (batch, longest)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (batch,)
        values[idx] = logits.float().cpu().numpy()
        if progress is not None:
            progress.update(sum(len(todo[uniq[i]]) for i in idx))

    for req, value in zip(uniq, values, strict=True):
        out[todo[req]] = value
        if cache.size:
            cache.put(keys[req], float(value))
    cache.trim()
    return out


def drive_strategies(
    logits: Callable[[list[Comparison]], np.ndarray],
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    gens: Sequence[strategies.StrategyGen],
) -> tuple[list[strategies.StrategyResult], list[int]]:
    """Run one strategy generator per prompt to its end, each round's comparisons of all prompts in one
    ``logits`` call; returns each prompt's result and how many comparisons it asked for."""
    driver = strategies.rounds(gens)
    try:
        asked = next(driver)
        while True:
            values = logits([(prompts[k], candidates[k][i], candidates[k][j]) for k, (i, j) in asked])
            asked = driver.send([float(v) for v in values])
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
