import pytest

from hints.inject import HintInjectionError, check_template, inject_hint, question_text, with_hint
from hints.levels import ALL_LEVELS, HintLevel, check_level, level_label, level_name


def test_five_named_levels():
    assert [level_name(k) for k in ALL_LEVELS] == ["none", "concept", "strategy", "tools", "steps", "solution"]
    assert HintLevel.SOLUTION == 5 and level_label(0) == "none" and level_label(3) == "L3"
    for bad in (-1, 6, "2", True, 1.0):
        with pytest.raises(ValueError, match="0-5"):
            check_level(bad)


def test_string_prompt_gets_hint_after_question():
    assert inject_hint("What is 1 + 2?", "Hint: add.") == "What is 1 + 2?\nHint: add."
    assert inject_hint("Q", "H", "{question}\n\nHint: {hint}") == "Q\n\nHint: H"


def test_chat_prompt_appends_to_last_user_message_only():
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First"},
              {"role": "assistant", "content": "Ok"}, {"role": "user", "content": "What is 1 + 2?"}]
    out = inject_hint(prompt, "Hint: add.")
    assert out[3]["content"] == "What is 1 + 2?\nHint: add."
    assert out[:3] == prompt[:3]
    assert prompt[3]["content"] == "What is 1 + 2?"  # the input is not mutated
    assert question_text(prompt) == "What is 1 + 2?"


def test_chat_prompt_without_user_message_names_the_row():
    row = {"id": "r7", "prompt": [{"role": "system", "content": "x"}], "answer": "1"}
    with pytest.raises(HintInjectionError, match="'r7'.*no 'user' message"):
        with_hint(row, 2, "hint")


def test_with_hint_tags_level_and_keeps_level_zero_prompt():
    row = {"id": "a", "prompt": "Q", "answer": "1", "hints": ["h1", "h2", "h3", "h4", "h5"]}
    assert with_hint(row, 0, "") == {**row, "hint_level": 0}
    hinted = with_hint(row, 3, "h3")
    assert hinted["prompt"] == "Q\nh3" and hinted["hint_level"] == 3 and row["prompt"] == "Q"


@pytest.mark.parametrize("bad", ["{question}", "{hint}", "{question} {hint} {x}", "{question {hint}"])
def test_template_must_use_question_and_hint(bad):
    with pytest.raises(ValueError, match="hints.template"):
        check_template(bad)
    assert check_template("{question} -- {hint}")
