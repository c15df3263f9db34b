"""Core binding is computed inside each engine actor from its own node's cores, split
among the pool's actors on that node (never from the driver's core count)."""

from __future__ import annotations

import os

import pytest
import torch

from rollouts import actors


def test_split_cpus_over_any_core_set():
    assert actors.split_cpus(2, 2) == ["0", "1"]
    assert actors.split_cpus(1, 8) == ["0-7"]
    assert actors.split_cpus(2, [4, 5, 6, 7]) == ["4-5", "6-7"]
    assert actors.split_cpus(2, [0, 2, 4, 6]) == ["0,2", "4,6"]
    assert actors.split_cpus(3, 2) == [None, None, None]


@pytest.mark.parametrize("index,expect", [(0, "0-3"), (1, "4-7"), (2, "0-7")])
def test_each_actor_splits_its_own_nodes_cores(monkeypatch, index, expect):
    import ray.util

    # bundles 0 and 1 on node A, bundle 2 alone on node B; this process sees 8 cores
    monkeypatch.setattr(ray.util, "get_current_placement_group", lambda: object())
    monkeypatch.setattr(ray.util, "placement_group_table",
                        lambda pg: {"bundles_to_node_id": {0: "A", 1: "A", 2: "B"}})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # a driver-sized count must not matter
    assert actors.node_cpu_binding(index) == expect


def test_the_pool_no_longer_binds_from_the_driver():
    assert not hasattr(actors.RolloutPool, "_cpu_binding")


def test_a_one_cpu_ray_actor_computes_on_its_whole_binding():
    """Ray starts a num_cpus=1 actor with OMP_NUM_THREADS=1, and torch sizes its pool from that;
    the engine's binding must resize it, or vLLM decodes on one thread (what it did before)."""
    import ray

    @ray.remote(num_cpus=1)
    class Probe:
        def threads(self, cpus):
            before = torch.get_num_threads()
            actors.bind_engine_threads(cpus)
            return before, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]

    ray.init(num_cpus=2, include_dashboard=False, namespace="cpu-binding-test")
    try:
        before, after, env = ray.get(Probe.remote().threads.remote("0-1"))
    finally:
        ray.shutdown()
    assert before == 1  # Ray's default for a one-CPU worker: what the engine inherited
    assert (after, env) == (2, "2")
