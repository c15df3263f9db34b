"""Spread over seeds and the rerun check (posttrain/pipeline/spread.py) without training: the
runs themselves are replaced by canned results."""

from __future__ import annotations

import json

import pytest

from posttrain.pipeline import spread
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


def test_rerun_check_against_recorded_results(monkeypatch, tmp_path):
    rec = tmp_path / "demo.json"
    rec.write_text(json.dumps({"per_seed": [{"seed": 0, "stages": {"sft": 0.425, "rl1": 0.69}}]}))
    monkeypatch.setattr(spread, "run_pipeline_seed", lambda d, s, c, o: {"seed": s, "stages": {"sft": 0.425,
                                                                                              "rl1": 0.665}})
    assert spread.main(["check", "--against", str(rec), "--run-root", str(tmp_path)]) == 1
    with pytest.raises(SystemExit, match="no seed 3"):
        spread.main(["check", "--seed", "3", "--against", str(rec), "--run-root", str(tmp_path)])


def test_demo_spread_writes_per_stage_mean_min_max(monkeypatch, tmp_path):
    acc = {0: {"sft": 0.4, "rl1": 0.6}, 1: {"sft": 0.5, "rl1": 0.7}}
    monkeypatch.setattr(spread, "run_pipeline_seed", lambda d, s, c, o: {"seed": s, "stages": acc[s]})
    out = tmp_path / "demo.json"
    assert spread.main(["demo", "--seeds", "0", "1", "--out", str(out), "--run-root", str(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert r["command"] == "make demo" and r["seeds"] == [0, 1] and r["machine"]["cpu"]
    assert r["stages"]["rl1"] == {"mean": 0.65, "min": 0.6, "max": 0.7, "n": 2}
    acc[2] = {"sft": 0.6, "rl1": 0.8}
    assert spread.main(["demo", "--seeds", "2", "--add", "--out", str(out), "--run-root", str(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert r["seeds"] == [0, 1, 2] and r["stages"]["sft"] == {"mean": 0.5, "min": 0.4, "max": 0.6, "n": 3}


def test_results_say_which_dtype_they_were_measured_in(monkeypatch, tmp_path):
    """The runs' own per-stage dtypes are kept per seed and summed up in `dtype`; `--dtype float32` (or
    auto) passes overrides that set every trainer and engine; with no --out, bf16 results go to demo-bf16.json."""
    bf16 = {"sft": {"trainer": "bfloat16"}, "rl1": {"trainer": "bfloat16", "engine": "bfloat16"}}
    seen = []

    def run(d, s, c, o):
        seen.append(o)
        return {"seed": s, "stages": {"sft": 0.4, "rl1": 0.6}, "dtypes": bf16}

    monkeypatch.setattr(spread, "run_pipeline_seed", run)
    out = tmp_path / "demo.json"
    assert spread.main(["demo", "--seeds", "0", "--out", str(out), "--run-root", str(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert (r["dtype"], r["dtype_setting"], r["per_seed"][0]["dtypes"]) == ("bfloat16", "config", bf16)
    assert isinstance(r["machine"]["flags"], list) and seen[-1] == []
    assert spread.main(["demo", "--seeds", "0", "--dtype", "auto", "--out", str(tmp_path / "a.json"),
                        "--run-root", str(tmp_path)]) == 0
    assert seen[-1] == spread.dtype_overrides("auto") and "defaults.rl.engine.dtype=auto" in seen[-1]
    assert spread.main(["demo", "--seeds", "0", "--dtype", "float32", "--out", str(out),
                        "--run-root", str(tmp_path)]) == 0
    assert seen[-1] == spread.dtype_overrides("float32") and "defaults.filter.engine.dtype=float32" in seen[-1]
    with pytest.raises(SystemExit, match="another config, overrides or --dtype"):
        spread.main(["demo", "--seeds", "1", "--add", "--out", str(out), "--run-root", str(tmp_path)])
    assert spread.results_path("bfloat16").name == "demo-bf16.json"
    assert spread.results_path("float32").name == "demo.json"


def test_rerun_check_refuses_results_of_another_dtype(monkeypatch, tmp_path):
    rec = tmp_path / "demo.json"
    rec.write_text(json.dumps({"dtype": "float32", "per_seed": [{"seed": 0, "stages": {"sft": 0.425}}]}))
    monkeypatch.setattr(spread, "planned_dtype", lambda c, o: "bfloat16")
    with pytest.raises(SystemExit, match="recorded in float32, this run would be bfloat16"):
        spread.main(["check", "--against", str(rec), "--run-root", str(tmp_path)])


def test_reuse_records_a_finished_run_instead_of_rerunning(monkeypatch, tmp_path):
    done = tmp_path / "seed-0"
    done.mkdir()
    (done / "summary.json").write_text(json.dumps({"wall_s": 9.0, "stages": [
        {"name": "sft", "accuracy": 0.4, "dtype": {"trainer": "bfloat16"}}]}))
    monkeypatch.setattr(spread, "run_pipeline_seed", lambda d, s, c, o: {"seed": s, "stages": {"sft": 0.5}})
    out = tmp_path / "r.json"
    assert spread.main(["demo", "--seeds", "0", "1", "--reuse", "--out", str(out), "--run-root", str(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert [p["stages"]["sft"] for p in r["per_seed"]] == [0.4, 0.5]  # seed 0 read, seed 1 run
    assert r["per_seed"][0]["dtypes"] == {"sft": {"trainer": "bfloat16"}} and r["dtype"] == "bfloat16"
