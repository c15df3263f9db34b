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
    # what the rollouts send (core/video.plan_video): on this fixed-size encoder, slow frames whole and
    # each run of fast frames in 2x2 mosaics; every frame shown once, in order
    images = plan["images"]
    assert [f for im in images for f in im["frames"]] == list(range(len(clip))) and len(clip) == 8
    assert plan["slow_frames"] == 1 + int(row["answer"]) == sum(im["slow"] for im in images)
    assert all(im["mosaic"] == (not im["slow"]) and len(im["frames"]) <= 4 for im in images)
    assert plan["mosaics"] >= 1 and len(images) < len(clip) and plan["grid"] == 2
    assert plan["visual_tokens"] == 7 * len(images) and plan["total_tokens"] <= 400 and plan["marker_tokens"] > 0
    assert images[0]["marker"] == "<slow 0.0s>" and plan["budget"] == 400
    # the text form: one line per image, the summary, the prompt the engines get
    r = run(app, ["data", "video-plan", "--model", str(tmp_path / "m"), "--frames", str(clip_dir), "--fps", "2",
                  "--budget", "400"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == len(images) + 2 and "(2x2 mosaic)" in r.output
    assert lines[-2].endswith(f"= {plan['total_tokens']} of 400")
    assert lines[-1] == "prompt: " + "".join(im["marker"] + "<image>" for im in images)
    # no budget (rollout.video_token_budget: null, SFT rows): every frame whole
    r = run(app, ["data", "video-plan", "--model", str(tmp_path / "m"), "--frames", str(clip_dir), "--fps", "2",
                  "--json"])
    assert r.exit_code == 0, r.output
    whole = json.loads(r.output)
    assert [im["frames"] for im in whole["images"]] == [[i] for i in range(8)] and whole["mosaics"] == 0
    r = run(app, ["data", "video-plan", "--model", str(tmp_path / "m"), "--frames", str(clip_dir), "--budget", "20"])
    assert r.exit_code == 2 and "token budget 20 is too small for this clip" in r.output
    r = run(app, ["data", "video-plan", "--model", str(tmp_path / "m"), "--budget", "20"])
    assert r.exit_code == 2 and "exactly one of --frames" in r.output
