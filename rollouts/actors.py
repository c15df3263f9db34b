"""A pool of Ray actors, each holding a vLLM engine, behind the `Generator` protocol.

Work units are keyed (step, prompt_id, sample_idx) and gathered with deadlines. A dead
actor's unfinished units are resubmitted once Ray restarts it and it holds the current
weights; results stamped with a stale weight version are rejected and redone;
duplicates are dropped by key. Weight sync is versioned and bounded by a timeout: an
engine that hangs or fails is restarted and re-synced, or the sync raises.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import torch

from posttrain.core.devices import resolve_dtype
from posttrain.core.progress import peak_rss_mb
from rollouts.cluster import RayCluster
from rollouts.types import PromptInput, Rollout, SamplingSpec
from rollouts.vllm_engine import VLLMEngine, count_cpus, engine_env
from rollouts.weight_sync import (TensorSpec, WeightSyncError, client_store, open_group, plan_buckets,
                                  receive_buckets, send_buckets, server_store, split_aliases, tensor_specs, verify)

log = logging.getLogger(__name__)

Unit = tuple  # ((step, prompt_id, sample_idx), prompt token ids[, Media]): Media only for image prompts


class RolloutTimeout(TimeoutError):
    pass


# rollout.weight_sync=auto streams from this many bytes up and uses the object store below. Measured
# here (docs/benchmarks.md, section 7): at 1M and 27M parameters the two paths traded places between
# runs (fixed costs dominate); from 124M (494 MB) up the stream was faster in every run
AUTO_STREAM_BYTES = 256 * 2**20


class _EngineActor:
    """The actor body (wrapped with ray.remote at pool start)."""

    def __init__(self, model: str, engine_kwargs: dict[str, Any]):
        engine_kwargs = dict(engine_kwargs)
        index = engine_kwargs.pop("bind_index", None)
        if index is not None:  # engine.cpu_threads=all: a share of this node's cores, set before vLLM starts
            bind_engine_threads(node_cpu_binding(index))
        self.engine = VLLMEngine(model, **engine_kwargs)
        self.incarnation = f"{os.getpid()}-{time.time_ns()}"  # tells a restarted actor from the old one

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "version": self.engine.weight_version, "startup_s": self.engine.startup_s,
                "incarnation": self.incarnation}

    def state(self) -> tuple[str, int]:
        return self.incarnation, self.engine.weight_version

    def generate(self, units: list[Unit], temperature: float, top_p: float, max_tokens: int,
                 base_seed: int, ignore_eos: bool = False) -> list[Rollout]:
        return self.engine.generate(units, temperature, top_p, max_tokens, base_seed, ignore_eos)

    def load_weights(self, state_dict: dict[str, Any], version: int) -> int:
        return self.engine.load_weights(state_dict, version)

    def sequence_logprobs(self, sequences: list[list[int]], start: int) -> list[list[float]]:
        return self.engine.sequence_logprobs(sequences, start)

    # streamed weight sync (rollouts/weight_sync.py): this actor is rank `rank` of the pool's group
    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str,
                          timeout_s: float) -> list[int]:
        self.wgroup = open_group(backend, client_store(host, port, world_size, timeout_s), rank, world_size,
                                 timeout_s)
        return self.engine.worker_pids()

    def receive_weights(self, plan: list, timeout_s: float, device: str, corrupt_bucket: int | None = None,
                        aliases: dict[str, list[str]] | None = None) -> list[tuple[int, int]]:
        """Receive and load every bucket; the version is stamped by `set_version` once the pool
        has verified the checksums."""
        # vLLM warns for each layer a bucket leaves out (it keeps that layer's weights): expected here
        quiet = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        self.sync_timings: dict[str, float] = {}
        try:
            sums = receive_buckets(plan, self.wgroup, self.engine.reload, timeout_s, device, corrupt_bucket,
                                   self.sync_timings, aliases)
        finally:
            quiet.setLevel(level)
        self.engine.finish_load()
        return sums

    def last_sync_timings(self) -> dict[str, float]:
        return getattr(self, "sync_timings", {})

    def peak_rss_mb(self) -> float:
        return peak_rss_mb()

    def set_version(self, version: int) -> int:
        self.engine.weight_version = version
        return version

    def pid(self) -> int:
        return os.getpid()


def engine_weights(state_dict: dict[str, Any], dtype: str) -> dict[str, torch.Tensor]:
    """The trainer's state dict as the engines hold it: on CPU, floating tensors in the engines'
    dtype (a bf16 engine gets bf16, half the bytes of the fp32 master weights)."""
    target = getattr(torch, dtype)
    return {k: v.detach().to("cpu", dtype=target if v.is_floating_point() else v.dtype).contiguous()
            for k, v in state_dict.items()}


def resolve_sync_backend(backend: str, device: str) -> str:
    """rollout.sync_backend: `auto` is nccl for GPU engines when this process sees a GPU, else gloo."""
    if backend == "auto":
        return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"rollout.sync_backend={backend!r}: use auto, gloo or nccl")
    return backend


def split_cpus(n_actors: int, cores: int | Sequence[int]) -> list[str | None]:
    """Disjoint core sets per actor on one node: 2 actors on 2 cores -> ['0', '1'];
    on cores [4, 5, 6, 7] -> ['4-5', '6-7']; None each when there are fewer cores than actors."""
    cores = sorted(range(cores) if isinstance(cores, int) else cores)
    if n_actors > len(cores):
        return [None] * n_actors
    per = len(cores) // n_actors
    return [_core_spec(cores[i * per:(i + 1) * per]) for i in range(n_actors)]


def _core_spec(cores: list[int]) -> str:
    if len(cores) > 1 and cores[-1] - cores[0] == len(cores) - 1:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(map(str, cores))


def bind_engine_threads(cpus: str | None) -> None:
    """Point this process's OpenMP and torch threads at `cpus` ("0-3") before vLLM starts.
    Ray set OMP_NUM_THREADS to the actor's `num_cpus` (often 1) when the worker started, and torch
    sized its thread pool from it; vLLM keeps torch's count, so the environment alone left the whole
    engine computing on one thread whatever the binding said (docs/benchmarks-amx.md)."""
    if cpus:
        os.environ.update(VLLM_CPU_OMP_THREADS_BIND=cpus, OMP_NUM_THREADS=str(count_cpus(cpus)))
        torch.set_num_threads(count_cpus(cpus))


def node_cpu_binding(index: int) -> str | None:
    """Inside engine actor `index` (its placement-group bundle): its share of *this* node's
    cores, split among the pool's actors placed on the same node. Computed here, not on
    the driver, whose core count says nothing about other nodes."""
    from ray.util import get_current_placement_group, placement_group_table

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    pg = get_current_placement_group()
    if pg is None:
        return _core_spec(cores)
    nodes = {int(k): v for k, v in placement_group_table(pg)["bundles_to_node_id"].items()}
    peers = sorted(k for k, node in nodes.items() if node == nodes[index])
    return split_cpus(len(peers), cores)[peers.index(index)]


class RolloutPool:
    """`Generator` over `num_actors` vLLM engines in Ray actors."""

    def __init__(self, model: str, engine: Any, ray_cfg: Any = None, device: str = "cpu",
                 max_restarts: int = 3, unit_timeout_s: float = 600.0, sync_timeout_s: float = 120.0,
                 seed: int = 0, trust_remote_code: bool = False, actor_cls: type | None = None,
                 weight_sync: str = "auto", sync_bucket_mb: float = 256.0, sync_backend: str = "auto"):
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.cluster = RayCluster(getattr(ray_cfg, "address", None), getattr(ray_cfg, "num_cpus", None),
                                  getattr(ray_cfg, "namespace", "posttrain"),
                                  worker_niceness=getattr(ray_cfg, "worker_niceness", 0))
        self.cfg, self.model, self.device = engine, model, device
        self.unit_timeout_s, self.sync_timeout_s = unit_timeout_s, sync_timeout_s
        self.weight_version = 0
        self._weights_ref = None
        self.restarts = 0
        if weight_sync not in ("auto", "object_store", "stream"):
            raise ValueError(f"rollout.weight_sync={weight_sync!r}: use 'auto', 'object_store' or 'stream'")
        self.weight_sync, self.bucket_bytes = weight_sync, int(sync_bucket_mb * 2**20)
        self.sync_backend = resolve_sync_backend(sync_backend, device)
        self._group = None  # the streamed sync's process group with the driver as rank 0, (re)formed on demand
        self._rendezvous: dict[str, Any] | None = None  # ... or the one an external sender joins as rank 0
        self._source: Any = None  # that sender (its state_dict() recovers a restarted engine)
        self._joining: list[Any] | None = None  # the engines' join calls of a new rendezvous
        self._recovering = False  # inside _restream
        self._plan: tuple[list, list] | None = None  # (tensor specs, bucket plan) of the last streamed sync
        self._last_state: dict[str, Any] | None = None
        self.corrupt_for_test: tuple[int, int] | None = None  # (actor, bucket): tests break one bucket
        self.last_sync: dict[str, float] = {}
        bundle = {"CPU": engine.num_cpus_per_actor}
        if engine.num_gpus_per_actor:
            bundle["GPU"] = engine.num_gpus_per_actor
        self.pg = placement_group([dict(bundle) for _ in range(engine.num_actors)],
                                  strategy=engine.placement.upper())
        ray.get(self.pg.ready(), timeout=engine.start_timeout_s)
        self.dtype = resolve_dtype(engine.dtype, device).dtype  # `auto`: bf16 where the device does it fast
        engine_kwargs = dict(dtype=self.dtype, enforce_eager=engine.enforce_eager,
                             max_model_len=engine.max_model_len,
                             tensor_parallel_size=engine.tensor_parallel_size,
                             gpu_memory_utilization=engine.gpu_memory_utilization, seed=seed,
                             trust_remote_code=trust_remote_code, chunked_prefill=engine.chunked_prefill,
                             max_num_batched_tokens=engine.max_num_batched_tokens,
                             max_num_seqs=engine.max_num_seqs,
                             max_images_per_prompt=engine.max_images_per_prompt)
        split_here = engine.cpu_threads == "all" and device == "cpu"  # each actor splits its own node's cores
        remote_cls = ray.remote(actor_cls or _EngineActor)  # tests inject faulty actors
        self.actors = []
        for i in range(engine.num_actors):
            env = engine_env(device, engine.kv_cache_gib, None if split_here else engine.cpu_threads)
            if device != "cpu":
                env["VLLM_TARGET_DEVICE"] = "cuda"
            self.actors.append(remote_cls.options(
                num_cpus=engine.num_cpus_per_actor, num_gpus=engine.num_gpus_per_actor,
                max_restarts=max_restarts, max_task_retries=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=i),
                runtime_env={"env_vars": env},
            ).remote(model, {**engine_kwargs, "bind_index": i} if split_here else engine_kwargs))
        self.info = ray.get([a.ready.remote() for a in self.actors], timeout=engine.start_timeout_s)
        self.incarnations = [info["incarnation"] for info in self.info]

    # ------------------------------------------------------------------ weights

    def update_weights(self, state_dict: dict[str, Any], version: int) -> None:
        t0 = time.monotonic()
        unique, aliases = split_aliases(state_dict)  # a tied lm_head travels once
        specs = tensor_specs(unique.items(), self.dtype)
        stream = self._streams(specs)
        if stream:
            self._last_state, self._source = state_dict, None  # whole, with aliases: recovers a restarted engine
            if self._group is None:
                self._open_group()
            self._stream(specs, aliases, version, lambda plan, device: send_buckets(
                unique.items(), plan, self._group, self.sync_timeout_s, device))
        else:
            self._object_store_weights(state_dict, version)
        self._record(t0, specs, stream)

    def update_weights_from(self, source: Any, version: int) -> None:
        """Install weights that `source` sends itself, e.g. a sharded trainer's rank 0 (it never builds
        a full state dict, and nothing passes through this process). `source` has:
        `weight_layout()` -> ([(name, dtype, shape)] of the tensors with their own storage, {name: [tied
        names]}); `send_weights(rendezvous, plan, timeout_s, device)` -> per-bucket checksums: join the
        weight group as rank 0 (`rendezvous`: host, port, world, backend, timeout_s) and send the plan;
        `state_dict()` -> the full weights, for the object-store path below the stream threshold and to
        recover a restarted engine."""
        t0 = time.monotonic()
        layout, aliases = source.weight_layout()
        specs = [TensorSpec(n, self.dtype if getattr(torch, d).is_floating_point else d, tuple(shape))
                 for n, d, shape in layout]
        stream = self._streams(specs)
        if not stream:
            self.update_weights(source.state_dict(), version)
            return
        self._last_state, self._source = None, source
        if self._rendezvous is None:
            self._open_rendezvous()
        rdv = self._rendezvous
        self._stream(specs, aliases, version,
                     lambda plan, device: source.send_weights(rdv, plan, self.sync_timeout_s, device))
        if self._joining:  # the engines joined during the first send
            import ray

            refs, self._joining = self._joining, None
            try:
                self.engine_pids = ray.get(refs, timeout=self.sync_timeout_s)
            except Exception as e:  # a failed join was already handled as a failed sync
                log.warning("an engine's weight-group join failed: %s", e)
        self._record(t0, specs, stream)

    def _streams(self, specs: list[TensorSpec]) -> bool:
        nbytes = sum(s.nbytes for s in specs)
        return self.weight_sync == "stream" or (self.weight_sync == "auto" and nbytes >= AUTO_STREAM_BYTES)

    def _record(self, t0: float, specs: list[TensorSpec], stream: bool) -> None:
        self.last_sync = {"sync/seconds": time.monotonic() - t0, "sync/bytes": float(sum(s.nbytes for s in specs)),
                          "sync/streamed": float(stream), **self._peak_memory(),
                          **(self._engine_sync_timings() if stream else {})}

    def _engine_sync_timings(self) -> dict[str, float]:
        """Where a streamed sync's time went on each engine: waiting for buckets, checksumming, loading."""
        import ray

        try:
            timings = ray.get([a.last_sync_timings.remote() for a in self.actors], timeout=10)
        except Exception:  # timings never fail a sync
            return {}
        return {f"sync/engine{i}_{k}": float(v) for i, t in enumerate(timings) for k, v in t.items()}

    def _peak_memory(self) -> dict[str, float]:
        """Peak RSS so far of this (the trainer's) process and of each engine actor, MiB (a few ms)."""
        import ray

        try:
            engines = ray.get([a.peak_rss_mb.remote() for a in self.actors], timeout=10)
        except Exception:  # memory figures never fail a sync
            return {}
        return {"mem/driver_peak_rss_mb": peak_rss_mb(),
                **{f"mem/engine{i}_peak_rss_mb": float(v) for i, v in enumerate(engines)}}

    def _object_store_weights(self, state_dict: dict[str, Any], version: int) -> None:
        import ray

        self._weights_ref = ray.put(engine_weights(state_dict, self.dtype))
        self.weight_version = version
        refs = {a.load_weights.remote(self._weights_ref, version): i for i, a in enumerate(self.actors)}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.sync_timeout_s)
        bad = [refs[r] for r in pending]
        for r in ready:
            try:
                ray.get(r)
            except Exception as e:  # an engine that raised during the load
                log.warning("weight sync to actor %d failed: %s", refs[r], e)
                bad.append(refs[r])
        for i in bad:
            self._restart(i, reason="weight sync timed out or failed")

    def _stream(self, specs: list[TensorSpec], aliases: dict[str, list[str]], version: int,
                send: Any) -> None:
        """Broadcast the weights bucket by bucket (`send(plan, device)` -> the sender's checksums) over
        the weight group, then compare every engine's checksums with the sender's; an engine that
        failed is restarted and brought to this version (object store, one engine), a checksum
        mismatch raises naming the engine."""
        import ray

        if self._plan is None or self._plan[0] != specs:
            self._plan = (specs, plan_buckets(specs, self.bucket_bytes))
        plan = self._plan[1]
        self.weight_version, self._weights_ref = version, None
        device = "cpu" if self.sync_backend == "gloo" else "cuda"
        corrupt = self.corrupt_for_test or (-1, None)
        refs = {a.receive_weights.remote(plan, self.sync_timeout_s, device, corrupt[1] if i == corrupt[0] else None,
                                         aliases): i for i, a in enumerate(self.actors)}
        expected, send_error = None, None
        try:
            expected = send(plan, device)
        except Exception as e:  # a receiver died or hung: the group is broken; find out which below
            send_error = e
            self._drop_group()
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.sync_timeout_s)
        reports, bad = {}, [refs[r] for r in pending]
        for r in ready:
            try:
                reports[f"rollout engine {refs[r]}"] = ray.get(r)
            except Exception as e:
                log.warning("streamed weight sync to actor %d failed: %s", refs[r], e)
                bad.append(refs[r])
        if send_error is not None and not bad:
            raise WeightSyncError(f"streamed weight sync failed on the trainer side: {send_error}") from send_error
        if expected is not None:
            verify(expected, reports)
        ray.get([self.actors[refs[r]].set_version.remote(version) for r in ready if refs[r] not in bad],
                timeout=self.sync_timeout_s)
        if bad:
            self._drop_group()  # restarted engines are not in it
            for i in sorted(bad):
                self._restart(i, reason="streamed weight sync timed out or failed")

    def _drop_group(self) -> None:
        self._group = self._rendezvous = None

    def _open_group(self) -> None:
        """The weight group with this process as rank 0 (the engines are ranks 1..N)."""
        import ray

        store, refs = self._engines_join()
        group = open_group(self.sync_backend, store, 0, len(self.actors) + 1, self.sync_timeout_s)
        self.engine_pids = ray.get(refs, timeout=self.sync_timeout_s)
        self._group, self._store = group, store

    def _open_rendezvous(self) -> None:
        """A weight group whose rank 0 is another process: serve its store and let the engines start
        joining (they finish when that rank 0 joins, inside its first `send_weights`; each engine
        actor runs its next call, the receive, after that)."""
        store, refs = self._engines_join()
        self._store, self._joining = store, refs
        self._rendezvous = {"host": store.host, "port": store.port, "world": len(self.actors) + 1,
                            "backend": self.sync_backend, "timeout_s": self.sync_timeout_s}

    def _engines_join(self) -> tuple[Any, list[Any]]:
        import ray

        self._drop_group()  # an engine is in one weight group at a time: the new one replaces the old
        host = ray.util.get_node_ip_address()
        world = len(self.actors) + 1
        store = server_store(host, world, self.sync_timeout_s)
        return store, [a.join_weight_group.remote(host, store.port, i + 1, world, self.sync_backend,
                                                  self.sync_timeout_s) for i, a in enumerate(self.actors)]

    def _restream(self) -> None:
        """Bring every engine to the current version by streaming from the external sender again
        (over a new group: a restarted engine is not in the old one). Once: an engine that fails
        during this recovery sync makes it raise."""
        if self._recovering:
            raise WeightSyncError("an engine failed again while being recovered by a streamed weight sync")
        self._recovering = True
        try:
            self._drop_group()
            self.update_weights_from(self._source, self.weight_version)
        finally:
            self._recovering = False

    def _restart(self, i: int, reason: str) -> None:
        """Kill actor i (Ray restarts it) and bring it to the current weights, or raise."""
        import ray

        log.warning("restarting rollout actor %d: %s", i, reason)
        self.restarts += 1
        ray.kill(self.actors[i], no_restart=False)
        self._ensure_current(i, replaced=True)

    def _ensure_current(self, i: int, replaced: bool = False) -> None:
        """Wait (bounded) for actor i to be up (with `replaced`, for a new incarnation: ray.kill
        is asynchronous and the dying process may still answer), then push the current
        weights if it lacks them."""
        import ray
        from ray.exceptions import ActorUnavailableError

        actor = self.actors[i]
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while True:
            try:
                incarnation, version = ray.get(actor.state.remote(), timeout=max(1.0, deadline - time.monotonic()))
                if replaced and incarnation == self.incarnations[i]:
                    if time.monotonic() > deadline:
                        raise WeightSyncError(f"rollout actor {i} was not replaced within "
                                              f"{self.cfg.start_timeout_s:.0f}s")
                    time.sleep(0.2)
                    continue
                self.incarnations[i] = incarnation
                if version != self.weight_version and self._source is not None and self._weights_ref is None:
                    self._restream()  # a sharded trainer: no full state dict anywhere, so send it again
                    return
                if version != self.weight_version and self._weights_ref is None and self._last_state is not None:
                    self._weights_ref = ray.put(engine_weights(self._last_state, self.dtype))  # recovery only
                    self._drop_group()  # a new incarnation is not in the streamed sync's group
                if version != self.weight_version and self._weights_ref is not None:
                    ray.get(actor.load_weights.remote(self._weights_ref, self.weight_version),
                            timeout=self.sync_timeout_s)
                return
            except ActorUnavailableError:  # restarting: its __init__ is still loading the engine
                if time.monotonic() > deadline:
                    raise WeightSyncError(f"rollout actor {i} did not come back within "
                                          f"{self.cfg.start_timeout_s:.0f}s") from None
                time.sleep(0.5)
            except WeightSyncError:
                raise
            except Exception as e:
                raise WeightSyncError(
                    f"rollout actor {i} could not be brought to weight version {self.weight_version}: "
                    f"{type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ generation

    def generate(self, prompts: Sequence[PromptInput], sampling: SamplingSpec, step: int = 0) -> list[Rollout]:
        units: list[Unit] = [((step, p.prompt_id, j), list(p.token_ids)) + ((p.media,) if p.media else ())
                             for p in prompts for j in range(sampling.n)]
        results = self._run_units(units, sampling)
        return [results[u[0]] for u in units]

    def _chunks(self, units: list[Unit]) -> list[list[Unit]]:
        # keep a prompt's samples on one engine (prefix cache), balance by count
        n = len(self.actors)
        chunks: list[list[Unit]] = [[] for _ in range(n)]
        by_prompt: dict[str, list[Unit]] = {}
        for u in units:
            by_prompt.setdefault(u[0][1], []).append(u)
        for k, group in enumerate(by_prompt.values()):
            chunks[k % n].extend(group)
        return chunks

    def _run_units(self, units: list[Unit], sampling: SamplingSpec) -> dict[tuple, Rollout]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        args = (sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed, sampling.ignore_eos)
        results: dict[tuple, Rollout] = {}
        pending: dict[Any, tuple[int, list[Unit]]] = {}

        def submit(i: int, chunk: list[Unit]) -> None:
            if chunk:
                pending[self.actors[i].generate.remote(chunk, *args)] = (i, chunk)

        for i, chunk in enumerate(self._chunks(units)):
            submit(i, chunk)
        deadline = time.monotonic() + self.unit_timeout_s
        attempts = 0
        while pending:
            remaining = deadline - time.monotonic()
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, remaining))
            if not ready:
                stuck = sorted({i for i, _ in pending.values()})
                raise RolloutTimeout(f"{sum(len(c) for _, c in pending.values())} rollout units not back "
                                     f"after {self.unit_timeout_s:.0f}s from actors {stuck}")
            ref = ready[0]
            i, chunk = pending.pop(ref)
            try:
                out = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except (RayActorError, GetTimeoutError) as e:
                attempts += 1
                if attempts > 3 * len(self.actors):
                    raise RolloutTimeout(f"rollout actors keep failing: {e}") from e
                log.warning("rollout actor %d died mid-round (%s); resubmitting %d units", i,
                            type(e).__name__, len(chunk))
                self._ensure_current(i, replaced=isinstance(e, RayActorError))
                submit(i, chunk)
                continue
            redo = [u for u, r in zip(chunk, out) if r.weight_version != self.weight_version]
            for r in out:
                if r.weight_version == self.weight_version:
                    results.setdefault(r.key, r)  # duplicates (a retried unit) are dropped
            if redo:
                log.warning("actor %d returned %d rollouts with stale weights; redoing", i, len(redo))
                self._ensure_current(i)
                submit(i, redo)
        return results

    # ------------------------------------------------------------------ utilities

    def sequence_logprobs(self, sequences: list[list[int]], start: int) -> list[list[float]]:
        import ray

        return ray.get(self.actors[0].sequence_logprobs.remote(sequences, start), timeout=self.unit_timeout_s)

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        if not ray.is_initialized():
            return
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
        try:
            remove_placement_group(self.pg)
        except Exception:
            pass
        self.cluster.close()
