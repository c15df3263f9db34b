"""Peak RSS of each FSDP trainer worker, without an engine: where a worker's memory goes.

    python -m benchmarks.fsdp_probe 494m     # a model folder built by benchmarks/scale.py

Two PolicyWorker actors (FSDP2 over gloo) load the model (rank 0 from disk, rank 1 on meta),
take two GSPO updates of 16 random samples (30 prompt + 8 response tokens), then stream their
weights from rank 0 to a receiver thread in this process (the engine's side, loading nothing).
After each call every worker reports (RSS, RSS after malloc_trim, ru_maxrss), MiB: the resident
set, what of it is live, and the peak so far. Not part of `make bench`: the cost-growth runs
(benchmarks/scale.py) measure the same workers beside a vLLM engine; this probe fits where the
engine does not (about 12 GiB at 494M).
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


class ProbeWorker(PolicyWorker):
    def mem(self) -> tuple[int, int, int]:
        gc.collect()
        rss = psutil.Process().memory_info().rss >> 20
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return rss, psutil.Process().memory_info().rss >> 20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def main(size: str) -> None:
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
        g = torch.Generator().manual_seed(1)
        rollouts = [Rollout(f"p{i // 4}", i % 4, torch.randint(3, 400, (30,), generator=g).tolist(),
                            torch.randint(3, 400, (8,), generator=g).tolist(), [-1.0] * 8, "x") for i in range(16)]
        adv = torch.randn(16, generator=g)
        for k in range(2):
            t0 = time.time()
            group.update(rollouts, adv, torch.Generator().manual_seed(k))
            print("update", k, round(time.time() - t0, 1), group.call("mem"), flush=True)
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
    main(sys.argv[1] if len(sys.argv) > 1 else "124m")
