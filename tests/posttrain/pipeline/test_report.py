"""The run report: plots embedded in one HTML file (checked in headless Chromium),
TensorBoard events, resumed steps counted once, `posttrain report` regenerates it."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from posttrain.pipeline.report import collect, failure_counts, hint_histograms, write_report

PLOTS = ["accuracy", "reward", "hints", "components", "wall"]


def _metrics(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"phase": "rl", "st')  # torn last line


def _rl_records(steps: int, base: float) -> list[dict]:
    out = [{"phase": "rl", "step": 0, "eval/accuracy": base}]
    for s in range(1, steps + 1):
        out.append({"phase": "rl", "step": s, "reward/mean": base + 0.02 * s, "reward/exact/mean": base + 0.02 * s,
                    "reward/exact/failed": 1.0 if s == 2 else 0.0, "reward/exact/timeouts": 0.0,
                    "hints/level_0": 10.0, "hints/level_1": 2.0, "hints/level_5": 1.0 if s > 2 else 0.0})
    out.append({"phase": "rl", "step": steps, "eval/accuracy": base + 0.1})
    return out


@pytest.fixture
def pipeline_run(tmp_path):
    run = tmp_path / "run"
    _metrics(run / "sft" / "metrics.jsonl", [{"phase": "sft", "step": 0, "eval/accuracy": 0.0},
                                             {"phase": "sft", "step": 10, "loss": 1.2},
                                             {"phase": "sft", "step": 20, "eval/accuracy": 0.3}])
    rl1 = _rl_records(4, 0.3)
    rl1.insert(2, {"phase": "rl", "step": 2, "reward/mean": 0.99})  # killed after step 2 ...
    _metrics(run / "rl1" / "metrics.jsonl", rl1)  # ... and resumed: step 2 logged again (last wins)
    _metrics(run / "filter" / "metrics.jsonl", [{"phase": "filter", "step": 0, "filter/mean_accuracy": 0.5}])
    _metrics(run / "rl2" / "metrics.jsonl", _rl_records(3, 0.4))
    state = {"stages": {
        "sft": {"kind": "sft", "status": "done", "wall_s": 30.0, "summary": {"eval/accuracy": 0.3}, "dir": str(run / "sft")},
        "rl1": {"kind": "rl", "status": "done", "wall_s": 40.0, "summary": {"accuracy_after_rl": 0.4,
                                                                            "trainer/dtype": "bfloat16",
                                                                            "engine/dtype": "bfloat16"}},
        "filter": {"kind": "filter", "status": "done", "wall_s": 5.0, "summary": {}},
        "rl2": {"kind": "rl", "status": "running", "wall_s": 12.5, "summary": {}},
    }}
    (run / "pipeline_state.json").write_text(json.dumps(state))
    return run


def test_collect_lays_stages_end_to_end_and_counts_resumed_steps_once(pipeline_run):
    stages = collect(pipeline_run)
    assert [(s.name, s.offset, s.steps) for s in stages] == [("sft", 0, 20), ("rl1", 20, 4), ("filter", 24, 0),
                                                              ("rl2", 24, 3)]
    xs, ys = stages[1].points("reward/mean")
    assert xs == [21, 22, 23, 24] and ys[1] == pytest.approx(0.34)  # the resumed step's value, once
    assert hint_histograms(stages) == {"rl1": {0: 40.0, 1: 8.0, 5: 2.0}, "rl2": {0: 30.0, 1: 6.0, 5: 1.0}}
    assert failure_counts(stages)["rl1"] == {"reward/exact/failed": 1.0, "reward/exact/timeouts": 0.0}


def test_report_html_embeds_every_plot_and_tensorboard_has_the_scalars(pipeline_run):
    path = write_report(pipeline_run)
    text = path.read_text()
    for name in PLOTS:
        m = re.search(rf'<img id="plot-{name}" alt="{name}" src="data:image/png;base64,([^"]+)"', text)
        assert m, name
        assert base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in text.replace("<!doctype html>", "")  # self-contained: nothing fetched
    assert re.search(r"<td>rl1</td><td>rl</td><td>done</td><td>4</td><td>40.0%</td><td>40</td>"
                     r"<td>trainer bfloat16, engine bfloat16</td>", text)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((pipeline_run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(pipeline_run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"rl1/reward/mean", "sft/eval/accuracy", "rl2/hints/level_5", "pipeline/accuracy_after_stage"} <= set(tags)
    assert [e.step for e in acc.Scalars("rl1/reward/mean")] == [21, 22, 23, 24]
    write_report(pipeline_run)  # regenerating replaces the events instead of duplicating them
    assert len(list((pipeline_run / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_report_of_a_single_phase_run(tmp_path):
    _metrics(tmp_path / "metrics.jsonl", _rl_records(3, 0.2))
    (tmp_path / "summary.json").write_text(json.dumps({"accuracy_after_rl": 0.3, "rl_wall_s": 9.0}))
    text = write_report(tmp_path, tensorboard=False).read_text()
    assert text.count("data:image/png;base64,") == len(PLOTS)


def test_cli_regenerates_the_report(pipeline_run):
    from typer.testing import CliRunner

    from posttrain.cli import app

    res = CliRunner().invoke(app, ["report", str(pipeline_run)])
    assert res.exit_code == 0, res.output
    assert (pipeline_run / "report.html").is_file() and res.output.strip().endswith("report.html")


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does it)")
def test_report_renders_in_headless_chromium(pipeline_run, tmp_path):
    """Every plot decodes and has a size in a real browser (naturalWidth > 0), offline."""
    html = write_report(pipeline_run, tensorboard=False).read_text()
    probe = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-images', "
             "[...document.images].map(i => i.id + ':' + i.naturalWidth + 'x' + i.naturalHeight).join(',')));"
             "</script></body>")
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    out = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    m = re.search(r'data-images="([^"]*)"', out.stdout)
    assert m, f"no probe result in the DOM (rc {out.returncode}): {out.stderr[-2000:]}"
    sizes = dict(item.split(":") for item in m.group(1).split(","))
    assert sorted(sizes) == sorted(f"plot-{p}" for p in PLOTS)
    for name, size in sizes.items():
        w, h = map(int, size.split("x"))
        assert w > 300 and h > 100, (name, size)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1200,2400", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"


def test_the_pipeline_summary_gives_a_filter_stage_its_models_accuracy(pipeline_run):
    (pipeline_run / "summary.json").write_text(json.dumps({"stages": [
        {"name": "sft", "kind": "sft", "accuracy": 0.3, "model": "m0"},
        {"name": "rl1", "kind": "rl", "accuracy": 0.4, "model": "m1"},
        {"name": "filter", "kind": "filter", "accuracy": 0.4, "model": "m1", "dtype": {"engine": "float32"}}]}))
    text = write_report(pipeline_run, tensorboard=False).read_text()
    assert re.search(r"<td>filter</td><td>filter</td><td>done</td><td>0</td><td>40.0%</td><td>5</td>"
                     r"<td>engine float32</td>", text)
