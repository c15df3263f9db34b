"""The cot stage end to end with a scripted generator: tiers, auto and human review, scores,
upsampling, resume per step, and the errors that name the stage's problem."""

from __future__ import annotations

import json

import pytest

from posttrain.core.config import load_config
from posttrain.core.data import DatasetError, load_rows, read_jsonl, write_jsonl
from posttrain.phases.cot import stage
from posttrain.phases.cot.review_store import REVIEW_DB, ReviewStore
from posttrain.tasks.cot_addition import cot_text, make_cot_rows
from posttrain.tasks.tiny import make_tiny_model
from rollouts.types import Rollout

STEPS = "posttrain.tasks.cot_addition:cot_steps"
ANSWER = "posttrain.tasks.cot_addition:cot_answer"


class ScriptedGenerator:
    """Sample i of a prompt: 0 the reference path (tier A), 1 right answer after a wrong step (B),
    2 right steps and a wrong answer (B), 3 both wrong (C). Log-probs fall with i and the prompt."""

    weight_version = 0

    def __init__(self, rows):
        self.rows = {r["id"]: r for r in rows}

    def generate(self, prompts, sampling, step=0):
        out = []
        for j, p in enumerate(prompts):
            row = self.rows[p.prompt_id]
            terms = [int(t) for t in row["prompt"][8:-1].split(" + ")]
            ref = cot_text(terms)
            good, total = ref.split(". The answer is ")
            texts = [ref, "ones 9+9=18 write 8 carry 1. The answer is " + total,
                     good + ". The answer is " + str(int(total) + 1), "no idea. The answer is 0"]
            for i in range(sampling.n):
                t = texts[i % 4]
                out.append(Rollout(p.prompt_id, i, p.token_ids, [5] * (3 + i), [-0.1 * (i + 1) - 0.01 * j] * (3 + i), t))
        return out

    def close(self):
        pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cot")
    rows = make_cot_rows(12, seed=5)
    write_jsonl(d / "a.jsonl", rows[:8])
    dup = [dict(rows[0], id="dup-exact"), dict(rows[1], id="dup-near", prompt=rows[1]["prompt"].replace(" + ", "+"))]
    write_jsonl(d / "b.jsonl", rows[8:] + dup)
    model = make_tiny_model(rows, d / "model", hidden=64, layers=1, heads=1, head_dim=64)
    return d, rows, model


def _cfg(d, model, *over):
    return load_config(stage.Config, None, [
        f"model.path={model}", f"data.sources=[{d}/a.jsonl, {d}/b.jsonl]", "sampling.k=4", "generator=hf",
        f"judge.answer={{components: [{{name: '{ANSWER}'}}], workers: 1}}",
        f"judge.steps={{components: [{{name: '{STEPS}'}}], workers: 1}}", "judge.borderline_quantile=0.25", *over])


def test_auto_mode_tiers_scores_and_upsampling(setup, tmp_path):
    d, rows, model = setup
    summary = stage.run(_cfg(d, model, "review.mode=auto", "score.upsample_factor=3"), tmp_path / "r",
                        generator=ScriptedGenerator(rows))
    c = summary["counts"]
    assert c["collect"]["read"] == 14 and c["collect"]["exact_duplicates"] == 1
    assert c["collect"]["near_duplicates"] == 1 and c["collect"]["kept"] == 12
    assert c["generate"]["paths"] == 48
    assert (c["judge"]["tier_A"], c["judge"]["tier_B"], c["judge"]["tier_C"]) == (12, 24, 12)
    assert c["review"] == {"mode": "auto", "kept": 12, "queue": 0, "dropped_B": 24}
    scored = [o for _, o in read_jsonl(tmp_path / "r" / stage.SCORED)]
    assert all(r["tier"] == "A" for r in scored) and {r["score"] for r in scored} <= {4, 5}
    sft = load_rows(tmp_path / "r" / stage.SFT_FILE, require_answer=False)
    assert len(sft) == 3 * c["score"]["upsampled"] + (12 - c["score"]["upsampled"]) == c["score"]["sft_rows"]
    paths = [o for _, o in read_jsonl(tmp_path / "r" / stage.PATHS)]
    assert all(r["entropy"] > 0 and r["mean_logprob"] < 0 for r in paths)
    assert (tmp_path / "r" / "report.html").read_text().count("data:image/png;base64,") == 1
    unfiltered = load_rows(tmp_path / "r" / stage.UNFILTERED, require_answer=False)
    assert len(unfiltered) == 48


def test_human_mode_waits_for_review_then_resumes(setup, tmp_path):
    d, rows, model = setup
    cfg = _cfg(d, model)
    first = stage.run(cfg, tmp_path / "r", generator=ScriptedGenerator(rows))
    assert first["interrupted"] and first["waiting_for_review"] == 24 + 3  # tier B + borderline A
    store = ReviewStore(tmp_path / "r" / REVIEW_DB)
    items = store.items()
    store.decide(items[0]["id"], "approve")
    store.decide(items[1]["id"], "edit", "ones 1+1=2 write 2 carry 0. The answer is 2")
    for it in items[2:]:
        store.decide(it["id"], "reject")
    again = stage.run(cfg, tmp_path / "r", resume=True, generator=None)  # steps 1-3 are not rerun
    assert again["counts"]["review"] == {"mode": "human", "queue": 27, "kept": 12 - 3 + 2, "approve": 1,
                                         "edit": 1, "reject": 25}
    scored = {r["id"]: r for _, r in read_jsonl(tmp_path / "r" / stage.SCORED)}
    assert scored[items[1]["id"]]["completion"].startswith("ones 1+1=2")


def test_empty_tier_a_is_a_clear_error(setup, tmp_path):
    d, rows, model = setup
    with pytest.raises(DatasetError, match="cot: tier A is empty"):
        stage.run(_cfg(d, model, "review.mode=auto", "sampling.k=1",
                       "judge.answer={components: [{name: exact}], workers: 1}"), tmp_path / "r",
                  generator=ScriptedGenerator(rows))


def test_cli_auto_with_an_untrained_model_names_the_empty_tier(setup, tmp_path):
    from typer.testing import CliRunner

    from posttrain.cli import app

    d, rows, model = setup
    res = CliRunner().invoke(app, ["data", "cot", "--auto", "--run-dir", str(tmp_path / "r"), f"model.path={model}",
                                   f"data.sources={d}/a.jsonl", "data.max_prompts=3", "sampling.k=2",
                                   "sampling.max_tokens=6", "generator=hf",
                                   f"judge.answer={{components: [{{name: '{ANSWER}'}}], workers: 1}}"])
    assert res.exit_code == 2, res.output
    assert "cot: tier A is empty" in res.output
    counts = json.loads((tmp_path / "r" / stage.COUNTS).read_text())
    assert counts["generate"]["paths"] == 6 and counts["judge"]["tier_A"] == 0


@pytest.mark.slow
@pytest.mark.engine
def test_paths_from_the_ray_vllm_pool(setup, tmp_path):
    """Step 2 through the real engines: k paths per prompt with the engine's log-probs and an entropy."""
    d, rows, model = setup
    cfg = _cfg(d, model, "generator=vllm", "data.max_prompts=3", "sampling.k=2", "sampling.max_tokens=8",
               "review.mode=human", "engine.max_model_len=256", "ray.num_cpus=2")
    with pytest.raises(DatasetError, match="no path kept"):  # an untrained model: every path is tier C
        stage.run(cfg, tmp_path / "r")
    assert json.loads((tmp_path / "r" / stage.COUNTS).read_text())["generate"]["paths"] == 6
    paths = [o for _, o in read_jsonl(tmp_path / "r" / stage.PATHS)]
    assert all(p["n_tokens"] > 0 and p["mean_logprob"] <= 0 and p["entropy"] > 0 for p in paths)
