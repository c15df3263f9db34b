"""How to test a reward plugin: call it directly, then through posttrain's Scorer."""

from pathlib import Path

import pytest

from rewards.scorer import Scorer

SRC = Path(__file__).resolve().parents[1] / "src" / "posttrain_reward_example" / "rewards.py"


def test_plain_calls():
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_rewards", SRC)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.polite("thanks, please", {}) == 1.0
    assert mod.keyword_density(["a b"], [{"keyword": "a"}]) == [0.5]


def test_through_the_scorer():
    specs = [f"{SRC}:polite", {"name": f"{SRC}:keyword_density", "weight": 2.0}, f"{SRC}:slow_echo"]
    with Scorer(specs, workers=1, timeout_s=10) as scorer:
        batch = scorer.score(["please cat", "cat cat"], [{"keyword": "cat"}, {"keyword": "cat"}])
    assert batch.rewards == pytest.approx([1.0 + 1.0 + 1.0, 0.0 + 2.0 + 1.0])
    assert batch.metrics["reward/polite/mean"] == 0.5


def test_a_failure_is_recorded_not_zero():
    with Scorer([f"{SRC}:keyword_density"], workers=1, max_failed_fraction=1.0) as scorer:
        batch = scorer.score(["cat"], [{}])
    assert batch.rewards == [None] and "KeyError" in batch.errors[0]
