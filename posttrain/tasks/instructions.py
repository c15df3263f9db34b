"""Offline instruction-following tasks: the demo's addition prompts with 1-4 constraints.

Each row keeps the base task verifiable (`answer` is the sum; `final_number` below
reads the last integer of a completion) and adds:
- `constraints`: IFEval-style hard constraints (ids and kwargs of IFEval), scored by
  the `ifeval` reward as the fraction satisfied;
- `rubric`: soft constraints for the `judge` reward (template `rubric`); rows always
  carry one, so a judge never fails on a missing field;
- `task: "addition_if"` and `families`: which constraint families the prompt uses.

The hard constraints are chosen so a short numeric answer can satisfy them together
(`compose` builds such an answer: `"<<Sum>> equals 7 Done"`): a title, a keyword
before the number, at least N words, a postscript, an end word, double quotes around
everything; `json` (`{"sum": 7}`) only combines with `no_comma`. Off by default:
`no_comma` (any answer under 1000 meets it) and `json` (IFEval's check accepts any
JSON value, so a bare number meets it too); they would only inflate the rate.

`sft_rows` writes the unconstrained SFT data of the align demo: bare answers, plus a
fraction of answers in these surface forms *without* the instruction, so a policy
samples them now and then and RL can connect the instruction to the form.

>>> rows = make_if_rows(make_addition_rows(4, digits=1), n_per_problem=1, seed=0)
>>> all(1 <= len(r["constraints"]) <= 4 and r["answer"] for r in rows)
True
>>> final_number('"<<Sum>> equals 12 Done"', {"answer": "12"})
1.0
>>> final_number('{"sum": 7}', {"answer": "8"})
0.0
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from posttrain.tasks.addition import make_addition_rows, split_rows
from rewards.api import reward
from rewards.builtin.ifeval.checks import ifeval_reward

END_WORDS = ("Done", "Bye")
KEYWORDS = ("equals", "total")
TITLES = ("Sum", "Result")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}  # no digits in instructions: the operands are the only ones
SOFT = ("Be concise.", "Sound confident.", "Be polite.", "Do not explain the steps.")
DEFAULT_FAMILIES = ("end", "quote", "title", "keyword", "words")
ALL_FAMILIES = (*DEFAULT_FAMILIES, "json", "postscript", "no_comma")


@dataclass(frozen=True)
class Family:
    """A constraint family: its IFEval id, how to draw an instance, and its instruction."""

    name: str
    ifeval_id: str
    draw: Callable[[random.Random], dict[str, Any]]  # -> IFEval kwargs
    text: Callable[[dict[str, Any]], str]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("end", "startend:end_checker", lambda r: {"end_phrase": r.choice(END_WORDS)},
           lambda k: f"End your response with the word '{k['end_phrase']}'."),
    Family("quote", "startend:quotation", lambda r: {},
           lambda k: "Wrap your entire response in double quotation marks."),
    Family("title", "detectable_format:title", lambda r: {},
           lambda k: "Start with a title in double angular brackets, like <<title>>."),
    Family("keyword", "keywords:existence", lambda r: {"keywords": [r.choice(KEYWORDS)]},
           lambda k: f"Include the word '{k['keywords'][0]}'."),
    Family("words", "length_constraints:number_words", lambda r: {"num_words": 3, "relation": "at least"},
           lambda k: f"Answer in at least {NUMBER_WORDS[k['num_words']]} words."),
    Family("json", "detectable_format:json_format", lambda r: {},
           lambda k: "Give your answer in JSON format."),
    Family("postscript", "detectable_content:postscript", lambda r: {"postscript_marker": "P.S."},
           lambda k: "Add a postscript starting with P.S."),
    Family("no_comma", "punctuation:no_comma", lambda r: {},
           lambda k: "Do not use any commas."),
)}
# json's surface form cannot carry a title, quotes, words or an end word.
EXCLUSIVE = {"json": {"no_comma"}}


def _compatible(chosen: list[str], cand: str) -> bool:
    for a, b in ((cand, c) for c in chosen):
        if a in EXCLUSIVE and b not in EXCLUSIVE[a] or b in EXCLUSIVE and a not in EXCLUSIVE[b]:
            return False
    return True


def draw_families(rng: random.Random, families: tuple[str, ...], k: int) -> list[str]:
    """Up to k distinct, mutually compatible families in a random order."""
    pool = list(families)
    rng.shuffle(pool)
    chosen: list[str] = []
    for name in pool:
        if len(chosen) < k and _compatible(chosen, name):
            chosen.append(name)
    return chosen


def add_constraints(row: dict[str, Any], rng: random.Random, families: tuple[str, ...] = DEFAULT_FAMILIES,
                    min_k: int = 1, max_k: int = 4, soft_prob: float = 0.0, suffix: str = "") -> dict[str, Any]:
    """A copy of a task row with 1-4 hard constraints (and maybe soft ones) in its prompt."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown constraint families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    if not 1 <= min_k <= max_k <= 4:
        raise ValueError(f"need 1 <= min_k <= max_k <= 4 (got {min_k}, {max_k})")
    names = draw_families(rng, families, rng.randint(min_k, max_k))
    constraints, texts = [], []
    for name in names:
        fam = FAMILIES[name]
        kwargs = fam.draw(rng)
        constraints.append({"id": fam.ifeval_id, "kwargs": kwargs})
        texts.append(fam.text(kwargs))
    soft = [s for s in SOFT if rng.random() < soft_prob]
    texts += soft
    out = {k: v for k, v in row.items() if k != "hints"}  # hints describe the bare task
    out.update(id=f"{row['id']}-if{suffix}", prompt=f"{row['prompt']} {' '.join(texts)}", constraints=constraints,
               rubric=soft or ["Answer the question correctly and follow every instruction."],
               families=names, task="addition_if")
    return out


def make_if_rows(base: list[dict[str, Any]], n_per_problem: int = 1, seed: int = 0, **kw: Any) -> list[dict[str, Any]]:
    """`n_per_problem` constrained variants of each base row (distinct ids)."""
    rng = random.Random(f"if:{seed}")
    return [add_constraints(row, rng, suffix=str(j), **kw) for row in base for j in range(n_per_problem)]


# ---------------------------------------------------------------------------- surface forms


def compose(answer: str, forms: dict[str, Any]) -> str:
    """An answer in the given surface forms, e.g. {"title": "Sum", "end": "Done"}.

    >>> compose("7", {"title": "Sum", "keyword": "equals", "end": "Done", "quote": True})
    '"<<Sum>> equals 7 Done"'
    >>> compose("7", {"json": True})
    '{"sum": 7}'
    """
    if forms.get("json"):
        return '{"sum": %s}' % answer
    parts = []
    if forms.get("title"):
        parts.append(f"<<{forms['title']}>>")
    if forms.get("keyword"):
        parts.append(forms["keyword"])
    if forms.get("words") and len(parts) + 1 + bool(forms.get("end")) < 3:
        parts.append("it is")
    parts.append(answer)
    text = " ".join(parts)
    if forms.get("postscript"):
        text += "\nP.S. easy"
    if forms.get("end"):
        text += f" {forms['end']}"
    return f'"{text}"' if forms.get("quote") else text


def satisfying_forms(row: dict[str, Any]) -> dict[str, Any]:
    """The surface forms that satisfy a constrained row (used by tests and references)."""
    forms: dict[str, Any] = {}
    for name, c in zip(row["families"], row["constraints"]):
        kw = c["kwargs"]
        forms[name] = {"end": kw.get("end_phrase"), "keyword": (kw.get("keywords") or [None])[0],
                       "title": "Sum"}.get(name, True)
    return forms


def random_forms(rng: random.Random, p_form: float = 0.35, p_json: float = 0.0) -> dict[str, Any]:
    """At least one surface form, each present with probability p_form (json alone)."""
    if rng.random() < p_json:
        return {"json": True}
    while True:
        forms = {"title": rng.random() < p_form and rng.choice(TITLES),
                 "keyword": rng.random() < p_form and rng.choice(KEYWORDS),
                 "words": rng.random() < p_form, "end": rng.random() < p_form and rng.choice(END_WORDS),
                 "quote": rng.random() < p_form}
        forms = {k: v for k, v in forms.items() if v}
        if forms:
            return forms


def sft_rows(base: list[dict[str, Any]], copies: int = 10, styled_fraction: float = 0.3,
             seed: int = 0) -> list[dict[str, Any]]:
    """Unconstrained SFT rows: each problem `copies` times; a `styled_fraction` of the
    answers come in random surface forms (never with the instruction that asks for it)."""
    rng = random.Random(f"sft:{seed}")
    out = []
    for j in range(copies):
        for row in base:
            answer = compose(row["answer"], random_forms(rng)) if rng.random() < styled_fraction else row["answer"]
            out.append({"id": f"{row['id']}-c{j}", "prompt": row["prompt"], "answer": answer})
    rng.shuffle(out)
    return out


def unheeded_instruction_rows(base: list[dict[str, Any]], copies: int = 5, styled_fraction: float = 0.3,
                              seed: int = 0) -> list[dict[str, Any]]:
    """SFT rows whose prompts carry 1-4 instructions that the answer ignores: bare, or in random
    surface forms drawn as in `sft_rows`, never chosen to match the instruction.

    A model trained only on bare questions loses the operands once an instruction follows
    the question (the align demo's SFT model answered 20% of held-out constrained prompts
    right, all 100 bare ones); alignment RL then trades the sum for the form (`"<<Sum>>
    equals 12 Bye"` for 5 + 5). These rows teach it to read the sum past instruction text,
    and leave the instruction -> form link to RL: a form meets an instruction only by chance.

    >>> base = make_addition_rows(3, digits=1)
    >>> rows = unheeded_instruction_rows(base, copies=2, styled_fraction=0.0)
    >>> [r["answer"] for r in rows] == [b["answer"] for b in base for _ in range(2)], rows[0]["prompt"] != base[0]["prompt"]
    (True, True)
    """
    rng = random.Random(f"sft-unheeded:{seed}")
    out = []
    for row in base:
        for j in range(copies):
            prompt = add_constraints(row, rng)["prompt"]
            answer = compose(row["answer"], random_forms(rng)) if rng.random() < styled_fraction else row["answer"]
            out.append({"id": f"{row['id']}-u{j}", "prompt": prompt, "answer": answer})
    return out


def instruction_texts() -> list[str]:
    """Every instruction sentence the generator can write (for a tiny tokenizer)."""
    rng = random.Random(0)
    texts = {FAMILIES[n].text(FAMILIES[n].draw(rng)) for n in ALL_FAMILIES for _ in range(20)}
    return sorted(texts | set(SOFT))


# ---------------------------------------------------------------------------- task reward

_INT_RE = re.compile(r"-?\d+")


@reward("constraints_met")
def constraints_met(completion: str, sample: dict) -> float:
    """`ifeval` that also takes rows with an explicit empty `constraints` list (a task row
    mixed into alignment data): all of their zero constraints are met, 1.0. A row without
    the field is still a failure."""
    if sample.get("constraints") == []:
        return 1.0
    return ifeval_reward(completion, sample)


@reward("final_number")
def final_number(completion: str, sample: dict) -> float:
    """1.0 when the last integer in the completion equals the row's integer `answer`."""
    if "answer" not in sample:
        raise KeyError("sample has no 'answer' field")
    gold = int(str(sample["answer"]).strip())
    nums = _INT_RE.findall(completion)
    return float(bool(nums) and int(nums[-1]) == gold)


@reward("task_answer")
def task_answer(completion: str, sample: dict) -> float:
    """The task reward of an alignment mix: on an unconstrained task row (`constraints: []`)
    the base task's own reward, the exact answer; on a constrained row, `final_number`.

    Without the exact check on plain rows a policy learns one styled answer for every
    prompt (e.g. `"<<Sum>> total 7 Done"`), and its sums break in that form.

    >>> task_answer('"7"', {"answer": "7", "constraints": []}), task_answer('"7"', {"answer": "7"})
    (0.0, 1.0)
    """
    if sample.get("constraints") == []:
        if "answer" not in sample:
            raise KeyError("sample has no 'answer' field")
        return float(completion.strip() == str(sample["answer"]).strip())
    return final_number(completion, sample)


@reward("clean_answer")
def clean_answer(completion: str, sample: dict) -> float:
    """The task reward with a format check: on a plain task row (`constraints: []`) the exact
    answer; on a constrained row, the answer as the completion's only integer.

    `final_number` (last integer) pays `<<Sum>> total 9"equals8""8"8"8` for a sum of 8: runs
    of stray digits up to `max_new_tokens` keep their reward and spread. One integer, the
    right one, is what a fluent constrained answer carries.

    >>> row = {"answer": "8", "constraints": [{"id": "startend:quotation", "kwargs": {}}]}
    >>> clean_answer('"<<Sum>> total 8 Done"', row), clean_answer('<<Sum>> total 9"equals8', row)
    (1.0, 0.0)
    >>> clean_answer('"8"', {"answer": "8", "constraints": []})
    0.0
    """
    if sample.get("constraints") == []:
        return task_answer(completion, sample)
    if "answer" not in sample:
        raise KeyError("sample has no 'answer' field")
    nums = _INT_RE.findall(completion)
    return float(len(nums) == 1 and int(nums[0]) == int(str(sample["answer"]).strip()))


@reward("constraints_if_correct")
def constraints_if_correct(completion: str, sample: dict) -> float:
    """`constraints_met` paid only when `clean_answer` is 1: credit for the instruction only
    with the task answered, so meeting constraints cannot buy back a wrong or garbled sum.

    >>> row = {"answer": "8", "constraints": [{"id": "startend:quotation", "kwargs": {}}]}
    >>> constraints_if_correct('"8"', row), constraints_if_correct('"9"', row), constraints_if_correct('8', row)
    (1.0, 0.0, 0.0)
    """
    return constraints_met(completion, sample) * clean_answer(completion, sample)


def make_align_data(digits: int = 1, terms: int = 2, n_problems: int | None = None, n_eval_problems: int = 20,
                    train_variants: int = 8, eval_variants: int = 5, task_copies: int = 4, seed: int = 0,
                    families: tuple[str, ...] = DEFAULT_FAMILIES, soft_prob: float = 0.0
                    ) -> dict[str, list[dict[str, Any]]]:
    """Rows of the align demo: `base` (every problem, unconstrained: SFT and the task guard),
    `train` (RL: `train_variants` constrained prompts per RL problem, plus `task_copies`
    unconstrained ones with `constraints: []`, so RL keeps rewarding the bare task) and
    `eval` (constrained, on problems held out from RL)."""
    space = (10 ** digits) ** terms
    base = make_addition_rows(n_problems or space, digits=digits, terms=terms, seed=seed)
    rl_problems, held = split_rows(base, n_eval_problems, seed)
    kw = dict(families=families, soft_prob=soft_prob)
    plain = [{**{k: v for k, v in r.items() if k != "hints"}, "id": f"{r['id']}-t{j}", "constraints": [],
              "rubric": ["Answer the question correctly."]} for r in rl_problems for j in range(task_copies)]
    train = make_if_rows(rl_problems, train_variants, seed, **kw) + plain
    random.Random(f"mix:{seed}").shuffle(train)
    return {"base": base, "train": train, "eval": make_if_rows(held, eval_variants, seed + 1, **kw)}
