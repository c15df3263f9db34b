"""Which precision a device computes fast: `dtype: auto` for the engines and the trainer.

`choose_dtype` is pure (a requested dtype, a device type and the CPU's flags in, a dtype
and the reason out) so tests feed it flag sets; `resolve_dtype` reads this machine.

Why only AMX counts as fast bf16 on a CPU (measured 2026-12-03, Intel Xeon with amx_bf16,
2 cores, torch 2.13 + oneDNN 3.12, 2048² `torch.mm`, 2 threads; docs/precision.md):

    kernels allowed                          fp32 GFLOP/s   bf16 GFLOP/s   bf16 / fp32
    all (AMX tiles)                               346          2,406          7.0x
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16           333            197          0.6x
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI           355             73          0.2x

With AMX switched off, the avx512_bf16 dot-product instructions alone make a bf16 matmul
slower than fp32 (plus the casts), so a CPU with avx512_bf16 but no amx_bf16 (Cooper
Lake, AMD Zen 4/5) runs `auto` in fp32. An explicit `bfloat16` still works there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import torch

# The CPU flags that matter for precision, reported with every benchmark figure.
PRECISION_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                   "amx_int8", "amx_fp16")
FAST_BF16_CPU_FLAG = "amx_bf16"
# Trainers compute these under autocast with fp32 master weights. float16 is not among them
# (it would need loss scaling): a float16 trainer loads and trains its weights in float16 as before.
MIXED_DTYPES = {"bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str  # float32, bfloat16 or float16
    reason: str

    def as_metrics(self, prefix: str) -> dict[str, str]:
        """`{prefix}/dtype`, `{prefix}/dtype_reason`: the run summary's record of the choice."""
        return {f"{prefix}/dtype": self.dtype, f"{prefix}/dtype_reason": self.reason}


def choose_dtype(requested: str, device_type: str, cpu_flags: Iterable[str] = (),
                 cuda_bf16: bool = True) -> DtypeChoice:
    """`auto` -> bfloat16 on CUDA (with bf16 support) and on CPUs with AMX, float32 elsewhere;
    any other value is kept as given."""
    if requested != "auto":
        return DtypeChoice(requested, "set explicitly")
    if device_type == "cuda":
        if cuda_bf16:
            return DtypeChoice("bfloat16", "auto: CUDA device with bf16 support")
        return DtypeChoice("float32", "auto: CUDA device without bf16 support")
    flags = set(cpu_flags)
    if FAST_BF16_CPU_FLAG in flags:
        return DtypeChoice("bfloat16", "auto: CPU has AMX (amx_bf16); bf16 matmuls run ~7x fp32 there")
    if "avx512_bf16" in flags:
        return DtypeChoice("float32", "auto: CPU has avx512_bf16 but no AMX; bf16 matmuls measured 0.6x fp32 "
                                      "without AMX, so fp32")
    return DtypeChoice("float32", "auto: CPU has no bf16 matrix unit (no amx_bf16)")


def choose_autocast_dtype(requested: str, device_type: str, cpu_flags: Iterable[str] = (),
                          cuda_bf16: bool = True) -> DtypeChoice:
    """`auto` for the TRL phases (sft, rft's SFT, mpo, rm), whose bf16 is transformers' torch
    autocast over the fp32 model: as `choose_dtype`, except that on a CPU `auto` keeps fp32 even
    with AMX. Measured on an AMX Xeon (docs/precision.md, "SFT in bf16"): the demo's SFT (0.85M
    parameters, configs/demo/sft.yaml) took 0.28 CPU s per step in bf16 against 0.26 in fp32 (no
    gain: at hidden 128 the casts cost what AMX saves), and TRL's GRPO step in bf16 was slower than
    its fp32 one on the 27.5M benchmark model. An explicit `bfloat16` still trains in bf16 there."""
    choice = choose_dtype(requested, device_type, cpu_flags, cuda_bf16)
    if requested == "auto" and device_type == "cpu" and choice.dtype == "bfloat16":
        return DtypeChoice("float32", "auto: TRL phase on CPU: transformers' bf16 autocast measured no faster than "
                                      "fp32 even with AMX (docs/precision.md), so fp32")
    return choice


def read_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo text."""
    model, flags = "unknown", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


@lru_cache(maxsize=1)
def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """This machine's CPU (model name, flags); empty flags where /proc/cpuinfo is missing."""
    try:
        return read_cpuinfo(Path(path).read_text())
    except OSError:
        return "unknown", frozenset()


def cpu_summary() -> dict[str, object]:
    """The CPU model and its precision-relevant flags (recorded with benchmark results)."""
    model, flags = cpu_info()
    return {"model": model, "flags": [f for f in PRECISION_FLAGS if f in flags]}


def resolve_dtype(requested: str, device: str | torch.device = "cpu",
                  cpu_flags: Iterable[str] | None = None, autocast_trainer: bool = False) -> DtypeChoice:
    """`choose_dtype` for this machine's device `device` (cpu, cuda, cuda:1, ...); `cpu_flags`
    stands in for this CPU's flags (what a config resolves to on another CPU). `autocast_trainer`:
    the choice for a TRL phase's trainer (`choose_autocast_dtype`)."""
    choose = choose_autocast_dtype if autocast_trainer else choose_dtype
    device_type = torch.device(device).type if str(device) != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    cuda_bf16 = device_type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return choose(requested, device_type, cpu_info()[1] if cpu_flags is None else cpu_flags, cuda_bf16)


def fast_bf16(device: str = "cpu") -> bool:
    """Whether `auto` picks bf16 on this machine's `device`."""
    return resolve_dtype("auto", device).dtype == "bfloat16"


def master_dtype(compute: str) -> str:
    """The dtype a trainer computing in `compute` keeps its weights (and optimizer state) in."""
    return "float32" if compute in MIXED_DTYPES else compute


def autocast(device: torch.device | str, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision for a fp32 model: under bfloat16, matmuls compute in bf16 while weights,
    gradients and optimizer state stay fp32; any other dtype is a no-op."""
    half = MIXED_DTYPES.get(dtype)
    if half is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=half)
