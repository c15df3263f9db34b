import json

import pytest

from hints.hard import Attempt, is_hard
from hints.scheduler import HintScheduler, PolicyParams


def A(level, correct, total=4, step=0):
    return Attempt(step, level, correct, total)


def test_hard_needs_k_all_wrong_unhinted_attempts_and_a_reference():
    assert is_hard([A(0, 0)], k=1)
    assert not is_hard([A(0, 0)], k=2)
    assert is_hard([A(0, 1), A(0, 0), A(0, 0)], k=2)
    assert not is_hard([A(0, 0), A(0, 1)], k=2)
    assert not is_hard([A(0, 0)], k=1, has_reference=False)


def test_hard_looks_only_at_the_trailing_unhinted_run():
    # An old unhinted failure before hints were used does not count after the hint is removed.
    assert not is_hard([A(0, 0), A(1, 4)], k=1)
    assert is_hard([A(0, 0), A(1, 4), A(0, 0)], k=1)


def test_pass_rate_rule_is_configurable():
    hist = [A(0, 1, 8), A(0, 0, 8)]
    assert not is_hard(hist, k=2, rule="zero_pass")
    assert is_hard(hist, k=2, rule="pass_rate_at_most", max_pass_rate=0.1)
    assert not is_hard(hist, k=2, rule="pass_rate_at_most", max_pass_rate=0.05)
    with pytest.raises(KeyError, match="unknown hard-case rule 'nope'"):
        is_hard(hist, k=1, rule="nope")


def test_progressive_raises_while_all_wrong_and_lowers_to_zero():
    s = HintScheduler("progressive", PolicyParams(lower_threshold=0.5))
    # (level used, correct of 4) -> expected next level
    script = [(0, 1, 0), (0, 0, 1), (1, 0, 2), (2, 0, 3), (3, 1, 3), (3, 3, 2), (2, 2, 1), (1, 4, 0), (0, 3, 0)]
    for step, (used, correct, expected) in enumerate(script):
        assert s.observe("p", step, used, correct, 4) == expected, (step, used, correct)
    assert s.level("p") == 0 and s.level("never-seen") == 0


def test_level_is_capped_at_max_and_raise_after_waits():
    s = HintScheduler("progressive", PolicyParams(max_level=3, raise_after=2))
    assert s.observe("p", 0, 0, 0, 4) == 1
    assert s.observe("p", 1, 1, 0, 4) == 1  # one all-wrong group is not enough yet
    assert s.observe("p", 2, 1, 0, 4) == 2
    s.observe("p", 3, 2, 0, 4), s.observe("p", 4, 2, 0, 4)
    assert s.level("p") == 3
    for step in range(5, 9):
        assert s.observe("p", step, 3, 0, 4) == 3


def test_no_reference_answer_is_never_hinted():
    s = HintScheduler()
    assert s.observe("p", 0, 0, 0, 4, has_reference=False) == 0


def test_minimal_level_is_where_a_hard_prompt_starts():
    s = HintScheduler()
    s.set_minimal("p", 3)
    assert s.level("p") == 3
    s.observe("p", 0, 3, 4, 4)
    assert s.level("p") == 2
    s.prompts["q"] = s._state("q")
    s.prompts["q"].minimal_level = 4
    assert s.observe("q", 0, 0, 0, 4) == 4  # becomes hard: starts at its probed level
    s.set_minimal("r", None)  # nothing worked: the highest level
    assert s.level("r") == 5


def test_fixed_policy_and_unknown_names():
    s = HintScheduler("fixed", PolicyParams(fixed_level=5))
    assert s.level("x") == 5 and s.observe("x", 0, 5, 0, 4) == 5
    with pytest.raises(KeyError, match="unknown hint policy 'nope'; known: fixed, progressive"):
        HintScheduler("nope")


def test_state_round_trip_is_json_and_exact(tmp_path):
    s = HintScheduler(max_history=3)
    for step in range(6):
        s.observe("a", step, s.level("a"), 0, 4)
        s.observe("b", step, s.level("b"), 2, 4)
    s.set_minimal("c", 2)
    state = json.loads(json.dumps(s.state_dict()))
    t = HintScheduler(max_history=3)
    t.load_state_dict(state)
    assert t.state_dict() == s.state_dict()
    assert len(t.prompts["a"].history) == 3 and t.level("a") == 5 and t.prompts["c"].minimal_level == 2
    path = s.save(tmp_path / "run" / "hints_state.json")
    u = HintScheduler()
    u.load(path)
    assert u.state_dict()["prompts"] == s.state_dict()["prompts"]


def test_bad_state_files_say_what_to_do(tmp_path):
    s = HintScheduler()
    with pytest.raises(FileNotFoundError, match="hints.init_state"):
        s.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        s.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="prompt 'p'.*bad prompt state"):
        s.load_state_dict({"version": 1, "prompts": {"p": {"level": 9, "history": []}}})
    with pytest.raises(ValueError, match="version 1"):
        s.load_state_dict({"prompts": {}})
