"""SFT stops by measurement: once dev accuracy (a slice of the training rows) reaches
`eval.stop_at_accuracy`; the held-out set is never used for the decision."""

import json

from posttrain.core.config import load_config
from posttrain.phases import sft
from tests.posttrain.phase_fixtures import SMALL_MODEL, task_files


def test_stop_at_accuracy_ends_training_at_the_first_check(tmp_path):
    train, held = task_files(tmp_path)
    cfg = load_config(sft.Config, None, [*SMALL_MODEL, f"data.train={train}", f"data.eval={held}",
                                         "train.max_steps=40", "train.batch_size=8", "eval.stop_at_accuracy=0.0",
                                         "eval.stop_every=5", "eval.stop_rows=8", "eval.max_rows=8"])
    summary = sft.run(cfg, tmp_path / "run")
    assert summary["steps"] == 5
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    dev = [l for l in lines if "dev/accuracy" in l]
    assert [l["step"] for l in dev] == [5] and dev[0]["sft/stopped_at_accuracy"] == 1.0
