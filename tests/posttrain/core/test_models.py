"""Model paths: a folder that is not a model, or a local path that does not exist, is a
one-line error at once (never a hub retry, never a tokenizer's unrelated complaint)."""

from __future__ import annotations

import time

import pytest

from posttrain.core.config import ConfigError
from posttrain.core.models import check_model_path, load_tokenizer


def test_not_a_model_folder_and_missing_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="is not a model folder \\(no config.json"):
        load_tokenizer(tmp_path / "runs")
    for missing in ["runs/sft/fnial", "runs/final", "./model", str(tmp_path / "nope")]:
        with pytest.raises(ConfigError, match="does not exist; fix the path"):
            load_tokenizer(missing)
    with pytest.raises(ConfigError, match="is a file"):
        check_model_path("notes.txt", "sft.start_model")
    assert time.monotonic() - t0 < 5  # no hub retries
    assert check_model_path("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"  # a hub id is left to the hub
