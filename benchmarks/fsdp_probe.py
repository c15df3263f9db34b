"""Peak RSS of each FSDP trainer worker (or of the single-process trainer), and where in the step it is.

    python -m benchmarks.fsdp_probe 494m            # 2 FSDP workers, a model folder built by benchmarks/scale.py
    python -m benchmarks.fsdp_probe 494m --single   # the same update in this process (LocalPolicy)

Two PolicyWorker actors (FSDP2 over gloo) load the model (rank 0 from disk, rank 1 on meta), take two
GSPO updates of 16 random samples (30 prompt + 8 response tokens), then stream their weights from
rank 0 to a receiver thread in this process (the engine's side, loading nothing). After each call
every worker reports (RSS, RSS after malloc_trim, ru_maxrss) in MiB: the resident set, what of it is
live, and the peak so far; after each update also the update's peak and the phase it happened in
(RSS sampled every millisecond; the phase is the last module hook that fired: `F>name` forward
entered, `B<name` backward left, `opt>` optimizer step). Not part of `make bench`: the cost-growth
runs (benchmarks/scale.py) measure the same workers beside a vLLM engine; this probe fits where the
engine does not (about 12 GiB at 494M) and says where a peak comes from.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

from posttrain.core.config import load_config
from posttrain.rl.config import Config
from posttrain.rl.workers import PolicyWorker, WorkerGroup
from rollouts.types import Rollout

MODELS = Path("runs/bench/scale/models")


def mem() -> tuple[int, int, int]:
    gc.collect()
    rss = psutil.Process().memory_info().rss >> 20
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss, psutil.Process().memory_info().rss >> 20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


class PhaseSampler:
    """The highest RSS seen and the phase (last module hook or optimizer hook) it was seen in."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.phase, self.peak = "idle", (0, "idle")
        for name, module in model.named_modules():
            if name.count(".") <= 2:  # the root, model.layers.N, embed_tokens, norm, lm_head
                module.register_forward_pre_hook(self._tag(f"F>{name}"))
                module.register_full_backward_hook(self._tag(f"B<{name}"))
        optimizer.register_step_pre_hook(self._tag("opt>"))
        optimizer.register_step_post_hook(self._tag("opt<"))
        threading.Thread(target=self._sample, daemon=True).start()

    def _tag(self, phase: str):
        def hook(*_a, **_k) -> None:
            self.phase = phase
        return hook

    def _sample(self) -> None:
        proc = psutil.Process()
        while True:
            rss = proc.memory_info().rss >> 20
            if rss > self.peak[0]:
                self.peak = (rss, self.phase)
            time.sleep(0.001)

    def take(self) -> tuple[int, str]:
        peak, self.peak = self.peak, (0, "idle")
        return peak


class ProbeWorker(PolicyWorker):
    def mem(self) -> tuple[int, int, int]:
        return mem()

    def arm(self) -> None:
        self.sampler = PhaseSampler(self.model, self.optimizer)

    def step_peak(self) -> tuple[int, str]:
        return self.sampler.take()


def batch() -> tuple[list[Rollout], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    rollouts = [Rollout(f"p{i // 4}", i % 4, torch.randint(3, 400, (30,), generator=g).tolist(),
                        torch.randint(3, 400, (8,), generator=g).tolist(), [-1.0] * 8, "x") for i in range(16)]
    return rollouts, torch.randn(16, generator=g)


def single(size: str) -> None:
    from posttrain.rl.policy import LocalPolicy

    model = str(MODELS / size)
    cfg = load_config(Config, None, [f"model.path={model}", "algo.num_minibatches=1", "train.steps=2"])
    policy = LocalPolicy(cfg, model, "float32", pad_id=0)
    sampler = PhaseSampler(policy.model, policy.optimizer)
    print("setup", mem(), flush=True)
    rollouts, adv = batch()
    for k in range(2):
        t0 = time.time()
        policy.update(rollouts, adv, torch.Generator().manual_seed(k))
        print("update", k, round(time.time() - t0, 1), "peak", sampler.take(), "mem", mem(), flush=True)


def sharded(size: str) -> None:
    import ray

    from rollouts.cluster import RayCluster
    from rollouts.weight_sync import TensorSpec, client_store, open_group, plan_buckets, receive_buckets, server_store

    model = str(MODELS / size)
    cluster = RayCluster(None, num_cpus=4, namespace="fsdp-probe")
    cfg = load_config(Config, None, [f"model.path={model}", "algo.num_minibatches=1", "train.steps=2",
                                     "trainer.timeout_s=1800", "trainer.strategy=fsdp", "trainer.num_workers=2"])
    group = WorkerGroup(cfg, model, "float32", pad_id=0, actor_cls=ProbeWorker)
    try:
        print("setup", group.call("mem"), flush=True)
        group.call("arm")
        rollouts, adv = batch()
        for k in range(2):
            t0 = time.time()
            group.update(rollouts, adv, torch.Generator().manual_seed(k))
            print("update", k, round(time.time() - t0, 1), "peak", group.call("step_peak"), "mem", group.call("mem"),
                  flush=True)
        layout, _ = group.weight_layout()
        plan = plan_buckets([TensorSpec(n, d, tuple(s)) for n, d, s in layout], 256 * 2**20)
        host = ray.util.get_node_ip_address()
        store = server_store(host, 2, 1800)
        rdv = {"host": host, "port": store.port, "world": 2, "backend": "gloo", "timeout_s": 1800}
        engine = threading.Thread(target=lambda: receive_buckets(
            plan, open_group("gloo", client_store(host, store.port, 2, 1800), 1, 2, 1800),
            lambda it: [None for _ in it], 1800))
        engine.start()
        t0 = time.time()
        group.send_weights(rdv, plan, 1800, "cpu")
        engine.join()
        print("send", round(time.time() - t0, 1), group.call("mem"), flush=True)
    finally:
        group.close()
        cluster.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    (single if "--single" in sys.argv else sharded)(args[0] if args else "124m")
