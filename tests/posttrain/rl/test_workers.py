"""Trainer workers (posttrain/rl/workers.py): 2 Ray actors in a gloo group with FSDP2 give the
single-process update, and a worker that dies stops the call with an error naming it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from posttrain.core.config import load_config
from posttrain.rl.config import Config
from posttrain.rl.policy import LocalPolicy
from posttrain.rl.update import UpdateResult, minibatch_indices
from posttrain.rl.workers import PolicyWorker, WorkerFailed, WorkerGroup, merge_results, split_minibatches
from rollouts.types import Rollout


def test_split_minibatches_gives_each_rank_a_slice_and_scales_to_the_global_mean():
    mbs = minibatch_indices(7, 2, torch.Generator().manual_seed(0))  # sizes 4, 3
    shards = split_minibatches(mbs, 2)
    assert sorted(i for idx, *_ in shards for i in idx) == list(range(7))
    for k, mb in enumerate(mbs):
        # scale_r = N b_r / B: the mean over the N workers of scale_r * (local mean) is the minibatch mean
        parts = [(len(local[k]), scales[k]) for _, local, scales, _ in shards]
        assert all(s == pytest.approx(2 * b / len(mb)) for b, s in parts)
        assert sum(b for b, _ in parts) == len(mb)
    assert [real for *_, real in shards] == [4, 3]
    one = split_minibatches([torch.tensor([5])], 2)  # fewer samples than workers: rank 1 runs sample 5 at scale 0
    assert one[1][0] == [5] and one[1][2] == [0.0] and one[1][3] == 0 and one[0][2] == [2.0]


def test_merge_results_weighs_metrics_by_samples():
    a = UpdateResult(metrics={"rl/loss": 1.0, "rl/clip_frac": 1.0, "rl/minibatches_skipped": 0.0}, applied=2)
    b = UpdateResult(metrics={"rl/loss": 4.0, "rl/clip_frac": 4.0, "rl/minibatches_skipped": 0.0}, applied=2,
                     bad_sample_ids=["p#1"])
    m = merge_results([a, b], [3, 1])
    assert m.applied == 2 and m.bad_sample_ids == ["p#1"]
    assert m.metrics["rl/clip_frac"] == pytest.approx(1.75) and m.metrics["rl/loss"] == pytest.approx(2.5)


@pytest.fixture(scope="module")
def ray_cluster():
    from rollouts.cluster import RayCluster

    cluster = RayCluster(None, num_cpus=4, namespace="test-workers")  # logical CPUs: two groups may coexist
    yield cluster
    cluster.close()


def _cfg(tiny_model, *extra: str) -> Config:
    return load_config(Config, None, [f"model.path={tiny_model}", "optim.lr=1e-3", "algo.num_minibatches=2",
                                      "algo.eps_low=0.2", "algo.eps_high=0.2", "train.steps=4",
                                      "trainer.timeout_s=60", *extra])


def _batch(n: int = 7) -> tuple[list[Rollout], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ro = []
    for i in range(n):
        p = torch.randint(3, 200, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
        r = torch.randint(3, 200, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        ro.append(Rollout(f"p{i // 2}", i % 2, p, r, [], "x"))
    return ro, torch.randn(n, generator=g)


def _sums(tensors) -> dict[str, float]:
    return {name: float(t.double().sum()) for name, t in tensors}


def test_workers_refuse_an_image_text_model_before_starting(tiny_task, tmp_path):
    import json

    from posttrain.core.config import ConfigError
    from posttrain.rl import trainer as rl

    vlm = tmp_path / "vlm"
    vlm.mkdir()
    (vlm / "config.json").write_text(json.dumps({"model_type": "idefics3", "vision_config": {}}))
    cfg = load_config(Config, None, [f"model.path={vlm}", f"data.train={tiny_task[0]}", "rollout.backend=hf",
                                     "trainer.strategy=fsdp", "trainer.num_workers=2"])
    with pytest.raises(ConfigError, match="trainer.strategy=fsdp trains text models only"):
        rl.GSPOTrainer(cfg, tmp_path / "run")


class _SlowRank0(PolicyWorker):
    """A worker whose rank 0 sleeps in `nap` (a hang, as the driver sees it); otherwise a PolicyWorker."""

    def nap(self, seconds):
        if self.rank == 0:
            time.sleep(seconds)
        return os.getpid()


@pytest.fixture(scope="module")
def fsdp_group(ray_cluster, tiny_model):
    """One 2-worker FSDP group for the parity test and then the failure test (which kills a worker)."""
    group = WorkerGroup(_cfg(tiny_model, "trainer.strategy=fsdp", "trainer.num_workers=2"), str(tiny_model),
                        "float32", pad_id=0, actor_cls=_SlowRank0)
    yield group
    group.close()


@pytest.mark.parametrize("strategy", ["fsdp", pytest.param("ddp", marks=pytest.mark.slow)])
def test_two_workers_update_equals_the_single_process_update(request, ray_cluster, tiny_model, strategy):
    rollouts, adv = _batch()
    local = LocalPolicy(_cfg(tiny_model), str(tiny_model), "float32", pad_id=0)
    before = {k: v.clone() for k, v in local.state_dict().items()}
    ref = local.update(rollouts, adv, torch.Generator().manual_seed(0))
    group = request.getfixturevalue("fsdp_group") if strategy == "fsdp" else WorkerGroup(
        _cfg(tiny_model, f"trainer.strategy={strategy}", "trainer.num_workers=2"), str(tiny_model), "float32", pad_id=0)
    try:
        got = group.update(rollouts, adv, torch.Generator().manual_seed(0))
        params = group.state_dict()
        streamed = group.push_weights(_sums)  # what a streamed sender sees, one full tensor at a time
    finally:
        if strategy != "fsdp":
            group.close()
    assert got.applied == ref.applied == 2
    want = local.state_dict()
    assert set(params) == set(want)
    moved = max(float((want[k] - before[k]).abs().max()) for k in want)
    assert moved > 1e-4  # the update is large against the tolerance: the test can fail
    worst = max(float((params[k] - want[k]).abs().max()) for k in want)
    assert worst < 1e-5, worst
    assert got.metrics["rl/grad_norm"] == pytest.approx(ref.metrics["rl/grad_norm"], rel=1e-4)
    assert got.metrics["rl/loss"] == pytest.approx(ref.metrics["rl/loss"], abs=1e-5)
    assert streamed == {k: pytest.approx(float(v.double().sum())) for k, v in params.items()}


def test_rank0_streams_the_sharded_weights_in_buckets_that_an_engine_loads_and_verifies(fsdp_group):
    """The streamed sync from a 2-worker FSDP group (no full state dict on any process): an engine
    stand-in (rank 1 of the weight group, in a thread here) receives every bucket; what it loads is
    the trainer's weights, its checksums match rank 0's, and a corrupted bucket fails naming it."""
    import ray

    from rollouts.weight_sync import (TensorSpec, WeightSyncError, client_store, open_group, plan_buckets,
                                      receive_buckets, server_store, verify)

    layout, aliases = fsdp_group.weight_layout()
    assert aliases == {"model.embed_tokens.weight": ["lm_head.weight"]}  # the tied head travels once
    plan = plan_buckets([TensorSpec(n, d, tuple(s)) for n, d, s in layout], 16 * 1024)
    assert len(plan) > 2
    host = ray.util.get_node_ip_address()
    for attempt, corrupt in enumerate((None, 1)):
        store = server_store(host, 2, 60)
        rdv = {"host": host, "port": store.port, "world": 2, "backend": "gloo", "timeout_s": 60}
        loaded, got = {}, {}

        def engine(corrupt=corrupt, loaded=loaded, got=got):
            group = open_group("gloo", client_store(host, store.port, 2, 60), 1, 2, 60)
            got["sums"] = receive_buckets(plan, group, lambda it: loaded.update((k, v.clone()) for k, v in it), 60,
                                          corrupt_bucket=corrupt, aliases=aliases)

        t = threading.Thread(target=engine)
        t.start()
        sent = fsdp_group.send_weights(rdv, plan, 60, "cpu")
        t.join(60)
        want = fsdp_group.state_dict()
        assert set(loaded) == set(want)
        if corrupt is None:
            assert all(torch.equal(loaded[k], want[k]) for k in want)
            verify(sent, {"rollout engine 0": got["sums"]})
        else:
            with pytest.raises(WeightSyncError, match=r"rollout engine 0 loaded bucket\(s\) \[1\]"):
                verify(sent, {"rollout engine 0": got["sums"]})


def test_two_worker_rl_run_checkpoints_shards_resumes_and_saves_one_hf_folder(ray_cluster, tiny_model, tiny_task,
                                                                             tmp_path):
    """`posttrain rl` with trainer.num_workers=2 (fsdp) on the in-process generator: the loop runs, each
    checkpoint holds DCP shards, --resume (here on another number of workers) continues at the next
    step, final/ is one HF folder."""
    import json

    from transformers import AutoModelForCausalLM

    from posttrain.rl import trainer as rl
    from tests.posttrain.rl.test_trainer import _overrides

    ov = _overrides(tiny_model, tiny_task, steps=2, **{"trainer.strategy": "fsdp", "trainer.num_workers": 2,
                                                        "trainer.timeout_s": 120, "train.checkpoint_every": 1,
                                                        "eval.every": 0})
    first = rl.run(load_config(Config, None, ov), tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    latest = ckpts / (ckpts / "latest").read_text().strip()
    assert first["steps"] == 2 and latest.name.startswith("step-000002")
    assert (latest / "shards" / ".metadata").is_file() and not (latest / "model").exists()
    # DCP reshards on load: the 2 workers' checkpoint resumes on 1 worker
    resumed = rl.run(load_config(Config, tmp_path / "run" / "config.yaml", ["train.steps=3", "trainer.num_workers=1"]),
                     tmp_path / "run", resume=True)
    assert resumed["steps"] == 3
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "reward/mean" in l] == [1, 2, 3]
    assert any(l["rl/steps_applied"] > 0 for l in lines if "reward/mean" in l)
    final = AutoModelForCausalLM.from_pretrained(resumed["final_model"])
    assert final.config.architectures == ["Qwen2ForCausalLM"]
    start = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    weights = final.state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert any(not torch.equal(weights[k], start[k]) for k in start)  # the trained weights, not the start


def test_a_hung_or_killed_worker_stops_the_call_with_its_rank_pid_and_node(fsdp_group):
    group = fsdp_group
    # the group is spent afterwards (a worker is killed): closed here, before the next test needs the CPUs
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerFailed, match=r"rank 0 \(pid \d+, node [\d.]+\) did not answer nap within"):
            group.call("nap", 6.0, timeout_s=1.5)
        assert time.monotonic() - t0 < 5
        victim = group.info[1]["pid"]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(WorkerFailed, match=rf"rank 1 \(pid {victim}, node [\d.]+\) died.*--resume"):
            group.update(*_batch(), torch.Generator().manual_seed(0))
        assert time.monotonic() - t0 < 30  # the dead worker is seen at once, not after trainer.timeout_s
    finally:
        group.close()


@pytest.mark.slow
def test_sigkill_of_a_worker_mid_run_stops_the_run_and_resume_finishes_it(tiny_model, tiny_task, tmp_path):
    """`posttrain rl` with 2 FSDP workers: SIGKILL one worker after step 2's checkpoint; the command
    exits non-zero within a bounded time with an error naming the worker; --resume finishes the run."""
    import json

    import psutil

    from tests.posttrain.rl.test_trainer import _overrides, _run_cli

    ov = _overrides(tiny_model, tiny_task, steps=5, **{"trainer.strategy": "fsdp", "trainer.num_workers": 2,
                                                        "trainer.timeout_s": 120, "train.checkpoint_every": 1,
                                                        "eval.every": 0, "ray.num_cpus": 2})
    run = tmp_path / "run"
    victim = _run_cli([*ov, "--run-dir", str(run)])
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not (latest.exists() and latest.read_text().strip() >= "step-000002"):
        assert time.time() < deadline and victim.poll() is None, victim.stdout.read().decode()[-2000:]
        time.sleep(0.1)
    workers = [p for p in psutil.Process(victim.pid).children(recursive=True)
               if "PolicyWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2
    workers[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    assert victim.wait(timeout=300) != 0
    out = victim.stdout.read().decode()
    assert time.time() - t0 < 150, "the run must stop within trainer.timeout_s"
    assert "trainer worker rank" in out and f"pid {workers[1].pid}" in out, out[-3000:]
    killed_at = int(latest.read_text().strip().split("-")[1].split(".")[0])
    resumed = _run_cli(["--resume", str(run)])
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read().decode()[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["final_model"]
    # the sharded checkpoint restored model, optimizer, schedule, RNG and data position: the steps after
    # the kill match an uninterrupted run
    ref = _run_cli([*ov, "--run-dir", str(tmp_path / "ref")])
    assert ref.wait(timeout=600) == 0, ref.stdout.read().decode()[-3000:]

    def by_step(d):
        return {l["step"]: l for l in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
                if "reward/mean" in l}

    a, b = by_step(tmp_path / "ref"), by_step(run)
    for step in range(killed_at + 1, 6):
        assert b[step]["reward/mean"] == pytest.approx(a[step]["reward/mean"], abs=1e-9), step
        if "rl/loss" in a[step]:
            assert b[step]["rl/loss"] == pytest.approx(a[step]["rl/loss"], abs=1e-5), step


@pytest.mark.slow  # ~1 min (an engine start); the CI step with 2 workers uses the in-process generator
@pytest.mark.engine
def test_two_fsdp_workers_sync_a_vllm_engine(tiny_model, tiny_task, tmp_path):
    """The real path: 2 FSDP workers train, a vLLM engine in a Ray actor samples and receives the
    weights streamed from the workers' rank 0 every step (its weight version follows the steps)."""
    import ray

    from posttrain.rl import trainer as rl

    ov = [f"model.path={tiny_model}", f"data.train={tiny_task[0]}", f"data.eval={tiny_task[1]}",
          "data.max_eval_rows=8", "rollout.backend=vllm", "rollout.prompts_per_step=4", "rollout.group_size=4",
          "rollout.max_new_tokens=6", "train.steps=2", "eval.every=0", "optim.lr=1e-3", "algo.eps_low=0.2",
          "algo.eps_high=0.2", "engine.max_model_len=256", "ray.num_cpus=3", "trainer.strategy=fsdp",
          "trainer.num_workers=2", "trainer.timeout_s=300", "reward=exact", "rollout.weight_sync=stream"]
    trainer = rl.GSPOTrainer(load_config(Config, None, ov), tmp_path / "run")
    try:
        summary = trainer.fit()
        engines = ray.get([a.state.remote() for a in trainer.generator.actors])
        pool = trainer.generator
        streamed = (pool.last_sync["sync/streamed"], pool._source is trainer.policy, pool._last_state, pool.engine_pids)
    finally:
        trainer.close()
    assert [version for _, version in engines] == [2] and summary["steps"] == 2
    # sent by rank 0 of the workers, verified bucket by bucket; the driver never held the weights
    assert streamed[:3] == (1.0, True, None) and streamed[3] == [[pool.info[0]["pid"]]]


@pytest.mark.slow
def test_two_fsdp_workers_train_like_the_single_process(tiny_model, tiny_task, tmp_path):
    """The same run (seed, prompts, in-process generator) with 2 FSDP workers and in one process:
    the same rewards step by step (the sampled tokens agree while the weights agree to float noise)
    and the same losses, so the 2-worker run learns what the single process learns."""
    import json

    from posttrain.rl import trainer as rl
    from tests.posttrain.rl.test_trainer import _overrides

    def run(name: str, *extra: str) -> list[dict]:
        ov = _overrides(tiny_model, tiny_task, steps=5, **{"eval.every": 0, "ray.num_cpus": 4})
        rl.run(load_config(Config, None, [*ov, *extra]), tmp_path / name)
        lines = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [l for l in lines if "reward/mean" in l]

    single = run("single")
    fsdp = run("fsdp", "trainer.strategy=fsdp", "trainer.num_workers=2")
    assert [l["step"] for l in fsdp] == [1, 2, 3, 4, 5]
    assert [l["reward/mean"] for l in fsdp] == pytest.approx([l["reward/mean"] for l in single], abs=1e-9)
    assert any(l["rl/steps_applied"] > 0 for l in single)
    for a, b in zip(single, fsdp):
        if "rl/loss" in a:
            assert b["rl/loss"] == pytest.approx(a["rl/loss"], abs=1e-5)


@pytest.mark.slow
def test_workers_spread_over_two_ray_nodes_give_the_same_update(tiny_model):
    """trainer.placement=strict_spread on a two-node local Ray cluster (head + 1 node, 1 CPU each):
    one worker per node, and the update still equals the single-process one."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace="test-spread")
    try:
        rollouts, adv = _batch()
        local = LocalPolicy(_cfg(tiny_model), str(tiny_model), "float32", pad_id=0)
        local.update(rollouts, adv, torch.Generator().manual_seed(0))
        group = WorkerGroup(_cfg(tiny_model, "trainer.strategy=fsdp", "trainer.num_workers=2",
                                 "trainer.placement=strict_spread"), str(tiny_model), "float32", pad_id=0)
        try:
            placed = ray.get([w.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                              for w in group.workers])
            group.update(rollouts, adv, torch.Generator().manual_seed(0))
            params = group.state_dict()
        finally:
            group.close()
        assert len(set(placed)) == 2  # one worker on each node
        want = local.state_dict()
        assert max(float((params[k] - want[k]).abs().max()) for k in want) < 1e-5
    finally:
        ray.shutdown()
        cluster.shutdown()
