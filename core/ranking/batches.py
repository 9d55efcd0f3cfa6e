"""Token sequences in batches for a forward pass, shared by the rankers that run a model: the per-call
``batch_size`` check, length-sorted batches (:func:`length_batches`) and right padding with an attention mask
(:func:`pad_batch`).

Example:
    >>> length_batches([5, 9, 5, 7], batch_size=2, exact=False)
    [[1, 3], [0, 2]]
    >>> length_batches([5, 9, 5, 7], batch_size=2, exact=True)
    [[1], [3], [0, 2]]
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch


def check_batch_size(batch_size: object, fn: str) -> int | None:
    """A per-call batch size: ``None`` (the ranker's own) or a positive int; else a ``ValueError`` naming it.

    Example:
        >>> check_batch_size(0, "rank")
        Traceback (most recent call last):
        ...
        ValueError: rank(): batch_size must be a positive int (comparisons per forward pass) or None for the ranker's own, got 0
    """
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(
            f"{fn}(): batch_size must be a positive int (comparisons per forward pass) or None for the "
            f"ranker's own, got {batch_size!r}"
        )
    return int(batch_size)


def length_batches(lengths: Sequence[int], batch_size: int, *, exact: bool) -> list[list[int]]:
    """Indices of the sequences in batches of up to ``batch_size``, longest first.

    With ``exact``, only sequences of one length share a batch, so nothing is padded: on CPU that runs no
    padding (attention is quadratic in the padded length; measured 1.7x to 3.7x faster than padded batches
    of 32 there), and a logit does not depend on what else the call holds (padding moves fp32 rounding,
    which random or poorly conditioned models amplify past 1e-4). Without it (the GPU default), batches
    are length-sorted and padded to their longest row, which keeps the device busy.
    """
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (not exact or lengths[last[0]] == lengths[i]):
            last.append(i)
        else:
            batches.append([i])
    return batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, (batch, longest), the rows padded on the right.

    Built in numpy and handed to torch without a copy: a tensor op per row cost more than the tiny
    ranker's head (0.21 ms for 2 rows of 80 tokens before, 0.05 ms now; 32 rows of 200: 6 ms, 0.9 ms).
    """
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    mask = (np.arange(width) < lengths[:, None]).astype(np.int64)  # (batch, longest)
    return torch.from_numpy(ids), torch.from_numpy(mask)
