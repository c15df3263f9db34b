"""SFT's `data.task`: one task (or several) of a multi-task file, for training and held-out rows."""

from __future__ import annotations

import pytest

from posttrain.core.data import DatasetError, write_jsonl
from posttrain.phases.sft import SFTData, load_eval_rows
from posttrain.phases.sft_data import load_source
from posttrain.tasks.reversal import make_experts_data


def test_task_filter_on_training_and_eval_rows(tmp_path):
    train, held = make_experts_data(tmp_path, 20, 5, 0)
    assert len(load_source(str(train), task="reversal").rows) == 20
    assert len(load_source(str(train), task=["copy", "shift"]).rows) == 40
    rows = load_eval_rows(SFTData(train=str(train), eval=str(held), task="shift"), None)
    assert len(rows) == 5 and {r["task"] for r in rows} == {"shift"}
    with pytest.raises(DatasetError, match="no rows with task 'nope'"):
        load_source(str(train), task="nope")
    write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "prompt": "p", "answer": "1"}])
    with pytest.raises(DatasetError, match="no held-out rows with task 'copy'"):
        load_eval_rows(SFTData(train=str(train), eval=str(tmp_path / "e.jsonl"), task="copy"), None)


def test_stop_at_accuracy_dev_slice_is_the_experts_own_task(tmp_path):
    from posttrain.core.config import load_config
    from posttrain.phases.sft import Config, dev_rows

    train, _ = make_experts_data(tmp_path, 20, 5, 0)
    cfg = load_config(Config, None, [f"data.train={train}", "data.task=shift", "eval.stop_rows=7"])
    rows = dev_rows(cfg)
    assert len(rows) == 7 and {r["task"] for r in rows} == {"shift"}
