"""A pipeline RL stage on a two-node Ray cluster: rollout actors (vLLM engines) in a
STRICT_SPREAD placement group land on different nodes; nothing is left behind."""

from __future__ import annotations

import json
import os

import pytest
import yaml


@pytest.mark.slow
def test_rl_stage_spreads_rollout_actors_over_two_nodes(tiny_model, tiny_task, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster
    from ray.util import placement_group_table

    from posttrain.pipeline.config import load_pipeline_config
    from posttrain.pipeline.runner import run_pipeline
    from rollouts.actors import RolloutPool

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    seen: list[dict] = []
    close = RolloutPool.close

    def record_then_close(self):
        if self.actors:
            nodes = ray.get([a.__ray_call__.remote(lambda actor: ray.get_runtime_context().get_node_id())
                             for a in self.actors], timeout=60)
            seen.append({"actors": nodes, "bundles": placement_group_table(self.pg)["bundles_to_node_id"]})
        close(self)

    monkeypatch.setattr(RolloutPool, "close", record_then_close)
    recipe = tmp_path / "one_rl.yaml"
    recipe.write_text(yaml.safe_dump({"phase": "pipeline", "stages": {"rl": {
        "kind": "rl", "config": "configs/demo/rl.yaml",
        "values": {"rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 6},
                   "train": {"steps": 2, "checkpoint_every": 0}, "eval": {"every": 0},
                   "data": {"max_eval_rows": 8}, "engine": {"max_model_len": 256, "start_timeout_s": 600}}}}}))
    try:
        cfg = load_pipeline_config(recipe, [
            f"model.path={tiny_model}", f"data.train={tiny_task[0]}", f"data.eval={tiny_task[1]}", "report=false",
            "stages.rl.overrides=[engine.num_actors=2, engine.placement=strict_spread, "
            f"engine.num_cpus_per_actor=1, ray.address={cluster.address}]"])
        summary = run_pipeline(cfg, tmp_path / "run")
        assert summary["stages"][0]["accuracy"] is not None
        assert json.loads((tmp_path / "run" / "rl" / "summary.json").read_text())["steps"] == 2
        assert len(seen) == 1, seen
        actors, bundles = seen[0]["actors"], seen[0]["bundles"]
        assert len(set(actors)) == 2, f"both rollout actors on one node: {actors}"
        assert set(actors) == set(bundles.values())
        assert set(actors) == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert all(pg["state"] == "REMOVED" for pg in placement_group_table().values())
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.parametrize("niceness", [0, 5])
def test_local_cluster_runs_workers_at_the_configured_niceness(niceness):
    """Ray's default (15) would make engine actors yield the CPU to every other process; a local
    cluster runs them at the driver's niceness plus `ray.worker_niceness`, and leaves no RAY_
    variable behind in the driver's environment."""
    ray = pytest.importorskip("ray")
    from rollouts.cluster import NICENESS_ENV, RayCluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = RayCluster(None, num_cpus=1, namespace="test-niceness", worker_niceness=niceness)
    try:
        assert cluster.owned and NICENESS_ENV not in os.environ

        @ray.remote(num_cpus=1)
        def nice_of_worker() -> int:
            return os.nice(0)

        assert ray.get(nice_of_worker.remote(), timeout=120) == min(19, os.nice(0) + niceness)
    finally:
        cluster.close()
