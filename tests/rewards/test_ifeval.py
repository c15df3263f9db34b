"""Each of the 25 IFEval instruction types, passing and failing (strict mode)."""

import pytest

from rewards.builtin.ifeval.checks import CHECKS, check, ifeval_reward

# id -> (kwargs, passing response, failing response)
CASES = {
    "keywords:existence": ({"keywords": ["apple", "pear"]}, "An Apple and a pear.", "Only an apple."),
    "keywords:frequency": ({"keyword": "cat", "frequency": 3, "relation": "at least"},
                           "cat cat Cat", "cat cat dog"),
    "keywords:forbidden_words": ({"forbidden_words": ["bad", "ugly"]}, "A badge is fine.", "That is Bad."),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 2, "let_relation": "less than"},
                                  "zebra", "zigzag"),
    "language:response_language": ({"language": "es"},
                                   "Hola, el perro es muy grande y la casa es para nosotros.",
                                   "Hello, the dog is very big and the house is for us."),
    "length_constraints:number_sentences": ({"num_sentences": 3, "relation": "less than"},
                                            "Dr. Who came at 3.30 p.m. today. He left.",
                                            "One. Two! Three? Four."),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "First part.\n***\nSecond part.",
                                             "First.\n***\n***\nThird."),
    "length_constraints:number_words": ({"num_words": 5, "relation": "at least"},
                                        "one two three four five", "one two three four"),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "First we cook.\n\n\"Then, we eat.", "First we cook.\n\nAfter that we eat."),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Dear [name] at [address].",
                                               "Dear [name]."),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Hi.\n\nP.S. see you", "Hi. PS see you"),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* one\n* two", "* one\n* two\n- three"),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes, definitely."),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "*one* and **two**", "*one* and **"),
    "detectable_format:multiple_sections": ({"section_spliter": "Section", "num_sections": 2},
                                            "Section 1\nfoo\nSection 2\nbar", "Section 1\nfoo"),
    "detectable_format:json_format": ({}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    "detectable_format:title": ({}, "<<My Title>>\nbody", "<< >>\nbody"),
    "combination:two_responses": ({}, "first answer\n******\nsecond answer", "same\n******\nsame"),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Write a poem."}, "write a poem. Roses...",
                                  "A poem: Write a poem."),
    "startend:end_checker": ({"end_phrase": "Any other questions?"}, "Done. Any other questions?\"",
                             "Any other questions? Done."),
    "change_case:capital_word_frequency": ({"capital_frequency": 2, "capital_relation": "at least"},
                                           "The NASA and ESA teams", "The Nasa team"),
    "change_case:english_capital": ({}, "THIS IS ALL CAPS.", "THIS IS Not ALL CAPS."),
    "change_case:english_lowercase": ({}, "all lower case here.", "Not all lower case."),
    "punctuation:no_comma": ({}, "No commas at all.", "Well, a comma."),
    "startend:quotation": ({}, '"Wrapped in quotes"', '"Only at the start'),
}


def test_all_25_instruction_types_are_covered():
    assert len(CHECKS) == 25 and set(CASES) == set(CHECKS)


@pytest.mark.parametrize("iid", sorted(CASES))
def test_pass_and_fail(iid):
    kwargs, good, bad = CASES[iid]
    assert check(iid, good, **kwargs) is True
    assert check(iid, bad, **kwargs) is False


def test_reward_is_fraction_satisfied():
    row = {"constraints": [{"id": "punctuation:no_comma", "kwargs": {}},
                           {"id": "length_constraints:number_words",
                            "kwargs": {"num_words": 3, "relation": "less than"}},
                           {"id": "startend:quotation"}]}
    assert ifeval_reward("short text here", row) == pytest.approx(1 / 3)
    assert ifeval_reward('"short"', row) == 1.0


def test_null_kwargs_of_other_instructions_are_ignored():
    # IFEval's released rows carry every kwarg name, null where unused.
    assert check("punctuation:no_comma", "ok", num_words=None, relation=None)


@pytest.mark.parametrize("row,match", [
    ({"constraints": [{"id": "nope:unknown", "kwargs": {}}]}, "unknown IFEval instruction id 'nope:unknown'"),
    ({"constraints": [{"id": "keywords:frequency", "kwargs": {"keyword": "x"}}]}, "keywords:frequency: bad kwargs"),
    ({"constraints": [{"id": "keywords:frequency",
                       "kwargs": {"keyword": "x", "frequency": 1, "relation": "more"}}]}, "relation"),
    ({}, "constraints"),
])
def test_bad_rows_fail_loudly(row, match):
    with pytest.raises((KeyError, TypeError, ValueError), match=match):
        ifeval_reward("text", row)
