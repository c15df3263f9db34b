"""The CLI never silently overwrites: a non-empty --run-dir / existing --out is refused
without --resume or --force; a resume refuses a changed config (even via --config)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.core.run_dir import RunDir

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# A valid config of each phase verb (the run-dir check comes after the config is validated).
PHASE_CONFIGS = {"sft": ["--config", CONFIGS / "tiny" / "sft.yaml"], "rl": [],
                 "mpo": ["--config", CONFIGS / "tiny" / "mpo.yaml"], "rm": ["--config", CONFIGS / "tiny" / "rm.yaml"],
                 "rft": ["--config", CONFIGS / "tiny" / "rft.yaml"], "filter": ["data.prompts=p.jsonl"],
                 "align": ["--config", CONFIGS / "tiny" / "align.yaml"]}


def _invoke(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


def test_make_task_refuses_bad_counts_same_files_and_existing_output(tmp_path):
    out, ev = tmp_path / "t.jsonl", tmp_path / "e.jsonl"
    code, text = _invoke("data", "make-task", "--out", out, "--n", -5)
    assert code == 2 and "--n -5" in text and not out.exists()
    code, text = _invoke("data", "make-task", "--out", out, "--n", 5, "--eval-out", out)
    assert code == 2 and "same file as --out" in text and not out.exists()
    assert _invoke("data", "make-task", "--out", out, "--n", 5, "--eval-out", ev, "--n-eval", 3)[0] == 0
    before = out.read_text()
    code, text = _invoke("data", "make-task", "--out", out, "--n", 7, "--seed", 1)
    assert code == 2 and "already exists; pass --force" in text and out.read_text() == before
    assert _invoke("data", "make-task", "--out", out, "--n", 7, "--seed", 1, "--force")[0] == 0
    assert len(out.read_text().splitlines()) == 7


def test_make_tiny_model_refuses_an_existing_model(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.safetensors").write_text("trained weights")
    code, text = _invoke("make-tiny-model", "--data", tmp_path / "x.jsonl", "--out", out)
    assert code == 2 and "already exists; pass --force" in text
    assert (out / "model.safetensors").read_text() == "trained weights"


def test_phase_verbs_refuse_a_run_dir_that_holds_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    for verb, args in PHASE_CONFIGS.items():
        code, text = _invoke(verb, *args, "--run-dir", run, "model.path=nowhere")
        assert code == 2 and "not empty" in text and "--resume" in text, (verb, text)
    assert (run / "summary.json").read_text() == "{}"
    code, text = _invoke("pipeline", "--run-dir", run)
    assert code == 2 and "not empty" in text


def test_sft_resume_refuses_a_changed_dataset_and_an_invalid_config(tmp_path):
    from posttrain.core.config import load_config
    from posttrain.phases import sft

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    run = RunDir(tmp_path / "run", "sft")
    run.start(load_config(sft.Config, None, [f"data.train={data}", "model.path=m"]))
    saved = (run.path / "config.yaml").read_text()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "q", "completion": "d"}) + "\n")
    code, text = _invoke("sft", "--resume", run.path, f"data.train={other}")
    assert code == 2 and "dataset changed" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("phase: sft\noptim: {lrr: 1}\n")
    code, text = _invoke("sft", "--resume", run.path, "--config", bad)
    assert code == 2 and "optim.lrr" in text
    assert (run.path / "config.yaml").read_text() == saved
