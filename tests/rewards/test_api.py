"""Naming rewards (registry, entry points, files, modules), config validation, doctests."""

import doctest
import importlib
import sys
import textwrap

import pytest

from posttrain.core.config import ConfigError, build_config
from rewards.api import REWARDS, RewardError, reward
from rewards.config import RewardConfig
from rewards.resolve import list_rewards, resolve_reward
from rewards.scorer import Scorer
from tests.rewards.conftest import plugin


@pytest.fixture
def entry_point_package(tmp_path, monkeypatch):
    """A plugin package 'installed' the way pip does: a dist-info with entry_points.txt."""
    pkg = tmp_path / "ep_demo_rewards.py"
    pkg.write_text(textwrap.dedent("""
        def polite(completion, sample):
            return float("please" in completion.lower())
        def broken_import_target(completion, sample):
            return 1.0
    """))
    dist = tmp_path / "ep_demo_rewards-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-demo-rewards\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[posttrain.rewards]\npolite = ep_demo_rewards:polite\nghost = ep_demo_rewards:missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    for name in ("polite", "ghost"):
        REWARDS._entries.pop(name, None)
    sys.modules.pop("ep_demo_rewards", None)


def test_entry_point_rewards_are_found_and_run_in_workers(entry_point_package):
    assert resolve_reward("polite").fn("Please help", {}) == 1.0
    names = {rf.name for rf in list_rewards()}
    assert {"polite", "ghost", "math", "ifeval", "code", "exact"} <= names
    with pytest.raises(RewardError, match="ghost.*failed to load"):
        resolve_reward("ghost")


def test_file_and_module_references():
    assert resolve_reward(plugin("ok")).fn("x", {}) == 1.0
    assert resolve_reward("tests.rewards.faulty_plugins:nan").name == "tests.rewards.faulty_plugins:nan"
    with Scorer(["tests.rewards.faulty_plugins:ok", plugin("batched_len")], workers=1) as s:
        assert s.score(["abc"], [{}]).rewards == [4.0]


@pytest.mark.parametrize("name,match", [
    ("nope", "unknown reward 'nope'; known: .*exact"),
    ("no/such/file.py:fn", "does not exist"),
    ("tests.rewards.faulty_plugins:absent", "has no attribute 'absent'"),
    ("no_such_module_xyz:fn", "cannot import module"),
])
def test_bad_names_say_what_is_wrong(name, match):
    with pytest.raises(RewardError, match=match):
        resolve_reward(name)


def test_duplicate_names_are_refused():
    @reward("dup_demo")
    def a(c, s):
        return 1.0

    with pytest.raises(ValueError, match="already registered"):
        @reward("dup_demo")
        def b(c, s):
            return 2.0
    REWARDS._entries.pop("dup_demo")


def test_bad_kwargs_fail_at_load_time_naming_the_reward():
    with pytest.raises(RewardError, match="reward 'math': bad kwargs.*accepts: answer_key, float_rounding"):
        Scorer([{"name": "math", "kwargs": {"tolerance": 0.1}}])


def test_reward_config_checks_names_and_builds_a_scorer():
    cfg = build_config(RewardConfig, {"components": [{"name": "exact", "weight": 2.0}], "workers": 1})
    with Scorer.from_config(cfg) as s:
        b = s.score(["1"], [{"answer": "1"}])
    assert b.rewards == [2.0]
    with pytest.raises(ConfigError, match="components.*unknown reward 'exactt'"):
        build_config(RewardConfig, {"components": [{"name": "exactt"}]})
    with pytest.raises(ConfigError, match="components"):
        build_config(RewardConfig, {"components": []})


def test_metrics_and_composite_inline():
    specs = [{"name": "exact", "weight": 0.5}, {"name": "length", "kwargs": {"max_length": 2, "buffer": 0}}]
    b = Scorer(specs, inline=True).score(["42", "4242"], [{"answer": "42"}, {"answer": "42"}])
    assert b.rewards == [0.5, -1.0]
    assert b.metrics["reward/exact/mean"] == 0.5 and b.metrics["reward/length/mean"] == -0.5
    assert b.metrics["reward/failed_fraction"] == 0.0 and b.metrics["reward/length/failed"] == 0.0


def test_score_rejects_mismatched_inputs():
    s = Scorer(["exact"], inline=True)
    with pytest.raises(ValueError, match="2 completions but 1 samples"):
        s.score(["a", "b"], [{}])
    assert s.score([], []).rewards == []


@pytest.mark.parametrize("module", [
    "rewards.api", "rewards.scorer", "rewards.config", "rewards.sandbox", "rewards.builtin.exact",
    "rewards.builtin.math_answer", "rewards.builtin.format", "rewards.builtin.ifeval.text",
    "rewards.builtin.ifeval.checks", "rewards.judge",
])
def test_doctests(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_example_plugin_package_entry_points(tmp_path, monkeypatch):
    """examples/posttrain-reward-example, 'installed' via a dist-info built from its pyproject."""
    import os
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[2] / "examples" / "posttrain-reward-example"
    meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    eps = meta["entry-points"]["posttrain.rewards"]
    dist = tmp_path / "posttrain_reward_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    (dist / "entry_points.txt").write_text(
        "[posttrain.rewards]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    paths = [str(tmp_path), str(root / "src")]
    for p in reversed(paths):
        monkeypatch.syspath_prepend(p)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]))
    importlib.invalidate_caches()
    try:
        assert {"polite", "keyword_density", "echo_service"} <= {rf.name for rf in list_rewards()}
        with Scorer(["polite", {"name": "keyword_density", "weight": 2.0}, "echo_service"], workers=2) as s:
            batch = s.score(["please cat", "dog"], [{"keyword": "cat"}, {"keyword": "cat"}])
        assert batch.rewards == pytest.approx([3.0, 1.0]) and batch.errors == [None, None]
    finally:
        for name in eps:
            REWARDS._entries.pop(name, None)


@reward("registered_in_a_test_module")
def _registered_here(completion, sample):
    return 2.5


def test_a_reward_registered_in_a_non_importable_module_runs_in_workers():
    with Scorer(["registered_in_a_test_module"], workers=1) as s:
        b = s.score(["x"], [{}])
    assert b.rewards == [2.5], b.errors


def test_example_reward_config_loads():
    from pathlib import Path

    from posttrain.core.config import read_yaml

    data = read_yaml(Path(__file__).resolve().parents[2] / "examples" / "reward-config.yaml")["reward"]
    cfg = build_config(RewardConfig, data, "examples/reward-config.yaml")
    assert [c.name for c in cfg.components] == ["math", "format", "ifeval", "length"]
    with Scorer.from_config(cfg, workers=1) as s:
        b = s.score(["<think>x</think>\\boxed{4}"], [{"answer": "4", "constraints": [
            {"id": "punctuation:no_comma", "kwargs": {}}]}])
    assert b.rewards == [pytest.approx(2.2)] and b.errors == [None]
