"""Spread over seeds and the rerun check (posttrain/pipeline/spread.py), and the align demo's
multi-seed summary, without training: the runs themselves are replaced by canned results."""

from __future__ import annotations

import json

import pytest

from posttrain.pipeline import align_demo, spread
from posttrain.pipeline.config import load_pipeline_config, resolve, with_data_defaults


def test_stats_and_spread_per_stage():
    per_seed = [{"seed": 0, "stages": {"sft": 0.425, "rl1": 0.69}},
                {"seed": 1, "stages": {"sft": 0.465, "rl1": 0.615}},
                {"seed": 2, "stages": {"sft": 0.445, "rl1": None}}]  # a stage that reported nothing
    s = spread.spread(per_seed)
    assert s["seeds"] == [0, 1, 2]
    assert s["stages"]["sft"] == {"mean": 0.445, "min": 0.425, "max": 0.465, "n": 3}
    assert s["stages"]["rl1"] == {"mean": 0.6525, "min": 0.615, "max": 0.69, "n": 2}


def test_seed_0_is_make_demo_and_another_seed_changes_every_stage(tmp_path):
    def hashes(ov):
        pipe = with_data_defaults(load_pipeline_config(spread.KEYE, ov), tmp_path)
        return [st.hash for st in resolve(pipe, tmp_path)]

    plain = hashes([])
    assert hashes(spread.seed_overrides(0)) == plain
    assert all(a != b for a, b in zip(hashes(spread.seed_overrides(1)), plain, strict=True))


@pytest.mark.parametrize("second, code", [({"sft": 0.425, "rl1": 0.69}, 0), ({"sft": 0.425, "rl1": 0.695}, 1)])
def test_rerun_check_fails_when_a_stage_differs(monkeypatch, tmp_path, capsys, second, code):
    results = iter([{"sft": 0.425, "rl1": 0.69}, second])
    monkeypatch.setattr(spread, "run_pipeline_seed", lambda d, s, c, o: {"seed": s, "stages": next(results)})
    assert spread.main(["check", "--run-root", str(tmp_path)]) == code
    assert ("reruns differ: rl1" in capsys.readouterr().out) == bool(code)


def test_demo_spread_writes_per_stage_mean_min_max(monkeypatch, tmp_path):
    acc = {0: {"sft": 0.4, "rl1": 0.6}, 1: {"sft": 0.5, "rl1": 0.7}}
    monkeypatch.setattr(spread, "run_pipeline_seed", lambda d, s, c, o: {"seed": s, "stages": acc[s]})
    out = tmp_path / "demo.json"
    assert spread.main(["demo", "--seeds", "0", "1", "--out", str(out), "--run-root", str(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert r["command"] == "make demo" and r["seeds"] == [0, 1] and r["machine"]["cpu"]
    assert r["stages"]["rl1"] == {"mean": 0.65, "min": 0.6, "max": 0.7, "n": 2}


def test_align_demo_over_seeds_keeps_the_keys_and_adds_seeds(monkeypatch, tmp_path):
    def fake(run_dir, sft_ov, align_ov, seed, sft_seed=None, sft_dir=None):
        return {"seed": seed, "constraint_rate_before": 0.0, "constraint_rate_after": 0.3 + 0.1 * seed,
                "task_accuracy_before": 1.0, "task_accuracy_after": 1.0,
                "constrained_task_accuracy_after": 0.9 + 0.02 * seed, "guard": {"tripped_at_step": None},
                "final_model": str(run_dir / "align" / "final")}

    monkeypatch.setattr(align_demo, "run_demo", fake)
    s = align_demo.run_seeds(tmp_path, [0, 1, 2])
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(s))
    assert [x["seed"] for x in saved["seeds"]] == [0, 1, 2]
    assert set(fake(tmp_path, [], [], 0)) <= set(saved)  # every per-seed key is kept at the top
    assert saved["constraint_rate_after"] == pytest.approx(0.4)
    assert saved["spread"]["constrained_task_accuracy_after"] == pytest.approx({"mean": 0.92, "min": 0.9, "max": 0.94, "n": 3})
    assert saved["guard"] == {"tripped_at_step": None}  # equal in every seed: kept as is
    assert len(saved["final_model"]) == 3  # differs per seed: the list
