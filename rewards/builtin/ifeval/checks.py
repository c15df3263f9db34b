"""The 25 verifiable instructions of IFEval (strict mode), by IFEval's instruction ids
and kwargs names, and the `ifeval` reward: the fraction of a row's constraints met.

A row carries `"constraints": [{"id": "length_constraints:number_words",
"kwargs": {"num_words": 50, "relation": "at least"}}, ...]`. Relations are IFEval's
"less than" / "at least". The logic follows google-research/instruction_following_eval;
where it departs: sentences and word tokens come from `text.py` (no nltk punkt data
offline) and languages from a script / stop-word detector (no langdetect).
An unknown id or a missing kwarg is a failure of the row, not a 0.

>>> check("punctuation:no_comma", "No commas here.")
True
>>> check("keywords:frequency", "cat cat dog", keyword="cat", frequency=2, relation="at least")
True
>>> ifeval_reward("HELLO THERE", {"constraints": [
...     {"id": "change_case:english_capital", "kwargs": {}},
...     {"id": "startend:quotation", "kwargs": {}}]})
0.5
"""

from __future__ import annotations

import collections
import json
import re
from typing import Callable

from rewards.api import reward
from rewards.builtin.ifeval.text import count_sentences, count_words, detect_language, is_english, word_tokens

CHECKS: dict[str, Callable[..., bool]] = {}
RELATIONS = ("less than", "at least")


def _check(instruction_id: str):
    def deco(fn):
        CHECKS[instruction_id] = fn
        return fn
    return deco


def _compare(count: int, target: int, relation: str) -> bool:
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


@_check("keywords:existence")
def keywords_existence(value: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), value, flags=re.IGNORECASE) for k in keywords)


@_check("keywords:frequency")
def keywords_frequency(value: str, keyword: str, frequency: int, relation: str) -> bool:
    return _compare(len(re.findall(re.escape(keyword), value, flags=re.IGNORECASE)), frequency, relation)


@_check("keywords:forbidden_words")
def keywords_forbidden(value: str, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", value, flags=re.IGNORECASE) for w in forbidden_words)


@_check("keywords:letter_frequency")
def letter_frequency(value: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(collections.Counter(value.lower())[letter.lower()], let_frequency, let_relation)


@_check("language:response_language")
def response_language(value: str, language: str) -> bool:
    return detect_language(value) == language


@_check("length_constraints:number_sentences")
def number_sentences(value: str, num_sentences: int, relation: str) -> bool:
    return _compare(count_sentences(value), num_sentences, relation)


@_check("length_constraints:number_paragraphs")
def number_paragraphs(value: str, num_paragraphs: int) -> bool:
    paragraphs = re.split(r"\s?\*\*\*\s?", value)
    count = len(paragraphs)
    for i, p in enumerate(paragraphs):
        if not p.strip():
            if i in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


@_check("length_constraints:number_words")
def number_words(value: str, num_words: int, relation: str) -> bool:
    return _compare(count_words(value), num_words, relation)


@_check("length_constraints:nth_paragraph_first_word")
def nth_paragraph_first_word(value: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paragraphs = re.split(r"\n\n", value)
    count = sum(1 for p in paragraphs if p.strip())
    if not 1 <= nth_paragraph <= count:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for ch in word:
        if ch in {".", ",", "?", "!", "'", '"'}:
            break
        first += ch.lower()
    return count == num_paragraphs and first == first_word.lower()


@_check("detectable_content:number_placeholders")
def number_placeholders(value: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", value)) >= num_placeholders


@_check("detectable_content:postscript")
def postscript(value: str, postscript_marker: str) -> bool:
    value = value.lower()
    if postscript_marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif postscript_marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(postscript_marker.lower()) + r".*$"
    return bool(re.findall(pattern, value, flags=re.MULTILINE))


@_check("detectable_format:number_bullet_lists")
def number_bullet_lists(value: str, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", value, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", value, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


@_check("detectable_format:constrained_response")
def constrained_response(value: str) -> bool:
    value = value.strip()
    return any(opt in value for opt in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


@_check("detectable_format:number_highlighted_sections")
def number_highlighted_sections(value: str, num_highlights: int) -> bool:
    n = sum(1 for h in re.findall(r"\*[^\n\*]*\*", value) if h.strip("*").strip())
    n += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", value) if h.removeprefix("**").removesuffix("**").strip())
    return n >= num_highlights


@_check("detectable_format:multiple_sections")
def multiple_sections(value: str, section_spliter: str, num_sections: int) -> bool:
    sections = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", value)
    return len(sections) - 1 >= num_sections


@_check("detectable_format:json_format")
def json_format(value: str) -> bool:
    value = (value.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON")
             .removeprefix("```").removesuffix("```").strip())
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return False
    return True


@_check("detectable_format:title")
def title(value: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", value))


@_check("combination:two_responses")
def two_responses(value: str) -> bool:
    parts = value.split("******")
    valid = []
    for i, p in enumerate(parts):
        if not p.strip():
            if i not in (0, len(parts) - 1):
                return False
        else:
            valid.append(p)
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


@_check("combination:repeat_prompt")
def repeat_prompt(value: str, prompt_to_repeat: str) -> bool:
    return value.strip().lower().startswith(prompt_to_repeat.strip().lower())


@_check("startend:end_checker")
def end_checker(value: str, end_phrase: str) -> bool:
    return value.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@_check("change_case:capital_word_frequency")
def capital_word_frequency(value: str, capital_frequency: int, capital_relation: str) -> bool:
    return _compare(sum(1 for w in word_tokens(value) if w.isupper()), capital_frequency, capital_relation)


@_check("change_case:english_capital")
def english_capital(value: str) -> bool:
    return value.isupper() and is_english(value)


@_check("change_case:english_lowercase")
def english_lowercase(value: str) -> bool:
    return value.islower() and is_english(value)


@_check("punctuation:no_comma")
def no_comma(value: str) -> bool:
    return "," not in value


@_check("startend:quotation")
def quotation(value: str) -> bool:
    value = value.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


def check(instruction_id: str, value: str, **kwargs) -> bool:
    """Run one instruction check; unknown ids and bad kwargs raise with the id in the message."""
    fn = CHECKS.get(instruction_id)
    if fn is None:
        raise KeyError(f"unknown IFEval instruction id {instruction_id!r}; known: {', '.join(sorted(CHECKS))}")
    # IFEval rows carry null-valued kwargs for fields an instruction does not use.
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return bool(fn(value, **kwargs))
    except TypeError as e:
        raise TypeError(f"{instruction_id}: bad kwargs {sorted(kwargs)} ({e})") from None


@reward("ifeval")
def ifeval_reward(completion: str, sample: dict, key: str = "constraints") -> float:
    """Fraction of the row's IFEval constraints the completion satisfies (strict)."""
    constraints = sample.get(key)
    if not isinstance(constraints, list) or not constraints:
        raise KeyError(f"sample needs a non-empty {key!r} list of {{'id': ..., 'kwargs': {{...}}}}")
    passed = 0
    for c in constraints:
        if not isinstance(c, dict) or "id" not in c:
            raise ValueError(f"each constraint needs an 'id' (and 'kwargs'), got {c!r:.100}")
        passed += check(c["id"], completion, **(c.get("kwargs") or {}))
    return passed / len(constraints)
