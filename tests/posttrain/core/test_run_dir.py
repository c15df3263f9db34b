"""The run-directory contract: a non-empty directory is never silently reused, and a
resume refuses a changed config or dataset without rewriting the record."""

from __future__ import annotations

import os

import pytest

from posttrain.core.config import load_config
from posttrain.core.data import DatasetError
from posttrain.core.run_dir import CONFIG_FILE, RunDir, RunDirError, claim_run_dir, refuse_existing
from posttrain.phases import sft


def _cfg(train, *extra):
    return load_config(sft.Config, None, [f"data.train={train}", "model.path=m", *extra])


def test_claim_refuses_a_non_empty_dir_and_force_replaces_only_runs(tmp_path):
    run = tmp_path / "run"
    assert claim_run_dir(run) == run and run.is_dir()
    claim_run_dir(run)  # empty: fine
    (run / CONFIG_FILE).write_text("phase: sft\n")
    claim_run_dir(run)  # a start that failed before its first step (bad data): nothing to lose
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunDirError, match="not empty .* --resume .* --force"):
        claim_run_dir(run)
    assert claim_run_dir(run, resume=True) == run and (run / CONFIG_FILE).is_file()
    claim_run_dir(run, force=True)
    assert run.is_dir() and not any(run.iterdir())
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(RunDirError, match="not a posttrain run directory"):
        claim_run_dir(other, force=True)
    assert (other / "thesis.tex").is_file()


def test_unusable_dirs_get_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        claim_run_dir(tmp_path / "f")
    with pytest.raises(RunDirError, match="a parent of it is a file"):
        claim_run_dir(tmp_path / "f" / "run")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(RunDirError, match="cannot be created|not writable"):
            claim_run_dir(ro / "run")


def test_refuse_existing_outputs(tmp_path):
    out = tmp_path / "model"
    refuse_existing(out, False, "--out")
    out.mkdir()
    refuse_existing(out, False, "--out")  # an empty folder is fine
    (out / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="--out .* already exists; pass --force"):
        refuse_existing(out, False, "--out")
    refuse_existing(out, True, "--out")
    assert not out.exists()


def test_resume_refuses_a_changed_dataset_or_config_and_keeps_the_record(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "p", "completion": "c"}\n')
    run = RunDir(tmp_path / "run", "sft")
    run.start(_cfg(data))
    record = (run.path / CONFIG_FILE).read_text()
    moved = tmp_path / "same.jsonl"
    moved.write_bytes(data.read_bytes())
    run.start(_cfg(moved), resume=True)  # same content under another name: fine
    run.start(_cfg(data, "train.max_steps=500"), resume=True)  # a longer run: allowed and recorded
    assert "max_steps: 500" in (run.path / CONFIG_FILE).read_text()
    run.start(_cfg(data), resume=True)
    record = (run.path / CONFIG_FILE).read_text()
    with pytest.raises(RunDirError, match=r"config changed .*optim\.lr: 2e-05 -> 0\.1"):
        run.start(_cfg(data, "optim.lr=0.1"), resume=True)
    data.write_text('{"prompt": "p", "completion": "other"}\n')
    with pytest.raises(DatasetError, match="dataset changed .*data.train"):
        run.start(_cfg(data), resume=True)
    assert (run.path / CONFIG_FILE).read_text() == record
