"""The addition task's hints: cumulative, truthful, and the answer only at level 5."""

import re

import pytest

from posttrain.tasks.addition import addition_hints, make_addition_rows


@pytest.mark.parametrize("terms", [[95, 75], [12, 3], [47, 38], [99, 99, 99], [0, 0]])
def test_hints_are_cumulative_and_only_level_5_states_the_answer(terms):
    hints, total = addition_hints(terms), sum(terms)
    assert len(hints) == 5
    for lower, higher in zip(hints, hints[1:]):
        assert higher.startswith(lower[:-1] + "; ")  # level k repeats level k-1, then adds
    assert hints[4].endswith(f"The answer is {total}.")
    assert not re.search(r"\d", hints[0])  # the concept level names no digits to copy
    carries = sum(t % 10 for t in terms) >= 10
    assert ("does not carry" not in hints[0]) == carries
    assert f"ends in {total % 10}" in hints[1]
    assert f"the sum has {len(str(total))} digits" in hints[3]


def test_rows_carry_their_own_hints():
    for row in make_addition_rows(50, seed=3):
        terms = [int(x) for x in re.findall(r"\d+", row["prompt"])]
        assert row["hints"] == addition_hints(terms) and row["answer"] == str(sum(terms))
