"""`format` modes and `length`."""

import pytest

from rewards.builtin.format import format_reward, length_penalty

THINK = "<think>2 + 3 = 5</think>The answer is 5."
NO_THINK = "The answer is 5."
EMPTY_THINK = "<think>\n\n</think>The answer is 5."


@pytest.mark.parametrize("kind,text,expected", [
    ("think", THINK, 1.0), ("think", NO_THINK, 0.0), ("think", EMPTY_THINK, 0.0),
    ("think", "<think>a</think>", 0.0), ("think", "<think>a</think>b<think>c</think>d", 0.0),
    ("think", "intro <think>a</think>b", 0.0), ("think", "<think>a b", 0.0),
    ("no_think", NO_THINK, 1.0), ("no_think", EMPTY_THINK, 1.0), ("no_think", THINK, 0.0),
    ("no_think", "", 0.0), ("no_think", "answer </think>", 0.0),
    ("auto_think", THINK, 1.0), ("auto_think", NO_THINK, 1.0), ("auto_think", "<think>x", 0.0),
    ("auto_think", "<think></think>", 0.0),
])
def test_think_modes(kind, text, expected):
    assert format_reward(text, {}, kind=kind) == expected


def test_answer_tag():
    assert format_reward("<think>r</think><answer>5</answer>", {}, kind="think", answer_tag=True) == 1.0
    assert format_reward("<think>r</think>5", {}, kind="think", answer_tag=True) == 0.0
    assert format_reward("<answer> </answer>", {}, kind="no_think", answer_tag=True) == 0.0


def test_row_can_choose_the_mode():
    assert format_reward(NO_THINK, {"format": "no_think"}, kind="think") == 1.0


@pytest.mark.parametrize("text,keys,expected", [
    ('{"a": 1, "b": [2]}', None, 1.0), ('```json\n{"a": 1}\n```', ["a"], 1.0), ('{"a": 1}', ["b"], 0.0),
    ("{'a': 1}", None, 0.0), ("[1, 2,]", None, 0.0), ("Sure! {\"a\": 1}", None, 0.0),
])
def test_json(text, keys, expected):
    assert format_reward(text, {}, kind="json", required_keys=keys) == expected


def test_markdown():
    doc = "# Title\n\nText\n\n## Part\n- a\n- b\n\n| x | y |\n|---|---|\n| 1 | 2 |\n"
    assert format_reward(doc, {}, kind="markdown", min_headings=2, min_bullets=2, min_tables=1) == 1.0
    assert format_reward(doc, {}, kind="markdown", min_headings=3) == 0.0
    assert format_reward("```\n# not a heading\n```", {}, kind="markdown") == 0.0
    assert format_reward("#NoSpace", {}, kind="markdown") == 0.0


def test_code_fence():
    assert format_reward("```python\nprint(1)\n```", {}, kind="code", language="python") == 1.0
    assert format_reward("```python\nprint(1\n```", {}, kind="code", language="python") == 0.0
    assert format_reward("```js\nx()\n```", {}, kind="code", language="python") == 0.0
    assert format_reward("print(1)", {}, kind="code") == 0.0


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown format kind"):
        format_reward("x", {}, kind="yaml")


@pytest.mark.parametrize("n,expected", [(0, 0.0), (80, 0.0), (90, -0.5), (100, -1.0), (500, -1.0)])
def test_length_penalty(n, expected):
    assert length_penalty("x" * n, {}, max_length=100, buffer=20) == pytest.approx(expected)


def test_length_units():
    assert length_penalty("a b c", {}, max_length=2, buffer=0, unit="words") == -1.0
    assert length_penalty("", {"num_tokens": 5}, max_length=10, buffer=2, unit="tokens") == 0.0
    with pytest.raises(KeyError, match="num_tokens"):
        length_penalty("", {}, unit="tokens")
