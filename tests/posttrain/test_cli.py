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


def test_unexpected_errors_are_one_line_and_a_full_disk_says_so(tmp_path, monkeypatch):
    import errno

    import posttrain.core.data as data

    def full(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(data, "write_jsonl", full)
    res = runner.invoke(app, ["data", "make-task", "--out", str(tmp_path / "t.jsonl"), "--n", "3"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert [line for line in res.output.splitlines() if line] == [
        f"error: no space left on device (writing {tmp_path / 't.jsonl'}); free disk space or choose a "
        "--run-dir / output on a disk with room (run `posttrain --debug ...` for the traceback)"]
    res = runner.invoke(app, ["--debug", "data", "make-task", "--out", str(tmp_path / "t.jsonl"), "--n", "3"])
    assert isinstance(res.exception, OSError)  # --debug: the real exception, with its traceback


def test_missing_model_path_and_bad_lr_are_one_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "q", "answer": "1"}) + "\n")
    code, text = _invoke("rl", f"data.train={data}", "--run-dir", tmp_path / "r1")
    assert code == 2 and text.startswith("error: field 'model.path' is not set") and "Traceback" not in text
    code, text = _invoke("rl", f"data.train={data}", "model.path=runs/nowhere/final", "--run-dir", tmp_path / "r2")
    assert code == 2 and "does not exist; fix the path" in text
    code, text = _invoke("sft", "--config", CONFIGS / "tiny" / "sft.yaml", "optim.lr=-0.1", "--run-dir", tmp_path / "r3")
    assert code == 2 and "field 'optim.lr'" in text
