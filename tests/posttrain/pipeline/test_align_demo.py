"""The align demo's data (SFT rows, held-out problems) and its multi-seed summary, without training."""

from __future__ import annotations

import json

import pytest

from posttrain.core.data import load_rows
from posttrain.pipeline import align_demo


def test_sft_data_shows_instructions_only_on_rl_problems(tmp_path):
    paths = align_demo.make_data(tmp_path, seed=1)
    sft, held = load_rows(paths["sft"]), {r["id"].rsplit("-if", 1)[0] for r in load_rows(paths["eval"])}
    unheeded = [r for r in sft if "-u" in r["id"]]
    assert len(held) == 20 and len(unheeded) == 80 * 5 and len(sft) == 100 * 20 + 80 * 5
    assert not {r["id"].rsplit("-u", 1)[0] for r in unheeded} & held  # held-out problems never carry instructions
    task, guard = load_rows(paths["task"]), load_rows(paths["guard"])
    assert len(task) == 70 and len(guard) == 30 and not {r["prompt"] for r in task} & {r["prompt"] for r in guard}
    answers = {r["id"]: r["answer"] for r in task + guard}
    for r in unheeded:
        assert len(r["prompt"]) > len("What is 9 + 9?") and answers[r["id"].rsplit("-u", 1)[0]] in r["answer"]
    bare = [r for r in unheeded if r["answer"] == answers[r["id"].rsplit("-u", 1)[0]]]
    assert 0.6 < len(bare) / len(unheeded) < 0.8  # styled at the rate of the rest of the SFT data (0.3)


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


def test_a_finished_seed_is_reused_only_with_the_same_config_and_data(tmp_path):
    from posttrain.core.run_dir import RunDir

    data = align_demo.make_data(tmp_path / "data", seed=0)
    cfg = align_demo.align_config(data, tmp_path / "sft", ["train.seed=0"])
    seed_dir = tmp_path / "seed-0"
    RunDir(seed_dir / "align", "align").start(cfg)
    (seed_dir / "summary.json").write_text(json.dumps({"seed": 0, "constraint_rate_after": 0.8}))
    assert align_demo.finished_summary(seed_dir, cfg) == {"seed": 0, "constraint_rate_after": 0.8}
    other = align_demo.align_config(data, tmp_path / "sft", ["train.seed=0", "algo.kl_coef=0.2"])
    assert align_demo.finished_summary(seed_dir, other) is None
    with data["train"].open("a") as f:  # same config, changed data file
        f.write(data["train"].read_text().splitlines()[0] + "\n")
    assert align_demo.finished_summary(seed_dir, cfg) is None
    align_demo.make_data(tmp_path / "data", seed=0)  # the same data again: reused; an interrupted run is not
    assert align_demo.finished_summary(seed_dir, cfg) is not None
    (seed_dir / "summary.json").write_text(json.dumps({"seed": 0, "constraint_rate_after": 0.8, "interrupted": True}))
    assert align_demo.finished_summary(seed_dir, cfg) is None
