"""Token batches shared by the model rankers: length-sorted batches, padding."""

from __future__ import annotations

from blender_core.ranking.batches import length_batches, pad_batch


def test_batches_are_longest_first_and_exact_ones_hold_one_length() -> None:
    lengths = [5, 9, 5, 7, 9, 5]
    assert length_batches(lengths, 2, exact=False) == [[1, 4], [3, 0], [2, 5]]
    assert length_batches(lengths, 2, exact=True) == [[1, 4], [3], [0, 2], [5]]
    assert length_batches(lengths, 8, exact=True) == [[1, 4], [3], [0, 2, 5]]
    assert length_batches([], 4, exact=False) == []


def test_rows_are_padded_on_the_right() -> None:
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
