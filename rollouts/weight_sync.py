"""Streamed, verified weight sync: the pure parts (bucket plan, packing, checksums) and
send / receive over a torch.distributed process group that the caller opened.

The trainer (rank 0 of a small *separate* group, never the default one, so a sharded
trainer's own group is untouched) packs its parameters into size-bounded byte buckets
and broadcasts them one at a time; each engine (ranks 1..N) receives a bucket, loads it
and checksums what it handed to its loader. The trainer compares the engines' checksums
with its own: a corrupted or partially applied sync is an error, not a silent mix.

Buckets never split a layer (all tensors whose names share the outermost numeric index,
e.g. `model.layers.3.*`): vLLM's in-place reload processes a layer once all of its
weights have arrived (fused qkv / gate_up), and keeps the old kernel tensors of layers a
bucket does not touch. A layer larger than the bucket limit travels alone.

The sender takes an iterable of (name, tensor) in plan order, so a sharded trainer's
rank 0 can feed it tensors as it gathers them (FSDP `full_tensor()`), never holding more
than one bucket beyond its shard.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist

ALIGN = 64  # bytes: every tensor starts at an offset any dtype can view


class WeightSyncError(RuntimeError):
    """A weight sync that did not install the intended weights on every engine."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # torch dtype name, e.g. "float32"
    shape: tuple[int, ...]
    offset: int = 0  # bytes into its bucket

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()


@dataclass(frozen=True)
class Bucket:
    index: int
    nbytes: int  # a multiple of ALIGN
    tensors: tuple[TensorSpec, ...]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def layer_key(name: str) -> str:
    """The layer a parameter belongs to: the name up to its outermost numeric segment
    ('model.layers.3.mlp.up_proj.weight' -> 'model.layers.3'); '' for un-indexed names
    (embeddings, final norm, lm_head)."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[:i + 1])
    return ""


def split_aliases(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """(the tensors with their own storage, {name: [names that alias it]}): a tied `lm_head.weight`
    is the embedding's storage, so it travels once and the receiver hands it to the loader under
    both names (vLLM's reload needs both)."""
    first: dict[tuple[int, int, tuple[int, ...]], str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, list[str]] = {}
    for k, v in state_dict.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if v.numel() and key in first:
            aliases.setdefault(first[key], []).append(k)
        else:
            first[key] = k
            unique[k] = v
    return unique, aliases


def tensor_specs(named: Iterable[tuple[str, torch.Tensor]], dtype: str | None = None) -> list[TensorSpec]:
    """Specs of a state dict's tensors; floating tensors as `dtype` when given (the engines' dtype)."""
    return [TensorSpec(k, (dtype if dtype and v.is_floating_point() else str(v.dtype).removeprefix("torch.")),
                       tuple(v.shape)) for k, v in named]


def plan_buckets(specs: Sequence[TensorSpec], bucket_bytes: int) -> list[Bucket]:
    """Pack tensors, in order, into buckets of at most `bucket_bytes` (after alignment), whole
    layers at a time. A layer bigger than the limit gets a bucket of its own.

    >>> s = [TensorSpec("a.0.w", "float32", (16,)), TensorSpec("a.0.b", "float32", (16,)),
    ...      TensorSpec("a.1.w", "float32", (16,))]
    >>> [[t.name for t in b.tensors] for b in plan_buckets(s, 128)]
    [['a.0.w', 'a.0.b'], ['a.1.w']]
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {bucket_bytes} bytes")
    layers: list[list[TensorSpec]] = []
    for s in specs:
        if layers and layer_key(layers[-1][-1].name) == layer_key(s.name):
            layers[-1].append(s)
        else:
            layers.append([s])
    buckets: list[list[TensorSpec]] = []
    size = 0
    for layer in layers:
        n = sum(_align(s.nbytes) for s in layer)
        if not buckets or size + n > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].extend(layer)
        size += n
    out = []
    for i, group in enumerate(buckets):
        placed, off = [], 0
        for s in group:
            placed.append(TensorSpec(s.name, s.dtype, s.shape, off))
            off += _align(s.nbytes)
        out.append(Bucket(i, off, tuple(placed)))
    return out


def checksum(buf: torch.Tensor) -> tuple[int, int]:
    """Two integers over a bucket's bytes, read as int64 words in 8 contiguous chunks: the sum
    of the chunk sums and their position-weighted sum, so a changed, zeroed or missing word
    and a reordering of chunks change it. Integer arithmetic (wrapping), so sender and
    receiver agree bit for bit; one contiguous pass over memory."""
    chunks = buf.view(torch.int64).view(8, -1).sum(1)  # (8,) contiguous reductions: fast
    return int(chunks.sum()), int((chunks * torch.arange(1, 9, dtype=torch.int64)).sum())


def views(bucket: Bucket, buf: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The bucket's tensors as views into its byte buffer (no copy)."""
    return [(s.name, buf[s.offset:s.offset + s.nbytes].view(getattr(torch, s.dtype)).view(s.shape))
            for s in bucket.tensors]


def pack(bucket: Bucket, tensors: dict[str, torch.Tensor], buf: torch.Tensor) -> torch.Tensor:
    """Copy (and cast) the bucket's tensors into `buf[:bucket.nbytes]`; padding is zeroed."""
    out = buf[:bucket.nbytes]
    out.zero_()
    for name, view in views(bucket, out):
        view.copy_(tensors[name].detach())
    return out


def open_group(backend: str, store: Any, rank: int, world_size: int, timeout_s: float) -> Any:
    """A process group of its own over `store` (not the default group, so it never clashes with
    a trainer's): gloo on CPU, nccl on GPU. Every collective on it is bounded by `timeout_s`."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.PrefixStore("posttrain-weights/", store)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)
    if backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world_size, opts)
    raise ValueError(f"unknown weight-sync backend {backend!r}; use 'gloo' (CPU) or 'nccl' (GPU)")


def server_store(host: str, world_size: int, timeout_s: float) -> Any:
    """The rendezvous store the sender (rank 0) serves on a free port (`store.port`)."""
    return dist.TCPStore(host, 0, world_size, True, timeout=datetime.timedelta(seconds=timeout_s),
                         wait_for_workers=False)


def client_store(host: str, port: int, world_size: int, timeout_s: float) -> Any:
    return dist.TCPStore(host, port, world_size, False, timeout=datetime.timedelta(seconds=timeout_s))


def _start_broadcast(group: Any, buf: torch.Tensor) -> Any:
    """Start broadcasting `buf` from rank 0; the transfer runs on the backend's threads while the
    caller packs or loads another bucket. `.wait(timeout)` on the result finishes it."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([buf], opts)


def _finish(work: Any, timeout_s: float) -> None:
    work.wait(datetime.timedelta(seconds=timeout_s))


def _as_bytes(bucket: Bucket, got: dict[str, torch.Tensor], device: str) -> torch.Tensor | None:
    """The bucket's bytes without packing, when it is one contiguous tensor already in its dtype on
    `device` that fills it (a big embedding travels alone): one copy fewer on the sender."""
    if len(bucket.tensors) != 1:
        return None
    spec, t = bucket.tensors[0], got[bucket.tensors[0].name]
    if (str(t.dtype).removeprefix("torch.") != spec.dtype or not t.is_contiguous() or t.device.type != device
            or spec.nbytes != bucket.nbytes):
        return None
    return t.detach().reshape(-1).view(torch.uint8)


def send_buckets(named: Iterable[tuple[str, torch.Tensor]], plan: Sequence[Bucket], group: Any,
                 timeout_s: float, device: str = "cpu") -> list[tuple[int, int]]:
    """Rank 0: broadcast the plan's buckets, filled from `named` (in plan order), and return
    each bucket's checksum. Bucket k+1 is packed while bucket k is in flight (two packing
    buffers, used in turn), so at most two buckets of tensors are held at a time; a bucket that
    is one tensor in the engines' dtype is sent from the tensor itself."""
    order = [s.name for b in plan for s in b.tensors]
    bufs: list[torch.Tensor | None] = [None, None]  # packing buffers, grown to the largest packed bucket
    sums, in_flight = [], None
    it = iter(named)
    try:
        for k, bucket in enumerate(plan):
            got: dict[str, torch.Tensor] = {}
            for s in bucket.tensors:
                name, tensor = next(it, (None, None))
                if name != s.name:
                    raise WeightSyncError(f"weight stream out of plan order: expected {s.name!r} "
                                          f"(#{order.index(s.name)}), got {name!r}")
                got[name] = tensor
            out = _as_bytes(bucket, got, device)
            if out is None:
                buf = bufs[k % 2]  # not the one in flight
                if buf is None or buf.numel() < bucket.nbytes:
                    bufs[k % 2] = None  # free the smaller one first
                    bufs[k % 2] = buf = torch.empty(bucket.nbytes, dtype=torch.uint8, device=device)
                out = pack(bucket, got, buf)
            sums.append(checksum(out.cpu() if out.device.type != "cpu" else out))
            if in_flight is not None:
                _finish(in_flight[0], timeout_s)
            in_flight = (_start_broadcast(group, out), out, got)  # keeps the tensors alive until sent
            del got, out
    finally:
        if in_flight is not None:
            _finish(in_flight[0], timeout_s)
    return sums


def receive_buckets(plan: Sequence[Bucket], group: Any, load: Callable[[Iterator[tuple[str, torch.Tensor]]], Any],
                    timeout_s: float, device: str = "cpu", corrupt_bucket: int | None = None,
                    timings: dict[str, float] | None = None, aliases: dict[str, list[str]] | None = None
                    ) -> list[tuple[int, int]]:
    """Ranks 1..N: call `load` once with an iterator of (name, tensor) that yields each bucket
    as the loader reaches it (so the loader's per-load setup runs once), and return the checksum
    of every bucket the loader consumed entirely. Bucket k+1 is received while the loader works
    on bucket k. Buckets it left unread are still received (the sender is not left hanging) but
    not counted, so `verify` reports a partial apply. `corrupt_bucket` flips a byte of that
    bucket before the loader sees it (a test hook standing for a transport or load fault).
    `timings` gets the seconds spent waiting for buckets and checksumming, and the rest (loading).
    `aliases` ({name: [other names]}, from `split_aliases`) hands a received tensor to the loader
    under its other names too."""
    sums: list[tuple[int, int]] = []
    spent = {"receive_s": 0.0, "checksum_s": 0.0}
    posted: list[tuple[Any, torch.Tensor]] = []  # (work, buffer) of every bucket asked for, in order
    done = [0]  # buckets whose receive finished

    def post() -> None:
        if len(posted) < len(plan):
            out = torch.empty(plan[len(posted)].nbytes, dtype=torch.uint8, device=device)  # fresh: the loader may keep views
            posted.append((_start_broadcast(group, out), out))

    def receive() -> torch.Tensor:
        k = done[0]
        work, out = posted[k]
        t0 = time.perf_counter()
        _finish(work, timeout_s)
        spent["receive_s"] += time.perf_counter() - t0
        posted[k] = (None, out)
        done[0] += 1
        if corrupt_bucket == plan[k].index:
            out[0] ^= 0xFF
        return out

    def stream() -> Iterator[tuple[str, torch.Tensor]]:
        for bucket in plan:
            out = receive()
            post()  # the next bucket travels while this one loads
            for name, tensor in views(bucket, out):
                yield name, tensor
                for alias in (aliases or {}).get(name, ()):
                    yield alias, tensor
            t0 = time.perf_counter()  # the loader asked past this bucket's last tensor: it took them all
            sums.append(checksum(out.cpu() if out.device.type != "cpu" else out))
            spent["checksum_s"] += time.perf_counter() - t0
            posted[done[0] - 1] = (None, None)  # the loader holds what it kept

    t_all = time.perf_counter()
    post()
    it = stream()
    try:
        load(it)
    finally:  # also when the loader raised: receive what it left, so no rank waits on this one
        it.close()
        while done[0] < len(plan):
            post()
            receive()
            posted[done[0] - 1] = (None, None)
    if timings is not None:
        timings.update(spent, load_s=time.perf_counter() - t_all - spent["receive_s"] - spent["checksum_s"])
    return sums


def verify(expected: Sequence[tuple[int, int]], reports: dict[str, Any]) -> None:
    """Compare every engine's per-bucket checksums with the sender's; raise naming the engines
    that loaded something else, or fewer buckets (a partial apply)."""
    bad = []
    for engine, got in reports.items():
        got = [tuple(x) for x in got]
        if len(got) != len(expected):
            bad.append(f"{engine} applied {len(got)} of {len(expected)} buckets")
            continue
        wrong = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
        if wrong:
            bad.append(f"{engine} loaded bucket(s) {wrong} with checksums that differ from the trainer's")
    if bad:
        raise WeightSyncError("weight sync verification failed: " + "; ".join(bad))
