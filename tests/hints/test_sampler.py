"""The hint sampler: one `plan` and one `update` per step; it owns its state."""

import pytest

from hints import Draw, HintSampler, HintsConfig
from hints.sources import HintSourceError
from posttrain.core.config import ConfigError, Section, build_config
from rollouts.types import PromptInput, SamplingSpec
from tests.hints.fakes import ScriptedGenerator, encode, make_rows


def cfg(**kw):
    return HintsConfig(enabled=True, **kw)


def step(hs: HintSampler, gen: ScriptedGenerator, rows, k: int, g: int = 4) -> tuple[list[Draw], dict]:
    """One RL step against a scripted policy: plan -> generate -> score (exact) -> update."""
    draws = hs.plan(rows, k)
    prompts = [PromptInput(d.id, encode(d.prompt_row["prompt"])) for d in draws]
    outs = gen.generate(prompts, SamplingSpec(n=g), step=k)
    groups = [[float(o.text == d.row["answer"]) for o in outs[i * g:(i + 1) * g]] for i, d in enumerate(draws)]
    return draws, hs.update(list(zip(draws, groups)))


def test_plan_update_cycle_raises_a_hard_prompt_and_reports_metrics():
    rows = make_rows(["easy", "hard"])
    hs = HintSampler(cfg(), rows)
    draws = hs.plan(rows, 0)
    assert [d.level for d in draws] == [0, 0] and draws[1].prompt_row["prompt"] == "Question hard?"
    m = hs.update([(draws[0], [1.0, 1.0, 0.0, 1.0]), (draws[1], [0.0, 0.0, None, 0.0])])
    assert m["hints/level_0"] == 2 and m["hints/all_wrong/level_0"] == 0.5
    assert m["hints/mean_correct/level_0"] == 1.5 and m["hints/hinted_prompts"] == 1
    draws = hs.plan(rows, 1)
    assert draws[1].level == 1 and draws[1].prompt_row["prompt"] == "Question hard?\n<L1>"
    assert draws[1].train_row is draws[1].prompt_row  # Keye: train on the prompt it was sampled from
    assert hs.hard_ids() == ["hard"]


def test_plain_train_prompt_trains_on_the_bare_question():
    rows = make_rows(["p"])
    hs = HintSampler(cfg(train_prompt="plain"), rows)
    hs.update([(hs.plan(rows, 0)[0], [0.0, 0.0])])
    [d] = hs.plan(rows, 1)
    assert d.level == 1 and d.prompt_row["prompt"].endswith("<L1>") and d.train_row["prompt"] == "Question p?"


def test_threshold_decides_what_is_correct():
    rows = make_rows(["p"])
    hs = HintSampler(cfg(), rows, threshold=0.5)
    hs.update([(hs.plan(rows, 0)[0], [0.6, 0.0])])
    assert hs.scheduler.level("p") == 0
    hs.update([(hs.plan(rows, 1)[0], [0.4, 0.0])])
    assert hs.scheduler.level("p") == 1


def test_disabled_sampler_passes_rows_through():
    rows = [{"id": "p", "prompt": "Q", "answer": "1"}]  # no hints needed when disabled
    hs = HintSampler(HintsConfig(), rows)
    [d] = hs.plan(rows, 0)
    assert d.prompt_row is rows[0] and d.train_row is rows[0] and d.level == 0 and not d.search
    hs.update([(d, [0.0, 0.0])])
    assert hs.scheduler.level("p") == 0 and hs.eval_rows() == []


def test_enabled_dataset_source_requires_hints_and_names_the_row():
    with pytest.raises(HintSourceError, match="training row 'p'.*5 hints"):
        HintSampler(cfg(), [{"id": "p", "prompt": "Q", "answer": "1"}])


class _Wrapper(Section):
    hints: HintsConfig = HintsConfig()


def test_config_errors_name_the_field_and_fix():
    with pytest.raises(ConfigError, match="hints.template.*exactly the fields"):
        build_config(_Wrapper, {"hints": {"template": "{question}"}})
    with pytest.raises(ConfigError, match="unknown hint policy 'nope'"):
        build_config(_Wrapper, {"hints": {"policy": "nope"}})
    with pytest.raises(ConfigError, match="hints.tempalte.*did you mean 'hints.template'"):
        build_config(_Wrapper, {"hints": {"tempalte": "x"}})
    with pytest.raises(ConfigError, match="use hints.search=linear"):
        build_config(_Wrapper, {"hints": {"search": "bisect"}})


def test_search_probes_every_level_in_one_step_and_sets_the_minimal_level():
    """p is solved from level 3 on: after it turns hard, its next plan probes levels 1-5 at once;
    the update sets minimal level 3, and the prompt trains from there on."""
    rows = make_rows(["p", "q"])
    gen = ScriptedGenerator({"p": 3, "q": 0})
    hs = HintSampler(cfg(search="linear"), rows)
    draws, _ = step(hs, gen, rows, 0)
    assert [(d.id, d.level, d.search) for d in draws] == [("p", 0, False), ("q", 0, False)]
    draws, m = step(hs, gen, rows, 1)
    assert [(d.id, d.level, d.search) for d in draws] == [("p", lv, True) for lv in range(1, 6)] + [("q", 0, False)]
    assert [d.prompt_row["prompt"][-4:] for d in draws[:5]] == [f"<L{lv}>" for lv in range(1, 6)]
    assert hs.scheduler.prompts["p"].minimal_level == 3 and hs.scheduler.level("p") == 3
    assert m["hints/searched_prompts"] == 1 and m["hints/search/found_fraction"] == 1.0
    assert m["hints/search/all_wrong/level_2"] == 1.0 and m["hints/search/all_wrong/level_3"] == 0.0
    assert m["hints/level_0"] == 1  # the probes are not policy draws
    draws, _ = step(hs, gen, rows, 2)
    assert [(d.id, d.level, d.search) for d in draws] == [("p", 3, False), ("q", 0, False)]


def test_search_that_finds_no_level_starts_at_the_top():
    rows = make_rows(["p"])
    gen = ScriptedGenerator({"p": None})
    hs = HintSampler(cfg(search="linear", max_level=4), rows)
    step(hs, gen, rows, 0)
    draws, m = step(hs, gen, rows, 1)
    assert [d.level for d in draws] == [1, 2, 3, 4] and m["hints/search/found_fraction"] == 0.0
    assert hs.scheduler.level("p") == 4 and hs.scheduler.prompts["p"].minimal_level is None


def test_state_carries_across_rounds_and_checkpoints(tmp_path):
    rows = make_rows(["p", "q"])
    hs = HintSampler(cfg(search="linear"), rows)
    hs.update([(hs.plan(rows[:1], 0)[0], [0.0] * 4)])
    path = hs.save(tmp_path / "round1")
    later = HintSampler(cfg(init_state=str(path)), rows)
    assert later.scheduler.level("p") == 1 and later.plan(rows, 0)[0].level == 1
    fresh = HintSampler(cfg(search="linear"), rows)
    fresh.load_state_dict(hs.state_dict())
    assert fresh.state_dict() == hs.state_dict() and fresh.state_dict()["to_probe"] == ["p"]
    assert [d.search for d in fresh.plan(rows[:1], 1)] == [True] * 5  # a pending search survives a resume


def test_hard_prompts_pass_rate_without_hints():
    rows = make_rows(["a", "b", "c"])
    hs = HintSampler(cfg(), rows)
    draws = hs.plan(rows, 0)
    hs.update(list(zip(draws, [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])))
    assert [r["id"] for r in hs.eval_rows()] == ["a", "b"]
    assert hs.eval_metrics({"a": 1.0, "b": 0.0, "c": 1.0}) == {
        "hints/hard_pass_rate_no_hint": 0.5, "hints/hard_prompts": 2.0}
    assert hs.eval_metrics({"c": 1.0}) == {}
