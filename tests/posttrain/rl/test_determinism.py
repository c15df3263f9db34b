"""Reruns on one machine are identical (docs/reproducibility.md): two fresh GSPO runs with
the same config give the same metrics, step by step, and the same weights. The cheap test
uses the in-process HF generator; the engine test does the same through Ray + vLLM. A third
run with another seed must differ, so the comparison can fail at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain.core.config import load_config
from posttrain.core.devices import fast_bf16
from posttrain.rl import trainer as rl
from tests.posttrain.rl.test_trainer import PLUGIN, _overrides


def _volatile(key: str) -> bool:
    """Wall-clock, memory and timeout readings differ between reruns by nature; nothing else may."""
    return key == "time" or key.startswith(("time/", "mem/")) or key.endswith(("/seconds", "time_s", "/timeouts"))


def _stable(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if not _volatile(k)} for x in lines]


def _weights(summary: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(summary["final_model"]) / "model.safetensors"))


def _run(ov: list[str], out: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    summary = rl.run(load_config(rl.Config, None, ov), out)
    return _stable(out), _weights(summary)


def _assert_identical(a: tuple[list[dict], dict], b: tuple[list[dict], dict]) -> None:
    for x, y in zip(a[0], b[0], strict=True):
        diff = {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}
        assert not diff, f"step {x.get('step')}: reruns differ in {diff}"
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k]), f"weights differ in {k}"


def test_two_fresh_hf_runs_are_identical_and_a_new_seed_is_not(tiny_model, tiny_task, tmp_path):
    ov = _overrides(tiny_model, tiny_task, steps=3)
    first, second = _run(ov, tmp_path / "a"), _run(ov, tmp_path / "b")
    _assert_identical(first, second)
    other = _run([*ov, "train.seed=1"], tmp_path / "c")
    assert [x for x in other[0] if "reward/mean" in x] != [x for x in first[0] if "reward/mean" in x]


BF16 = ["model.dtype=bfloat16", "engine.dtype=bfloat16"]
needs_fast_bf16 = pytest.mark.skipif(not fast_bf16(), reason="no fast bf16 on this CPU (no AMX): emulated bf16 is "
                                                              "slow, and `make demo` runs fp32 here anyway")


@pytest.mark.slow
@needs_fast_bf16
def test_two_fresh_bf16_hf_runs_are_identical(tiny_model, tiny_task, tmp_path):
    """Mixed precision (bf16 working copy, fp32 masters, bf16 generator) keeps reruns identical:
    the condition for `make demo` to run bf16 on CPUs with AMX (issue 19's rerun check). It failed
    about 1 run in 6 on a loaded machine; the cause was not bf16: a reruns' loop
    (scripts/precision/reruns.py) caught run 1 of 8 differing only in `eval/failed` at step 0 (8
    against 0, every training metric and every final weight bit-identical), because the eval's
    reward worker, starved of CPU, missed its wall-clock start deadline three times. Starts are now
    bounded by the worker's CPU time (rewards/service.py; tests/rewards/test_fault_matrix.py)."""
    ov = [*_overrides(tiny_model, tiny_task, steps=3), *BF16]
    first = _run(ov, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["trainer/dtype"] == "bfloat16"
    _assert_identical(first, _run(ov, tmp_path / "b"))


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [[], pytest.param(BF16, id="bf16", marks=needs_fast_bf16)])
def test_two_fresh_vllm_runs_are_identical(tiny_model, tiny_task, tmp_path, dtype):
    ov = [f"model.path={tiny_model}", f"data.train={tiny_task[0]}", f"data.eval={tiny_task[1]}",
          "data.max_eval_rows=16", "rollout.backend=vllm", "rollout.prompts_per_step=8", "rollout.group_size=4",
          "rollout.max_new_tokens=6", "train.steps=2", "eval.every=0", "optim.lr=1e-3", "algo.eps_low=0.2",
          "algo.eps_high=0.2", "engine.max_model_len=256", "ray.num_cpus=2",
          f"reward.components=[{{name: '{PLUGIN}:digit_fraction'}}]", "reward.workers=1", *dtype]
    _assert_identical(_run(ov, tmp_path / "a"), _run(ov, tmp_path / "b"))
