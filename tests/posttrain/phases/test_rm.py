"""Reward model: the tiny config trains, ranks held-out pairs, and final/ loads with one logit."""

import json

from posttrain.phases.rm import short_chosen
from tests.posttrain.phase_fixtures import SMALL_MODEL, TINY, easy_pairs


def test_short_chosen_subset():
    a = [{"role": "assistant", "content": "1"}]
    b = [{"role": "assistant", "content": "1 1 1"}]
    pairs = [{"chosen": a, "rejected": b}, {"chosen": b, "rejected": a}, {"chosen": a, "rejected": a}]
    assert short_chosen(pairs) == [pairs[0]]


def test_tiny_config_ranks_pairs_and_loads(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.core.config import load_config
    from posttrain.phases import rm
    from posttrain.phases.pair_eval import ranking_accuracy
    from posttrain.phases.pairs import load_pairs

    train, held = easy_pairs(tmp_path)
    cfg = load_config(rm.Config, TINY / "rm.yaml", [
        *SMALL_MODEL, f"data.train={train}", f"data.eval={held}", "train.max_steps=15", "train.batch_size=16",
        "optim.lr=3e-3", "length_debias.steps=3", "length_debias.min_pairs=1", "train.logging_steps=5"])
    s = rm.run(cfg, tmp_path / "run")
    assert s["eval/accuracy"] >= 0.8, s
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(x["phase"] == "rm" for x in lines)
    assert [x["rm/stage"] for x in lines if "rm/stage" in x] == ["start", "bradley_terry", "final"]
    final = tmp_path / "run" / "final"
    model = AutoModelForSequenceClassification.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert model.config.num_labels == 1
    again = ranking_accuracy(model, tok, load_pairs(held))
    assert abs(again["eval/accuracy"] - s["eval/accuracy"]) < 1e-6  # the saved model is the evaluated one
