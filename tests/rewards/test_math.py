"""The `math` reward: answer extraction and math-verify equivalence."""

import threading

import pytest

from rewards.builtin.math_answer import answers_match, extract_answer, math_reward

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"), ("1/2", "0.5"), ("\\dfrac{3}{4}", "0.75"), ("3.0", "3"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("x^2+2x+1", "(x+1)^2"), ("(0,1]", "(0, 1]"),
    ("\\{1,2,3\\}", "\\{3,2,1\\}"), ("2\\pi", "6.283185"), ("1,000", "1000"), ("x = 5", "5"),
    ("[-1, 2)", "[-1,2)"),
]
DIFFERENT = [
    ("0.333", "1/3"), ("[0,1)", "(0,1]"), ("\\{1,2\\}", "\\{1,3\\}"), ("10", "-10"),
    ("(0,1)", "[0,1]"), ("x^2", "2x"), ("\\frac{2}{3}", "0.67"),
]


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent(pred, gold):
    assert answers_match(pred, gold)


@pytest.mark.parametrize("pred,gold", DIFFERENT)
def test_not_equivalent(pred, gold):
    assert not answers_match(pred, gold)


@pytest.mark.parametrize("text,answer", [
    ("We get \\boxed{\\frac{a}{b}} so", "\\frac{a}{b}"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("nested \\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
    ("Thus.\nAnswer: $x = 4$.", "x = 4"),
    ("The final answer is 12", "12"),
    ("there are 3 apples and 1,250 pears", "1250"),
    ("no digits here", None),
])
def test_extraction(text, answer):
    assert extract_answer(text) == answer


def test_reward_values_and_failures():
    assert math_reward("so \\boxed{\\frac{6}{8}}", {"answer": "0.75"}) == 1.0
    assert math_reward("Answer: 7", {"answer": "8"}) == 0.0
    assert math_reward("I don't know", {"answer": "8"}) == 0.0
    with pytest.raises(KeyError, match="answer"):
        math_reward("1", {})
    with pytest.raises(ValueError, match="cannot parse the reference answer"):
        math_reward("\\boxed{2}", {"answer": "\\frac{"})


def test_works_off_the_main_thread():
    """math-verify's signal.alarm would silently fail here; we switch it off."""
    out = []
    t = threading.Thread(target=lambda: out.append(math_reward("\\boxed{0.5}", {"answer": "\\frac12"})))
    t.start()
    t.join(30)
    assert out == [1.0]
