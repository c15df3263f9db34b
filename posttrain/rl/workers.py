"""Trainer workers: the policy in N Ray actors that form one torch.distributed group.

`trainer.strategy: fsdp` shards parameters, gradients and optimizer state with FSDP2
(`fully_shard` on every decoder layer, then on the root); `ddp` keeps a full replica per
worker (FSDP2 on an (N, 1) replicate x shard mesh: gradients all-reduced, the same code
path). The group uses `trainer.backend` (gloo on CPU, nccl with GPUs) and `trainer.timeout_s`
bounds every collective and every call the driver makes.

One update: the driver draws the minibatch order exactly as the single-process trainer does
(`minibatch_indices`), gives worker r the r-th slice of every minibatch (`split_minibatches`),
and each worker scales its slice's loss by N * b_r / B, so the gradients its group averages
equal the single-process gradient of the whole minibatch; every worker then takes the same
optimizer step on its shard. A worker with no sample in a minibatch runs one sample at scale 0
(every rank must join every collective).

The driver's `WorkerGroup` has LocalPolicy's methods (posttrain/rl/policy.py). A worker that dies
or does not answer within trainer.timeout_s raises WorkerFailed naming its rank, pid and node.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict, set_model_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from posttrain.core.allocator import mmap_large_allocations
from posttrain.core.devices import master_dtype
from posttrain.core.models import check_model_path, load_causal_lm, load_tokenizer, save_hf
from posttrain.core.seeding import rng_state, set_rng_state, set_seed
from posttrain.rl.memory import sparse_tied_embedding_grad
from posttrain.rl.optim import make_optimizer
from posttrain.rl.update import UpdateResult, gspo_update, minibatch_indices, update_settings
from rollouts.types import Rollout
from rollouts.weight_sync import Bucket, client_store, open_group, send_buckets

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"  # a sharded checkpoint's DCP folder (next to trainer.pt)


class WorkerFailed(RuntimeError):
    """A trainer worker died, raised, or did not answer in time."""


# ---------------------------------------------------------------------------- pure helpers

def split_minibatches(minibatches: Sequence[torch.Tensor], world: int
                      ) -> list[tuple[list[int], list[torch.Tensor], list[float], int]]:
    """Per rank: (global sample indices it holds, its local minibatches, their loss scales, real samples).

    Rank r takes the r-th `tensor_split` slice of every minibatch, scaled N * b_r / B; an empty
    slice becomes the minibatch's first sample at scale 0."""
    out: list[tuple[list[int], list[torch.Tensor], list[float], int]] = [([], [], [], 0) for _ in range(world)]
    for mb in minibatches:
        B = len(mb)
        for r, part in enumerate(torch.tensor_split(mb, world)):
            idx, local, scales, real = out[r]
            scale = world * len(part) / B
            if len(part) == 0:
                part = mb[:1]
            local.append(torch.arange(len(idx), len(idx) + len(part)))
            idx += part.tolist()
            scales.append(scale)
            out[r] = (idx, local, scales, real + (len(part) if scale else 0))
    return out


def merge_results(results: Sequence[UpdateResult], weights: Sequence[int]) -> UpdateResult:
    """One UpdateResult from the workers': steps from rank 0 (all agree), metrics weighted by samples,
    except the loss: each worker reports its scaled share, whose mean over workers is the global loss."""
    total = sum(weights) or 1
    merged = UpdateResult(applied=results[0].applied, skipped=results[0].skipped)
    merged.bad_sample_ids = [i for r in results for i in r.bad_sample_ids]
    for key in results[0].metrics:
        merged.metrics[key] = sum(r.metrics.get(key, 0.0) * w for r, w in zip(results, weights)) / total
    if "rl/loss" in merged.metrics:
        merged.metrics["rl/loss"] = sum(r.metrics["rl/loss"] for r in results) / len(results)
    if "rl/minibatches_skipped" in merged.metrics:
        merged.metrics["rl/minibatches_skipped"] = float(results[0].skipped)
    return merged


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks FSDP wraps one by one: the classes HF names in `_no_split_modules` (decoder layers)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_model(model: torch.nn.Module, strategy: str, world: int, device_type: str) -> None:
    """FSDP2 in place: per decoder layer, then the root. `ddp` shards over a mesh dimension of 1."""
    if strategy == "fsdp":
        mesh = init_device_mesh(device_type, (world,))
    else:  # HSDP with shard groups of one: replicas, gradients all-reduced
        mesh = init_device_mesh(device_type, (world, 1), mesh_dim_names=("replicate", "shard"))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the actor body

class PolicyWorker:
    """One rank of the trainer group (wrapped with ray.remote by WorkerGroup)."""

    def __init__(self, rank: int, world: int, cfg: Any, model_path: str, precision: str, pad_id: int,
                 total_steps: int):
        self.rank, self.world, self.cfg = rank, world, cfg
        self.model_path, self.precision, self.pad_id, self.total_steps = model_path, precision, pad_id, total_steps
        self.device = torch.device("cuda", 0) if cfg.trainer.num_gpus_per_worker > 0 else torch.device("cpu")
        mmap_large_allocations()  # freed activations and gathered layers leave the resident set

    def describe(self) -> dict[str, Any]:
        import ray  # the node's address as Ray sees it

        info = {"rank": self.rank, "pid": os.getpid(), "node": ray.util.get_node_ip_address()}
        if self.rank == 0:
            info["port"] = free_port()
        return info

    def setup(self, addr: str, port: int) -> None:
        cfg = self.cfg
        dist.init_process_group(cfg.trainer.resolved_backend(), init_method=f"tcp://{addr}:{port}",
                                rank=self.rank, world_size=self.world, timeout=timedelta(seconds=cfg.trainer.timeout_s))
        set_seed(cfg.train.seed)
        self.model = self._load_sharded()
        self.hf_config = self.model.config
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg.optim, self.total_steps)
        self.settings = update_settings(cfg, self.pad_id, self.precision)

    def _load_sharded(self) -> torch.nn.Module:
        """The sharded model, its weights read from disk by rank 0 only: the other ranks build it on the
        meta device (no memory), every rank shards it, the others allocate just their shards, and rank 0
        broadcasts the full tensors one at a time, each rank keeping its slice. Buffers (rotary
        frequencies, not in the checkpoint) come from rank 0 too."""
        from transformers import AutoConfig, AutoModelForCausalLM  # the unsharded class, built on meta

        dtype, remote = master_dtype(self.precision), self.cfg.model.trust_remote_code
        if self.rank == 0:
            model = load_causal_lm(self.model_path, dtype, remote).to(self.device)
            full = model.state_dict()  # keeps the full tensors alive through sharding, to broadcast them
        else:
            config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=remote)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype),
                                                         trust_remote_code=remote)
            full = {}
        sparse_tied_embedding_grad(model)
        shard_model(model, self.cfg.trainer.strategy, self.world, self.device.type)
        if self.rank != 0:
            model.to_empty(device=self.device)
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        del full
        for _, buf in model.named_buffers():
            dist.broadcast(buf, src=0)
        return model

    def _agree(self, ok: bool) -> bool:
        flag = torch.tensor([int(ok)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def update(self, rollouts: list[Rollout], advantages: torch.Tensor, minibatches: list[torch.Tensor],
               scales: list[float]) -> UpdateResult:
        return gspo_update(self.model, self.optimizer, self.scheduler, rollouts=rollouts, advantages=advantages,
                           minibatches=minibatches, loss_scales=scales, agree=self._agree, **self.settings)

    def full_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full tensor on CPU) one parameter at a time, in state-dict order: every rank must
        iterate (each tensor is an all-gather); only rank 0's values are meant to be used. A streamed
        weight sync can send these as they come instead of collecting the dict."""
        for name, t in self.model.state_dict().items():
            full = self._full(t)
            yield name, full.cpu() if self.rank == 0 else full  # the other ranks drop theirs at once

    def push_weights(self, send: Callable[[Iterator[tuple[str, torch.Tensor]]], Any]) -> Any:
        """Rank 0 hands the full tensors, one at a time, to `send` (e.g. a streamed sender to the
        engines) and returns what it returns; the other ranks take part in each gather."""
        tensors = self.full_tensors()
        if self.rank == 0:
            return send(tensors)
        for _ in tensors:
            pass
        return None

    def weight_layout(self) -> tuple[list[tuple[str, str, tuple[int, ...]]], dict[str, list[str]]]:
        """([(name, dtype, full shape)] of the tensors with their own storage, in state-dict order;
        {name: [names tied to it]}): what a weight-sync plan needs, without gathering anything."""
        first: dict[int, str] = {}
        specs, aliases = [], {}
        for name, t in self.model.state_dict(keep_vars=True).items():
            if id(t) in first:  # a tied lm_head is the embedding's parameter
                aliases.setdefault(first[id(t)], []).append(name)
                continue
            first[id(t)] = name
            specs.append((name, str(t.dtype).removeprefix("torch."), tuple(t.shape)))
        return specs, aliases

    def send_weights(self, rendezvous: dict[str, Any], plan: Sequence[Bucket], timeout_s: float,
                     device: str) -> list[tuple[int, int]] | None:
        """Stream the weights to the engines: rank 0 is rank 0 of the engines' weight group (joined
        through the rollout pool's `rendezvous`, kept for the next syncs) and sends the plan's buckets
        as it gathers each tensor, so no full state dict exists anywhere; the other ranks take part in
        every gather. Returns rank 0's per-bucket checksums."""
        names = [s.name for b in plan for s in b.tensors]
        state = self.model.state_dict()
        tensors = ((n, self._full(state[n])) for n in names)
        if self.rank != 0:
            for _ in tensors:
                pass
            return None
        try:
            return send_buckets(tensors, plan, self._weight_group(rendezvous), timeout_s, device)
        except BaseException:  # an engine failed: keep gathering, so the peers are not left in a collective
            self._wgroup = None
            for _ in tensors:
                pass
            raise

    def _full(self, t: torch.Tensor) -> torch.Tensor:
        return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach()

    def _weight_group(self, rdv: dict[str, Any]) -> Any:
        """The weight-transfer group as its rank 0, opened once per rendezvous the pool hands out."""
        key = (rdv["host"], rdv["port"])
        if getattr(self, "_wgroup", None) is None or self._wgroup[0] != key:
            store = client_store(rdv["host"], rdv["port"], rdv["world"], rdv["timeout_s"])
            self._wgroup = (key, open_group(rdv["backend"], store, 0, rdv["world"], rdv["timeout_s"]), store)
        return self._wgroup[1]

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        out = {}
        for name, t in self.full_tensors():
            if self.rank == 0:
                out[name] = t
        return out if self.rank == 0 else None

    def last_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def scheduler_state(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def save_shards(self, folder: str) -> None:
        """Each rank writes its shard of model and optimizer (DCP) and its RNG state."""
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=folder)
        torch.save(rng_state(), Path(folder) / f"rng-rank{self.rank}.pt")

    def load_shards(self, folder: str, scheduler: dict[str, Any]) -> None:
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=folder)
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(scheduler)
        rng = Path(folder) / f"rng-rank{self.rank}.pt"
        if rng.is_file():
            set_rng_state(torch.load(rng, weights_only=False))

    def save_final(self, out: str) -> None:
        """One HF folder (transformers and vLLM load it): gathered to rank 0, written there atomically.
        The weights go into an unsharded model built on the meta device, so rank 0 holds one copy."""
        from transformers import AutoModelForCausalLM  # the unsharded class whose name the folder records

        full = self.full_state_dict()
        if self.rank != 0:
            return
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(self.hf_config, dtype=next(iter(full.values())).dtype)
        plain.load_state_dict(full, strict=False, assign=True)
        save_hf(plain, load_tokenizer(self.model_path, self.cfg.model.trust_remote_code), out)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------- the driver's handle

class WorkerGroup:
    """N PolicyWorker actors in one placement group (a bundle each, GPUs when asked)."""

    def __init__(self, cfg: Any, model_path: str, precision: str, pad_id: int,
                 actor_cls: type | None = None):
        import ray
        from ray.util.placement_group import placement_group
        from ray.exceptions import GetTimeoutError
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        from transformers import AutoConfig  # the model's shape, without loading its weights

        t = cfg.trainer
        self.cfg, self.start_path, self.world, self.timeout_s = cfg, model_path, t.num_workers, t.timeout_s
        self.config = AutoConfig.from_pretrained(check_model_path(model_path),
                                                 trust_remote_code=cfg.model.trust_remote_code)
        bundle = {"CPU": t.num_cpus_per_worker, **({"GPU": t.num_gpus_per_worker} if t.num_gpus_per_worker else {})}
        self.pg = placement_group([dict(bundle) for _ in range(self.world)], strategy=t.placement.upper())
        try:
            ray.get(self.pg.ready(), timeout=t.timeout_s)
        except GetTimeoutError:
            raise WorkerFailed(f"the cluster cannot place {self.world} trainer workers of {bundle} within "
                               f"trainer.timeout_s={t.timeout_s}s ({ray.available_resources()} free): lower "
                               "trainer.num_workers / num_cpus_per_worker or raise ray.num_cpus") from None
        remote = ray.remote(actor_cls or PolicyWorker)
        total = cfg.train.steps * cfg.algo.num_minibatches
        self.workers = [remote.options(
            num_cpus=t.num_cpus_per_worker, num_gpus=t.num_gpus_per_worker, max_restarts=0, max_task_retries=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=self.pg,
                                                                 placement_group_bundle_index=r),
        ).remote(r, self.world, cfg, model_path, precision, pad_id, total) for r in range(self.world)]
        self.info: list[dict[str, Any]] = [{"rank": r, "pid": "?", "node": "?"} for r in range(self.world)]
        try:
            self.info = self.call("describe")
            self.call("setup", self.info[0]["node"], self.info[0]["port"])
        except BaseException:  # no actors or placement group left behind by a failed start
            self.close()
            raise
        log.info("trainer workers up: %s", ", ".join(f"rank {i['rank']} pid {i['pid']} on {i['node']}"
                                                      for i in self.info))

    def _name(self, rank: int) -> str:
        i = self.info[rank]
        return f"trainer worker rank {rank} (pid {i['pid']}, node {i['node']})"

    def call(self, method: str, *args: Any, per_rank: Sequence[tuple] | None = None,
             timeout_s: float | None = None) -> list[Any]:
        """Run `method` on every worker (`per_rank[r]` as rank r's arguments), bounded by trainer.timeout_s.
        A worker that dies, raises or does not answer in time raises WorkerFailed naming it; a dead
        worker is named before the peers whose collectives broke because of it."""
        import ray
        from ray.exceptions import RayActorError

        refs = [getattr(w, method).remote(*(per_rank[r] if per_rank else args)) for r, w in enumerate(self.workers)]
        rank_of = {ref: r for r, ref in enumerate(refs)}
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        pending, errors = list(refs), {}
        while pending and time.monotonic() < deadline:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            for ref in ready:
                try:
                    ray.get(ref)
                except RayActorError as e:
                    errors[rank_of[ref]] = ("died", e)
                except Exception as e:  # noqa: BLE001 - reported with the rank below
                    errors[rank_of[ref]] = ("raised", e)
            if errors:  # give the peers a moment to fail too, so the first cause is named
                deadline = min(deadline, time.monotonic() + 5.0)
        if errors or pending:
            self._fail(method, errors, [rank_of[p] for p in pending], timeout_s or self.timeout_s)
        return ray.get(refs)

    def _fail(self, method: str, errors: dict[int, tuple[str, Exception]], hung: list[int], timeout_s: float) -> None:
        parts = [f"{self._name(r)} died (killed or crashed) during {method}"
                 for r, (kind, _) in sorted(errors.items()) if kind == "died"]
        parts += [f"{self._name(r)} raised during {method}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__}"
                  for r, (kind, e) in sorted(errors.items()) if kind == "raised"]
        if hung and not errors:
            parts += [f"{self._name(r)} did not answer {method} within trainer.timeout_s={timeout_s}s (hung?)"
                      for r in hung]
        raise WorkerFailed("; ".join(parts) + "; the run stops (resume it from its last checkpoint with --resume)")

    # ------------------------------------------------------------------ LocalPolicy's methods

    def update(self, rollouts: list[Rollout], advantages: torch.Tensor, generator: torch.Generator,
               vision: Callable | None = None) -> UpdateResult:
        if vision is not None:
            raise WorkerFailed("trainer workers train text models only; use trainer.strategy=single for "
                               "image-text models")
        if not rollouts:
            return UpdateResult()
        mbs = minibatch_indices(len(rollouts), self.cfg.algo.num_minibatches, generator)
        shards = split_minibatches(mbs, self.world)
        args = [([rollouts[i] for i in idx], advantages[idx], local, scales) for idx, local, scales, _ in shards]
        return merge_results(self.call("update", per_rank=args), [s[3] for s in shards])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.call("full_state_dict")[0]

    def push_weights(self, send: Callable[[Iterator[tuple[str, torch.Tensor]]], Any]) -> Any:
        """`send(iter of (name, full tensor))` on rank 0, the gathers streamed layer by layer: the
        hook for a weight sync that does not build the whole state dict (rank 0's result)."""
        return self.call("push_weights", send)[0]

    def weight_layout(self) -> tuple[list[tuple[str, str, tuple[int, ...]]], dict[str, list[str]]]:
        return self.call("weight_layout")[0]

    def send_weights(self, rendezvous: dict[str, Any], plan: Sequence[Bucket], timeout_s: float,
                     device: str) -> list[tuple[int, int]]:
        return self.call("send_weights", rendezvous, plan, timeout_s, device)[0]

    def sync_to(self, generator: Any, version: int) -> None:
        """Install the weights in the engines: streamed from rank 0 when the generator can take a
        sender (RolloutPool.update_weights_from), else the gathered state dict."""
        if hasattr(generator, "update_weights_from"):
            generator.update_weights_from(self, version)
        else:
            generator.update_weights(self.state_dict(), version)

    def last_lr(self) -> float:
        return self.call("last_lr")[0]

    def checkpoint_state(self) -> dict[str, Any]:
        return {"scheduler": self.call("scheduler_state")[0], "trainer_workers": self.world}

    def write_checkpoint(self, folder: Path, tokenizer: Any) -> None:
        self.call("save_shards", str(folder / SHARDS_DIR))

    def load_checkpoint(self, folder: Path, state: dict[str, Any]) -> None:
        if not (folder / SHARDS_DIR).is_dir():
            raise WorkerFailed(f"{folder} holds a single-process checkpoint (model/), but trainer.strategy="
                               f"{self.cfg.trainer.strategy}: resume with the strategy it was written with")
        self.call("load_shards", str(folder / SHARDS_DIR), state["scheduler"])

    def save_final(self, out: Path, tokenizer: Any) -> None:
        self.call("save_final", str(out))

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        if not ray.is_initialized():
            return
        for w in getattr(self, "workers", []):
            try:
                ray.kill(w, no_restart=True)
            except Exception as e:  # cleanup must not hide the real error
                log.warning("killing a trainer worker failed: %s", e)
        self.workers = []
        try:
            if getattr(self, "pg", None) is not None:
                remove_placement_group(self.pg)
        except Exception as e:
            log.warning("removing the trainer placement group failed: %s", e)
        self.pg = None
