"""The media verbs end to end: a visual task, a tiny VLM trained on its text, a SlowFast plan for a clip."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from posttrain.cli import app


def test_make_task_make_tiny_vlm_and_plan_a_clip(tmp_path):
    run = CliRunner().invoke
    r = run(app, ["data", "make-task", "--kind", "visual-video", "--out", str(tmp_path / "v.jsonl"), "--n", "6",
                  "--difficulty", "2", "--eval-out", str(tmp_path / "held" / "v_eval.jsonl"), "--n-eval", "2"])
    assert r.exit_code == 0, r.output
    assert "wrote 6 visual-video rows" in r.output
    r = run(app, ["make-tiny-model", "--vision", "--data", str(tmp_path / "v.jsonl"), "--out", str(tmp_path / "m"),
                  "--layers", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "posttrain_tiny.json").read_text())["family"] == "idefics3"

    row = json.loads((tmp_path / "v.jsonl").read_text().splitlines()[0])
    frames_dir = tmp_path / "v-media"
    clip = sorted(frames_dir.glob(f"{row['id']}-f*.png"))
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    for f in clip:
        (clip_dir / f.name).write_bytes(f.read_bytes())
    r = run(app, ["data", "video-plan", "--model", str(tmp_path / "m"), "--frames", str(clip_dir), "--fps", "2",
                  "--budget", "400", "--json"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert len(plan["frames"]) == len(clip) == 8 and plan["slow_frames"] == 1 + int(row["answer"])
    assert plan["visual_tokens"] == 7 * 8 and plan["total_tokens"] <= 400 and plan["marker_tokens"] > 0
    r = run(app, ["data", "video-plan", "--model", str(tmp_path / "m"), "--frames", str(clip_dir), "--budget", "20"])
    assert r.exit_code == 2 and "too small for 8 frames" in r.output
    r = run(app, ["data", "video-plan", "--model", str(tmp_path / "m"), "--budget", "20"])
    assert r.exit_code == 2 and "exactly one of --frames" in r.output
