"""One place starts Ray, with the run's settings, before any reward service could start
it with defaults (reward services join the running cluster)."""

from __future__ import annotations

import re
from pathlib import Path

from posttrain.core.config import load_config
from posttrain.rl import trainer as rl
from rollouts import cluster

ROOT = Path(__file__).resolve().parents[3]


def test_start_ray_uses_the_run_settings_when_rollouts_or_services_need_it(monkeypatch):
    started = []

    class FakeCluster:
        def __init__(self, address, num_cpus, namespace, worker_niceness=0):
            started.append((address, num_cpus, namespace, worker_niceness))

    monkeypatch.setattr(cluster, "RayCluster", FakeCluster)
    base = ["ray.num_cpus=1", "ray.namespace=mine", "ray.worker_niceness=3"]
    assert rl.start_ray(load_config(rl.Config, None, [*base, "rollout.backend=hf", "reward=exact"])) is None
    assert started == []
    rl.start_ray(load_config(rl.Config, None, [*base, "rollout.backend=hf", "reward=[exact, {name: judge, kwargs: {model: m}}]"]))
    rl.start_ray(load_config(rl.Config, None, [*base, "rollout.backend=vllm"]))
    assert started == [(None, 1, "mine", 3), (None, 1, "mine", 3)]


def test_ray_init_is_called_in_one_place():
    calls = [str(p.relative_to(ROOT)) for d in ("posttrain", "rewards", "rollouts", "hints")
             for p in (ROOT / d).rglob("*.py") if re.search(r"\bray\.init\(", p.read_text())]
    assert calls == ["rollouts/cluster.py"]
