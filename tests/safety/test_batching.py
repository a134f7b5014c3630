"""``safety.batching.token_batches``: fixed chunks without a budget, length-sorted batches
within it with one."""

from __future__ import annotations

import pytest

from safety.batching import token_batches


def test_without_a_budget_batches_are_consecutive_chunks_of_max_items() -> None:
    assert token_batches([5, 1, 9, 2, 7], None, 2) == [[0, 1], [2, 3], [4]]


def test_without_a_budget_or_max_items_everything_is_one_batch() -> None:
    assert token_batches([5, 1, 9], None) == [[0, 1, 2]]


def test_no_lengths_give_no_batches() -> None:
    assert token_batches([], 64, 4) == []


def test_a_budget_groups_by_length_and_bounds_the_padded_size() -> None:
    lengths = [100, 10, 60, 12, 30, 11]
    batches = token_batches(lengths, 60)
    assert batches == [[1, 5, 3], [4], [2], [0]]
    # 3 × 12 = 36; 30 + 60 would pad to 120; 100 is alone, over the budget
    assert max(len(b) * max(lengths[i] for i in b) for b in batches[:-1]) <= 60


def test_every_position_lands_in_exactly_one_batch() -> None:
    lengths = [(7 * i) % 23 + 1 for i in range(50)]
    batches = token_batches(lengths, 40, 5)
    assert sorted(i for b in batches for i in b) == list(range(50))


def test_max_items_caps_a_batch_within_the_budget() -> None:
    assert [len(b) for b in token_batches([1] * 7, 1000, 3)] == [3, 3, 1]


def test_a_sequence_longer_than_the_budget_makes_a_batch_alone() -> None:
    assert token_batches([5000, 3], 100) == [[1], [0]]


@pytest.mark.parametrize(("max_tokens", "max_items"), [(0, None), (None, 0)])
def test_a_budget_or_size_below_one_is_refused(max_tokens, max_items) -> None:
    with pytest.raises(ValueError, match="must be ≥ 1"):
        token_batches([1, 2], max_tokens, max_items)
