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
    assert len(load_source(str(train), task=["copy", "addition"]).rows) == 40
    rows = load_eval_rows(SFTData(train=str(train), eval=str(held), task="addition"), None)
    assert len(rows) == 5 and {r["task"] for r in rows} == {"addition"}
    with pytest.raises(DatasetError, match="no rows with task 'nope'"):
        load_source(str(train), task="nope")
    write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "prompt": "p", "answer": "1"}])
    with pytest.raises(DatasetError, match="no held-out rows with task 'copy'"):
        load_eval_rows(SFTData(train=str(train), eval=str(tmp_path / "e.jsonl"), task="copy"), None)
