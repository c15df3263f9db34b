"""Shared fixtures: a tiny model and task built once per session, offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory):
    from posttrain.core.data import write_jsonl
    from posttrain.tasks.addition import make_addition_rows, split_rows

    d = tmp_path_factory.mktemp("task")
    train, held = split_rows(make_addition_rows(300, digits=2, terms=2, seed=0), 60)
    write_jsonl(d / "train.jsonl", train)
    write_jsonl(d / "eval.jsonl", held)
    return d / "train.jsonl", d / "eval.jsonl"


@pytest.fixture(scope="session")
def tiny_model(tiny_task, tmp_path_factory):
    from posttrain.tasks.tiny import make_tiny_model

    return make_tiny_model(tiny_task[0], tmp_path_factory.mktemp("model") / "tiny", hidden=64, layers=2,
                           heads=1, head_dim=64, seed=0)
