"""benchmarks without an engine: ratio statistics, the results-file contract and the
rendered docs agree with each other."""

from __future__ import annotations

import json

import pytest

from benchmarks import report, stats


def fake_results() -> dict:
    r: dict = {"details": {}}
    stats.merge_workload(r, "rollout", stats.ratio_stats("rollout_vs_hf", [2.0, 3.0, 2.5]), {
        "parameters": 27_471_360, "prompts": 64, "samples_per_prompt": 8, "new_tokens": 128,
        "engine_start_s": 20.0, "enforce_eager": False,
        "repeats": [{"repeat": i, "pool_tok_s": 2000.0 + i, "hf_tok_s": 800.0, "ratio": 2.5, "peak_flops": 2e11,
                     "peak_flops_after": 1.9e11, "model_flops": 1.1e11, "peak_fraction": 0.55,
                     "loadavg_1m_start": [1.0]} for i in range(3)]})
    r.update(stats.ratio_stats("rollout_peak_fraction", [0.5, 0.55, 0.6]))
    stats.merge_workload(r, "rewards", stats.ratio_stats("reward_vs_sequential", [1.9, 1.7, float("nan")]), {})
    stats.merge_workload(r, "memory", {"demo_peak_rss_gib": 5.5}, {})
    return r


def test_ratio_stats_median_min_max_and_nonfinite():
    assert stats.ratio_stats("a", [3.0, 1.0, 2.0, 10.0]) == {"a": 2.5, "a_min": 1.0, "a_max": 10.0, "a_n": 4}
    assert stats.ratio_stats("a", [1.0, None, float("inf")]) == {"a": 1.0, "a_min": 1.0, "a_max": 1.0, "a_n": 1}
    assert stats.ratio_stats("a", [None])["a"] is None


def test_target_met_respects_direction():
    assert stats.target_met("rollout_vs_hf", 2.7) is True
    assert stats.target_met("rollout_vs_hf", 2.69) is False
    assert stats.target_met("demo_peak_rss_gib", 7.9) is True
    assert stats.target_met("demo_peak_rss_gib", 8.1) is False
    assert stats.target_met("rl_step_vs_trl", None) is None


def test_results_file_contract(tmp_path):
    path = stats.write_results(tmp_path / "results.json", fake_results(), machine={"cpu_count": 2})
    data = json.loads(path.read_text())
    for key in ("rollout_vs_hf", "rollout_peak_fraction", "rl_step_vs_trl", "time_to_accuracy_gain_vs_trl",
                "time_to_accuracy_gain_vs_trl_long",
                "reward_vs_sequential", "demo_peak_rss_gib", "machine"):
        assert key in data
    assert (data["rollout_vs_hf"], data["rollout_vs_hf_min"], data["rollout_vs_hf_max"]) == (2.5, 2.0, 3.0)
    assert data["reward_vs_sequential"] == 1.8 and data["reward_vs_sequential_n"] == 2
    assert data["rl_step_vs_trl"] is None and data["targets"]["rl_step_vs_trl"]["met"] is None
    assert data["targets"]["rollout_vs_hf"]["met"] is False and data["targets"]["demo_peak_rss_gib"]["met"] is True
    assert set(data["details"]) == {"rollout", "rewards", "memory"}
    # a later single-workload run keeps the others
    again = stats.load_results(path)
    stats.merge_workload(again, "rl_step", stats.ratio_stats("rl_step_vs_trl", [1.0, 1.2, 1.1]), {})
    data2 = json.loads(stats.write_results(path, again).read_text())
    assert data2["rl_step_vs_trl"] == 1.1 and data2["rollout_vs_hf"] == 2.5 and data2["machine"] == {"cpu_count": 2}


def test_docs_agree_with_results(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ANALYSIS", tmp_path / "none.md")
    path = stats.write_results(tmp_path / "results.json", fake_results(), machine={"cpu_count": 2})
    data = json.loads(path.read_text())
    text = report.render(data, command="make bench")
    row = next(line for line in text.splitlines() if line.startswith("| `rollout_vs_hf`"))
    assert "| 2.500 | 2.000 | 3.000 | 3 | ≥ 2.7 | **missed** |" in row
    assert "| `demo_peak_rss_gib`" in text and "**met**" in text
    assert "## 1. Rollouts" in text and "27.5M-parameter" in text
    assert "## 2. RL step" not in text  # not measured: no section, "–" in the table
    assert next(line for line in text.splitlines() if line.startswith("| `rl_step_vs_trl`")).count("–") >= 4


def test_write_docs_without_matplotlib(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    out = report.write_docs(fake_results(), tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "img")
    assert out.read_text().startswith("# Benchmarks") and not (tmp_path / "docs" / "img").exists()


def test_plots_when_matplotlib_is_there(tmp_path):
    pytest.importorskip("matplotlib")
    made = report.plot(fake_results(), tmp_path)
    assert [p.split("/")[-1] for p in made] == ["bench_rollout.png"]


def test_ablation_rows_render(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ANALYSIS", tmp_path / "none.md")
    r = fake_results()
    variant = {"variant": "dynamic_sampling", "overrides": ["dynamic_sampling.enabled=true"], "sft_accuracy": 0.5,
               "final": 0.6, "gain": 0.1, "gain_per_min": 0.1, "steps": 70, "train_s": 60.0,
               "means": {"time/generate": 0.3, "time/update": 0.7, "rl/groups_kept": 20.0}, "loadavg_1m": [2.0]}
    stats.merge_workload(r, "ablation", {}, {"source": "x", "budget_s": 60.0, "eval_rows": 200,
                                              "variants": [variant]})
    text = report.render(json.loads(stats.write_results(tmp_path / "r.json", r).read_text()))
    row = next(line for line in text.splitlines() if line.startswith("| `dynamic_sampling`"))
    assert "dynamic_sampling.enabled=true" in row and "| 0.100 |" in row and "| 70 |" in row


def test_bf16_keys_absent_with_a_reason_where_bf16_is_slow(tmp_path):
    r = fake_results()
    r["cpu"] = {"model": "Intel Cascade Lake", "flags": ["avx512f", "avx512_vnni"]}
    r["skipped"] = stats.bf16_skips(False, "auto: CPU has no bf16 matrix unit (no amx_bf16)")
    data = json.loads(stats.write_results(tmp_path / "results.json", r, machine={"cpu_count": 2}).read_text())
    for key in stats.BF16_KEYS:
        assert key not in data and key not in data["targets"] and "no amx_bf16" in data["skipped"][key]
    assert data["cpu"]["flags"] == ["avx512f", "avx512_vnni"] and data["rollout_vs_hf"] == 2.5
    assert "Not measured on this machine: `bf16_rollout_vs_fp32`" in report.render(data)
    assert stats.bf16_skips(True, "auto: CPU has AMX") == {}


def test_bf16_rollout_keys_and_tables_where_bf16_is_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ANALYSIS", tmp_path / "none.md")
    r = fake_results()
    for rec in r["details"]["rollout"]["repeats"]:
        rec.update(pool_bf16_tok_s=6000.0, hf_bf16_tok_s=900.0, bf16_vs_fp32=3.0, bf16_vs_hf_best=6000.0 / 900.0,
                   bf16_peak_flops=2.0e12, bf16_peak_fraction=0.16)
    r.update(stats.ratio_stats("bf16_rollout_vs_fp32", [3.0, 3.0, 3.0]), skipped={},
             cpu={"model": "Xeon", "flags": ["amx_bf16"]})
    data = json.loads(stats.write_results(tmp_path / "results.json", r, machine={"cpu_count": 2}).read_text())
    assert data["bf16_rollout_vs_fp32"] == 3.0 and data["targets"]["bf16_rollout_vs_fp32"]["met"] is True
    assert data["bf16_rl_step_vs_trl_best"] is None and data["skipped"] == {}
    text = report.render(data)
    assert "### Rollouts in bf16" in text and "CPU: Xeon; precision flags: amx_bf16" in text


def test_a_second_page_links_its_own_plots_and_can_leave_the_analysis_out(tmp_path):
    pytest.importorskip("matplotlib")
    page = tmp_path / "docs" / "benchmarks-amx.md"
    text = report.write_docs(fake_results(), page, tmp_path / "docs" / "img" / "benchmarks-amx", analysis=None).read_text()
    assert "![bench_rollout](img/benchmarks-amx/bench_rollout.png)" in text
    assert (tmp_path / "docs" / "img" / "benchmarks-amx" / "bench_rollout.png").is_file()
    analysis = tmp_path / "a.md"
    analysis.write_text("## How to read this run\n\nhand-written")
    assert report.render(fake_results(), analysis=analysis).endswith("hand-written\n")
    assert "hand-written" not in report.render(fake_results(), analysis=None)
