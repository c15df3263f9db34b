import json

import pytest

from hints.probe import probe_table
from hints.sources import DatasetHints, HintSourceError, TeacherHints
from rollouts.types import SamplingSpec
from tests.hints.fakes import ScriptedGenerator, encode, exact_judge, make_rows

SCRIPT = {"p0": 0, "p1": 1, "p2": 3, "p3": 5, "p4": None}


def test_probe_table_all_wrong_falls_with_level():
    gen = ScriptedGenerator(SCRIPT, correct_of_g=3)
    table = probe_table(gen, encode, make_rows(SCRIPT), DatasetHints(), SamplingSpec(n=4), exact_judge)
    assert [r["level"] for r in table] == [0, 1, 2, 3, 4, 5]
    assert [r["all_wrong"] for r in table] == [0.8, 0.6, 0.6, 0.4, 0.4, 0.2]
    assert table[0]["mean_correct"] == pytest.approx(3 * 1 / 5) and table[5]["mean_correct"] == pytest.approx(3 * 4 / 5)


def test_generator_that_drops_rollouts_is_an_error():
    class Short(ScriptedGenerator):
        def generate(self, prompts, sampling, step=0):
            return super().generate(prompts, sampling, step)[:-1]

    with pytest.raises(RuntimeError, match="len\\(prompts\\) \\* n"):
        probe_table(Short(SCRIPT), encode, make_rows(["p1"]), DatasetHints(), SamplingSpec(n=2), exact_judge)


def test_dataset_source_names_the_row_without_hints():
    with pytest.raises(HintSourceError, match="row 'x'.*hints.source=teacher"):
        DatasetHints().hints([{"id": "x", "prompt": "Q", "answer": "1"}], 2)
    assert DatasetHints().hints(make_rows(["a"]), 4) == ["<L4>"]


class Teacher:
    """Answers with a hint naming the teacher prompt's level template."""

    weight_version = 0

    def __init__(self):
        self.calls = 0
        self.prompts = []

    def generate(self, prompts, sampling, step=0):
        from rollouts.types import Rollout
        self.calls += 1
        out = []
        for p in prompts:
            text = bytes(p.token_ids).decode()
            self.prompts.append(text)
            out.append(Rollout(p.prompt_id, 0, [], [], [], f" hint for {p.prompt_id}: {text.split()[0]} "))
        return out


def test_teacher_hints_are_generated_once_and_cached(tmp_path):
    cache = tmp_path / "cache.jsonl"
    rows = make_rows(["a", "b"])
    t = Teacher()
    src = TeacherHints(t, encode, "teacher-A", cache)
    first = src.hints(rows, 2)
    assert first == ["hint for a: Name", "hint for b: Name"] and t.calls == 1
    assert src.hints(rows, 2) == first and t.calls == 1  # same process: cached
    assert "Question a?" in t.prompts[0]
    t2 = Teacher()
    again = TeacherHints(t2, encode, "teacher-A", cache)  # a new run: read from disk
    assert again.hints(rows[::-1], 2) == first[::-1] and t2.calls == 0
    other = TeacherHints(t2, encode, "teacher-B", cache)  # the teacher is part of the key
    other.hints(rows, 2)
    assert t2.calls == 1
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert {(r["prompt_id"], r["level"], r["teacher"]) for r in lines} == {
        ("a", 2, "teacher-A"), ("b", 2, "teacher-A"), ("a", 2, "teacher-B"), ("b", 2, "teacher-B")}
    assert len(lines) == 4
    assert "Reference answer: 42" in TeacherHints(Teacher(), encode, "t", cache)._teacher_prompt(rows[0], 5)


def test_teacher_cache_tolerates_a_torn_last_line(tmp_path):
    cache = tmp_path / "cache.jsonl"
    cache.write_text(json.dumps({"prompt_id": "a", "level": 1, "teacher": "T", "hint": "h"}) + "\n{\"prompt_")
    t = Teacher()
    assert TeacherHints(t, encode, "T", cache).hints(make_rows(["a"]), 1) == ["h"] and t.calls == 0
    cache.write_text("garbage\n" + json.dumps({"prompt_id": "a", "level": 1, "teacher": "T", "hint": "h"}) + "\n")
    with pytest.raises(HintSourceError, match="cache.jsonl:1"):
        TeacherHints(t, encode, "T", cache)
