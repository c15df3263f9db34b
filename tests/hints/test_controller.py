import pytest

from hints import HintController, HintsConfig
from hints.sources import HintSourceError
from posttrain.config import ConfigError, build_config

from tests.hints.fakes import ScriptedGenerator, encode, exact_judge, make_rows


def cfg(**kw):
    return HintsConfig(enabled=True, **kw)


def test_prepare_observe_metrics_cycle():
    rows = make_rows(["easy", "hard"])
    hc = HintController(cfg(), rows)
    batch = hc.prepare(rows, step=0)
    assert [lv for _, lv in batch] == [0, 0] and batch[1][0]["prompt"] == "Question hard?"
    hc.observe("easy", 0, [1.0, 1.0, 0.0, 1.0], step=0)
    assert hc.observe("hard", 0, [0.0, 0.0, None, 0.0], step=0) == 1
    m = hc.metrics()
    assert m["hints/level_0"] == 2 and m["hints/all_wrong/level_0"] == 0.5
    assert m["hints/mean_correct/level_0"] == 1.5 and m["hints/hinted_prompts"] == 1
    batch = hc.prepare(rows, step=1)
    assert batch[1] == ({**rows[1], "prompt": "Question hard?\n<L1>", "hint_level": 1}, 1)
    assert hc.metrics()["hints/level_1"] == 1 and hc.hard_ids() == ["hard"]


def test_correct_threshold_is_configurable():
    hc = HintController(cfg(correct_threshold=0.5), make_rows(["p"]))
    assert hc.observe("p", 0, [0.6, 0.0]) == 0
    assert hc.observe("p", 0, [0.4, 0.0]) == 1


def test_disabled_controller_passes_rows_through():
    rows = [{"id": "p", "prompt": "Q", "answer": "1"}]  # no hints needed when disabled
    hc = HintController(HintsConfig(), rows)
    assert hc.prepare(rows, 0) == [(rows[0], 0)]
    assert hc.observe("p", 0, [0.0, 0.0]) == 0


def test_enabled_dataset_source_requires_hints_and_names_the_row():
    with pytest.raises(HintSourceError, match="training row 'p'.*5 hints"):
        HintController(cfg(), [{"id": "p", "prompt": "Q", "answer": "1"}])


def test_config_errors_name_the_field_and_fix():
    with pytest.raises(ConfigError, match="hints.template.*exactly the fields"):
        build_config(_Wrapper, {"hints": {"template": "{question}"}})
    with pytest.raises(ConfigError, match="unknown hint policy 'nope'"):
        build_config(_Wrapper, {"hints": {"policy": "nope"}})
    with pytest.raises(ConfigError, match="hints.tempalte.*did you mean 'hints.template'"):
        build_config(_Wrapper, {"hints": {"tempalte": "x"}})


from posttrain.config import Section  # noqa: E402


class _Wrapper(Section):
    hints: HintsConfig = HintsConfig()


def test_search_probes_newly_hard_prompts_for_their_minimal_level():
    rows = make_rows(["p"])
    gen = ScriptedGenerator({"p": 3})
    hc = HintController(cfg(search="bisect"), rows, generator=gen, encode=encode, is_correct=exact_judge)
    hc.observe("p", 0, [0.0, 0.0], step=0)
    [(row, level)] = hc.prepare(rows, step=1)
    assert level == 3 and row["prompt"].endswith("<L3>")
    assert hc.scheduler.prompts["p"].minimal_level == 3


def test_state_carries_across_rounds_via_init_state(tmp_path):
    rows = make_rows(["p", "q"])
    hc = HintController(cfg(), rows)
    hc.observe("p", 0, [0.0] * 4)
    hc.observe("p", 1, [0.0] * 4)
    path = hc.save(tmp_path / "round1")
    later = HintController(cfg(init_state=str(path)), rows)
    assert later.scheduler.level("p") == 2 and later.prepare(rows, 0)[0][1] == 2
    again = HintController(cfg(), rows)
    again.load(tmp_path / "round1")
    assert again.state_dict() == hc.state_dict()
    fresh = HintController(cfg(), rows)
    fresh.load_state_dict(hc.state_dict())
    assert fresh.state_dict() == hc.state_dict()


def test_search_without_a_generator_says_how_to_attach_one():
    rows = make_rows(["p"])
    hc = HintController(cfg(search="linear"), rows)
    hc.observe("p", 0, [0.0, 0.0], step=0)
    with pytest.raises(HintSourceError, match="HintController.attach"):
        hc.prepare(rows, step=1)
    hc.attach(ScriptedGenerator({"p": 2}), encode, exact_judge)
    assert hc.prepare(rows, step=1)[0][1] == 2


def test_hard_prompts_pass_rate_without_hints():
    rows = make_rows(["a", "b", "c"])
    hc = HintController(cfg(), rows)
    hc.observe("a", 0, [0.0, 0.0])
    hc.observe("b", 0, [0.0, 0.0])
    hc.observe("c", 0, [1.0, 0.0])
    assert hc.eval_metrics({"a": 1.0, "b": 0.0, "c": 1.0}) == {
        "hints/hard_pass_rate_no_hint": 0.5, "hints/hard_prompts": 2.0}
    assert hc.eval_metrics({"c": 1.0}) == {}
