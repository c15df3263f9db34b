"""dtype: auto, decided from flag sets (no machine needed), and mixed-precision autocast."""

from __future__ import annotations

import pytest
import torch

from posttrain.core.devices import (DtypeChoice, autocast, choose_autocast_dtype, choose_dtype, cpu_summary,
                                    master_dtype, read_cpuinfo, resolve_dtype)

SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                   "amx_int8"}
ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
CASCADE_LAKE = {"avx2", "avx512f", "avx512_vnni"}


@pytest.mark.parametrize("flags, want", [
    (SAPPHIRE_RAPIDS, "bfloat16"),
    (ZEN4, "float32"),  # avx512_bf16 without AMX: measured slower than fp32
    (CASCADE_LAKE, "float32"),
    (set(), "float32"),
])
def test_auto_on_cpu_follows_amx(flags, want):
    choice = choose_dtype("auto", "cpu", flags)
    assert choice.dtype == want
    assert choice.reason.startswith("auto: ")


def test_auto_on_cuda_is_bf16_when_supported_whatever_the_cpu():
    assert choose_dtype("auto", "cuda", CASCADE_LAKE, cuda_bf16=True).dtype == "bfloat16"
    assert choose_dtype("auto", "cuda", SAPPHIRE_RAPIDS, cuda_bf16=False).dtype == "float32"


@pytest.mark.parametrize("explicit", ["float32", "bfloat16", "float16"])
def test_explicit_dtypes_are_kept_everywhere(explicit):
    for flags in (SAPPHIRE_RAPIDS, CASCADE_LAKE):
        assert choose_dtype(explicit, "cpu", flags) == DtypeChoice(explicit, "set explicitly")


def test_reasons_differ_between_avx512_bf16_and_no_bf16():
    assert "avx512_bf16 but no AMX" in choose_dtype("auto", "cpu", ZEN4).reason
    assert "avx512_bf16" not in choose_dtype("auto", "cpu", CASCADE_LAKE).reason


def test_trl_phases_keep_fp32_under_auto_on_any_cpu_but_not_on_cuda_or_when_asked():
    """TRL's bf16 is autocast over the fp32 model, measured no faster than fp32 on CPU even with AMX
    (docs/precision.md): `auto` keeps those phases fp32 on a CPU; CUDA and explicit values as usual."""
    for flags in (SAPPHIRE_RAPIDS, ZEN4, CASCADE_LAKE):
        choice = choose_autocast_dtype("auto", "cpu", flags)
        assert choice.dtype == "float32" and choice.reason.startswith("auto: ")
    assert "TRL" in choose_autocast_dtype("auto", "cpu", SAPPHIRE_RAPIDS).reason
    assert choose_autocast_dtype("auto", "cuda", CASCADE_LAKE).dtype == "bfloat16"
    assert choose_autocast_dtype("bfloat16", "cpu", CASCADE_LAKE) == DtypeChoice("bfloat16", "set explicitly")
    assert resolve_dtype("auto", "cpu", SAPPHIRE_RAPIDS, autocast_trainer=True).dtype == "float32"
    assert resolve_dtype("auto", "cpu", SAPPHIRE_RAPIDS).dtype == "bfloat16"


def test_read_cpuinfo_takes_the_first_processor():
    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx512f amx_bf16\n\n"
            "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    model, flags = read_cpuinfo(text)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == {"fpu", "avx512f", "amx_bf16"}
    assert read_cpuinfo("") == ("unknown", frozenset())


def test_this_machine_resolves_and_reports():
    choice = resolve_dtype("auto", "cpu")
    assert choice.dtype in ("float32", "bfloat16")
    summary = cpu_summary()
    assert isinstance(summary["model"], str) and set(summary["flags"]) <= {
        "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16"}
    assert choice.as_metrics("trainer") == {"trainer/dtype": choice.dtype, "trainer/dtype_reason": choice.reason}


def test_master_weights_stay_fp32_under_bf16():
    assert master_dtype("bfloat16") == "float32"
    assert master_dtype("float32") == "float32"
    assert master_dtype("float16") == "float16"  # no fp16 autocast: fp16 loads as before


def test_autocast_computes_linear_in_bf16_and_keeps_fp32_weights():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with autocast("cpu", "bfloat16"):
        y = lin(x)
    assert y.dtype == torch.bfloat16 and lin.weight.dtype == torch.float32
    with autocast("cpu", "float32"):
        assert lin(x).dtype == torch.float32
