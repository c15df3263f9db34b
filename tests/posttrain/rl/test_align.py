"""`posttrain align`: the instruction-following task generator, config loading, the
task guard, failures as failures, and a short GSPO run on the in-process HF generator."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from posttrain.core.config import ConfigError, load_config
from posttrain.core.data import write_jsonl
from posttrain.phases import load_phase_config
from posttrain.rl import align
from posttrain.tasks.addition import make_addition_rows
from posttrain.tasks.instructions import (
    ALL_FAMILIES,
    FAMILIES,
    add_constraints,
    compose,
    constraints_met,
    final_number,
    make_align_data,
    random_forms,
    satisfying_forms,
    sft_rows,
)
from rewards.builtin.ifeval.checks import ifeval_reward
from rewards.scorer import Scorer

ROOT = Path(__file__).resolve().parents[3]
JUDGE = "tests.posttrain.rl.test_align_plugins:CannedJudge"


# ---------------------------------------------------------------------------- task generator


def test_generated_constraints_are_verifiable_and_the_answer_still_is():
    data = make_align_data(seed=3)
    plain = [r for r in data["train"] if r["constraints"] == []]
    assert len(plain) == 4 * 80 and all(constraints_met("anything", r) == 1.0 for r in plain)
    assert all(final_number(r["answer"], r) == 1.0 and r["prompt"].endswith("?") for r in plain)
    rows = [r for r in data["train"] if r["constraints"]] + data["eval"]
    assert len(rows) == 8 * 80 + 5 * 20
    assert {len(r["constraints"]) for r in rows} == {1, 2, 3, 4}
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        good = compose(r["answer"], satisfying_forms(r))
        assert ifeval_reward(good, r) == 1.0, (r["prompt"], good)
        assert final_number(good, r) == 1.0
        assert final_number(str(int(r["answer"]) + 1), r) == 0.0
        assert r["rubric"] and r["answer"] in {str(a + b) for a in range(10) for b in range(10)}
    # Without the forms the default families are not met: the bare answer scores 0.
    assert all(ifeval_reward(r["answer"], r) == 0.0 for r in rows)
    assert not any(any(c.isdigit() for c in r["prompt"][r["prompt"].index("?"):]) for r in rows)  # only operands
    with pytest.raises(KeyError):
        constraints_met("3", {"answer": "3"})  # no field at all is a broken row, not "nothing to meet"
    every = make_align_data(seed=1, families=ALL_FAMILIES)
    for r in every["train"]:
        if not r["constraints"]:
            continue
        assert ifeval_reward(compose(r["answer"], satisfying_forms(r)), r) == 1.0
        if "json" in r["families"]:
            assert set(r["families"]) <= {"json", "no_comma"}
    assert any("json" in r.get("families", []) for r in every["train"])


def test_eval_problems_are_held_out_from_rl_prompts():
    data = make_align_data(seed=0)
    problem = lambda r: r["prompt"].split("?")[0]  # noqa: E731
    assert not {problem(r) for r in data["train"]} & {problem(r) for r in data["eval"]}
    assert all(r["constraints"] for r in data["eval"])
    assert {problem(r) for r in data["train"]} | {problem(r) for r in data["eval"]} == \
        {problem(r) for r in data["base"]}
    assert all("constraints" not in r for r in data["base"])


def test_every_family_and_its_instruction():
    rng = random.Random(0)
    base = make_addition_rows(1, digits=1)[0]
    for name, fam in FAMILIES.items():
        row = add_constraints(base, rng, families=(name,), min_k=1, max_k=1)
        assert row["constraints"][0]["id"] == fam.ifeval_id and row["prompt"].startswith(base["prompt"])
        assert ifeval_reward(compose(base["answer"], satisfying_forms(row)), row) == 1.0
    with pytest.raises(ValueError, match="unknown constraint families"):
        add_constraints(base, rng, families=("shout",))


def test_soft_constraints_go_to_the_rubric():
    rng = random.Random(1)
    base = make_addition_rows(1, digits=1)[0]
    row = add_constraints(base, rng, soft_prob=1.0)
    assert len(row["rubric"]) == 4 and all(s in row["prompt"] for s in row["rubric"])


def test_sft_rows_show_forms_without_instructions():
    base = make_addition_rows(100, digits=1)
    rows = sft_rows(base, copies=4, styled_fraction=0.3, seed=0)
    styled = [r for r in rows if r["answer"] not in {b["answer"] for b in base}]
    assert 0.2 < len(styled) / len(rows) < 0.4
    assert all(r["prompt"] in {b["prompt"] for b in base} for r in rows)  # no instruction text
    assert all(final_number(r["answer"], {"answer": str(eval(r["prompt"][8:-1]))}) == 1.0 for r in rows)
    assert any(compose("1", random_forms(random.Random(i))).startswith('"') for i in range(50))


# ---------------------------------------------------------------------------- config


def test_shipped_align_configs_load():
    for path in [ROOT / "configs" / "tiny" / "align.yaml", *sorted((ROOT / "configs" / "align").glob("*.yaml"))]:
        cfg = load_phase_config(path)
        assert isinstance(cfg, align.Config) and cfg.align.guard_eval in [e.name for e in cfg.eval.extra_evals]


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ConfigError, match=r"field 'align'.*guard_eval='nope' names no eval.extra_evals entry"):
        load_config(align.Config, ROOT / "configs" / "tiny" / "align.yaml", ["align.guard_eval=nope"])
    with pytest.raises(ConfigError, match=r"'align.max_drop' is not a known field; did you mean 'align.max_task_drop'"):
        load_config(align.Config, ROOT / "configs" / "tiny" / "align.yaml", ["align.max_drop=3"])
    with pytest.raises(ConfigError, match="unknown reward"):
        load_config(align.Config, ROOT / "configs" / "tiny" / "align.yaml", ["reward.components=[{name: ifevall}]"])
    cfg = load_config(align.Config, None, ["align.guard_eval=null"])
    assert [c.name for c in cfg.eval.reward.components] == ["ifeval"] and cfg.phase == "align"


# ---------------------------------------------------------------------------- guard


class _Flag:
    requested = False


def test_guard_warns_or_stops_past_the_allowed_drop():
    flag = _Flag()
    guard = align.TaskGuard("task_accuracy", max_drop=2.0, on_drop="stop", stop=flag)
    assert guard(0, {"eval/task_accuracy": 0.95})["guard/tripped"] == 0.0
    assert guard(5, {"eval/task_accuracy": 0.94})["guard/tripped"] == 0.0 and not flag.requested  # 1 point
    assert guard(7, {"eval/task_accuracy": 0.93})["guard/tripped"] == 0.0 and not flag.requested  # 2 points: allowed
    out = guard(10, {"eval/task_accuracy": 0.92, "eval/accuracy": 0.4})
    assert out["guard/tripped"] == 1.0 and flag.requested and out["eval/constraint_rate"] == 0.4
    assert guard.report()["tripped_at_step"] == 10 and guard.report()["worst_drop_points"] == pytest.approx(3.0)
    warn = align.TaskGuard("task_accuracy", 2.0, "warn", baseline=0.95, stop=_Flag())
    assert warn(3, {"eval/task_accuracy": 0.5})["guard/tripped"] == 1.0 and not warn.stop.requested


def test_rollback_guard_keeps_the_model_of_the_last_eval_within_the_limit():
    saved: list[int] = []
    guard = align.TaskGuard("task_guard", max_drop=2.0, on_drop="rollback", save=saved.append)
    for step, value in ((0, 1.00), (20, 0.98), (40, 0.93), (60, 0.99), (80, 0.90)):
        guard(step, {"eval/task_guard": value})
    assert saved == [0, 20, 60] and guard.last_good == 60  # 40 and 80 fell 7 and 10 points: not kept
    assert guard.report()["tripped_at_step"] == 40 and guard.report()["last_good_step"] == 60
    assert "last_good_step" not in align.TaskGuard("t", 2.0, "warn").report()


def test_rollback_needs_its_own_rows_for_the_reported_task_accuracy():
    base = ROOT / "configs" / "tiny" / "align.yaml"
    cfg = load_config(align.Config, base, [])
    assert cfg.align.on_drop == "rollback" and cfg.align.task_eval != cfg.align.guard_eval
    with pytest.raises(ConfigError, match=r"on_drop='rollback' picks the final model on the guard's rows"):
        load_config(align.Config, base, ["align.task_eval=task_guard"])
    with pytest.raises(ConfigError, match=r"on_drop='rollback' picks the final model on the guard's rows"):
        load_config(align.Config, base, ["align.task_eval=null"])
    with pytest.raises(ConfigError, match=r"task_eval='nope' names no eval.extra_evals entry"):
        load_config(align.Config, base, ["align.task_eval=nope"])


# ---------------------------------------------------------------------------- failures


def test_failed_rewards_are_failures_not_zeros():
    """A constraint checker error and an unparsable judge output are counted as failures
    and left out of the component means (which are over samples that scored)."""
    row = {"id": "a", "prompt": "What is 1 + 2? Wrap your entire response in double quotation marks.",
           "answer": "3", "rubric": ["Be concise."],
           "constraints": [{"id": "startend:quotation", "kwargs": {}}]}
    broken = {**row, "id": "b", "constraints": [{"id": "startend:no_such_check", "kwargs": {}}]}
    specs = [{"name": "ifeval", "on_failure": "value", "failure_value": 0.0},
             {"name": JUDGE, "weight": 0.5}, {"name": "posttrain.tasks.instructions:final_number"}]
    with Scorer(specs, inline=True, max_failed_fraction=1.0) as scorer:
        batch = scorer.score(['"3"', '"3"', "3"], [row, broken, row])
    m = batch.metrics
    assert m["reward/ifeval/failed"] == 1.0 and m["reward/ifeval/mean"] == 0.5  # (1 + 0) / 2, not / 3
    assert m["reward/CannedJudge/failed"] == 1.0 and m["reward/CannedJudge/mean"] == 1.0
    assert "unknown IFEval instruction id" in batch.errors[1] and "unparsable judge output" in batch.errors[2]
    assert batch.rewards[0] == pytest.approx(1 + 0.5 + 1)
    assert batch.rewards[1] == pytest.approx(0 + 0.5 + 1)  # on_failure: value -> failure_value, still failed
    assert batch.rewards[2] is None  # judge failed with on_failure: exclude -> left out of advantages


# ---------------------------------------------------------------------------- a short run


def _align_files(d: Path) -> dict[str, Path]:
    data = make_align_data(seed=0)
    train = data["train"][:40]
    train[1] = {**train[1], "constraints": [{"id": "startend:no_such_check", "kwargs": {}}]}  # a checker error
    paths = {"train": d / "train.jsonl", "eval": d / "eval.jsonl", "task": d / "task.jsonl"}
    write_jsonl(paths["train"], train)
    write_jsonl(paths["eval"], data["eval"][:8])
    write_jsonl(paths["task"], data["base"][:8])
    return paths


def test_short_align_run_logs_components_and_the_guard(tiny_model, tmp_path):
    files = _align_files(tmp_path / "data")
    ov = [f"model.path={tiny_model}", f"data.train={files['train']}", f"data.eval={files['eval']}",
          "data.shuffle=false", "rollout.backend=hf", "rollout.prompts_per_step=4", "rollout.group_size=4",
          "rollout.max_new_tokens=6", "train.steps=3", "eval.every=2", "optim.lr=1e-3", "algo.eps_low=0.2",
          "algo.eps_high=0.2", "algo.num_minibatches=2", "reward.workers=1", "reward.max_failed_fraction=1.0",
          "reward.components=[{name: 'posttrain.tasks.instructions:constraints_met', on_failure: value, failure_value: 0.0}, "
          f"{{name: '{JUDGE}', weight: 0.5, on_failure: value}}, "
          "{name: 'posttrain.tasks.instructions:final_number'}]",
          f"eval.extra_evals=[{{name: task_accuracy, data: '{files['task']}', "
          "reward: 'posttrain.tasks.instructions:final_number'}]"]
    cfg = load_config(align.Config, None, ov)
    summary = align.run(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {x["phase"] for x in lines} == {"align"}
    train = [x for x in lines if "reward/mean" in x]
    assert [x["step"] for x in train] == [1, 2, 3]
    for key in ("constraints_met", "CannedJudge", "final_number"):
        assert all(f"reward/{key}/mean" in x and f"reward/{key}/failed" in x for x in train)
    assert train[0]["reward/constraints_met/failed"] == 4.0  # row 2 of the unshuffled data: 4 samples, 4 failures
    evals = [x for x in lines if "eval/task_accuracy" in x]
    assert [x["step"] for x in evals] == [0, 2, 3]
    for x in evals:
        assert {"eval/constraint_rate", "eval/accuracy", "eval/task_accuracy/failed", "guard/task_drop_points",
                "guard/tripped"} <= set(x) and 0.0 <= x["eval/constraint_rate"] <= 1.0
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("constraint_rate_before", "constraint_rate_after", "task_accuracy_before", "task_accuracy_after"):
        assert saved[key] is not None and 0.0 <= saved[key] <= 1.0
    assert saved["guard"]["metric"] == "eval/task_accuracy" and Path(summary["final_model"]).is_dir()
    assert load_phase_config(tmp_path / "run" / "config.yaml").phase == "align"  # --resume reads it back


class _ScriptedGuard(align.TaskGuard):
    """The guard's eval replaced by a script per step, so the test decides when it trips."""

    script = {0: 1.0, 2: 1.0, 4: 0.5}

    def __call__(self, step, metrics):
        value = self.script[step]
        return {**super().__call__(step, {**metrics, f"eval/{self.name}": value}), f"eval/{self.name}": value}


def test_a_rollback_run_ends_with_the_last_model_within_the_limit(tiny_model, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    files = _align_files(tmp_path / "data")
    write_jsonl(tmp_path / "data" / "guard.jsonl", make_align_data(seed=0)["base"][8:12])
    monkeypatch.setattr(align, "TaskGuard", _ScriptedGuard)
    ov = [f"model.path={tiny_model}", f"data.train={files['train']}", f"data.eval={files['eval']}",
          "rollout.backend=hf", "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=6",
          "train.steps=4", "eval.every=2", "train.checkpoint_every=2", "optim.lr=1e-3", "algo.eps_low=0.2",
          "algo.eps_high=0.2", "reward.workers=1", "reward.max_failed_fraction=1.0",
          "reward.components=[{name: 'posttrain.tasks.instructions:constraints_met', on_failure: value}]",
          f"eval.extra_evals=[{{name: task_accuracy, data: '{files['task']}', "
          "reward: 'posttrain.tasks.instructions:final_number'}, "
          f"{{name: task_guard, data: '{tmp_path / 'data' / 'guard.jsonl'}', "
          "reward: 'posttrain.tasks.instructions:final_number'}]",
          "align.guard_eval=task_guard", "align.task_eval=task_accuracy", "align.on_drop=rollback"]
    summary = align.run(load_config(align.Config, None, ov), tmp_path / "run")
    run = tmp_path / "run"
    assert summary["steps"] == 4 and summary["guard"]["tripped_at_step"] == 4
    assert summary["guard"]["last_good_step"] == 2 and summary["guard"]["final_step"] == 2
    at = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/accuracy" in r}
    assert summary["constraint_rate_after"] == at[2]["eval/accuracy"]  # the kept model's evals, not step 4's
    assert summary["task_accuracy_after"] == at[2]["eval/task_accuracy"]
    assert summary["task_guard_after"] == 1.0 and summary["task_guard_before"] == 1.0
    weights = lambda d: load_file(str(d / "model.safetensors"))  # noqa: E731
    last = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip() / "model"  # step 4's
    final, step2, step4 = weights(run / "final"), weights(run / "checkpoints" / "step-000002" / "model"), weights(last)
    assert all(torch.equal(final[k], step2[k]) for k in final)
    assert not all(torch.equal(final[k], step4[k]) for k in final)  # training moved on past step 2


def test_cli_has_the_align_verb_and_reports_config_errors():
    from typer.testing import CliRunner

    from posttrain.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["align", "--help"]).exit_code == 0
    res = runner.invoke(app, ["align", "--config", str(ROOT / "configs" / "tiny" / "align.yaml"), "align.on_drop=halt"])
    assert res.exit_code == 2 and "align.on_drop" in res.output


def test_training_rewards_pay_constraints_only_with_a_clean_right_answer():
    from posttrain.tasks.instructions import clean_answer, constraints_if_correct, unheeded_instruction_rows

    rows = make_align_data(seed=0)["eval"]
    for row in rows[:30]:
        good = compose(row["answer"], satisfying_forms(row))
        assert clean_answer(good, row) == 1.0 and constraints_if_correct(good, row) == constraints_met(good, row) == 1.0
        wrong = compose(str(int(row["answer"]) + 1), satisfying_forms(row))
        assert constraints_met(wrong, row) == 1.0 and clean_answer(wrong, row) == constraints_if_correct(wrong, row) == 0.0
        garbled = good + f" {row['answer']}{row['answer']}"  # stray digits after a right answer: not clean
        assert final_number(f"{good} {row['answer']}", row) == 1.0 and clean_answer(garbled, row) == 0.0
    plain = {"answer": "7", "constraints": []}
    assert clean_answer("7", plain) == constraints_if_correct("7", plain) == 1.0
    assert clean_answer('"<<Sum>> 7"', plain) == 0.0  # a plain prompt wants the bare answer
    base = make_addition_rows(10, digits=1)
    rows = unheeded_instruction_rows(base, copies=3, styled_fraction=0.3, seed=0)
    assert all(r["prompt"].startswith(b["prompt"]) and r["prompt"] != b["prompt"]
               for r, b in zip(rows, [b for b in base for _ in range(3)]))


def test_rollback_swaps_the_final_folder_in_whole(tmp_path):
    from posttrain.rl.align import _replace_dir

    final, good = tmp_path / "final", tmp_path / "guard_model"
    final.mkdir(), good.mkdir()
    (final / "model.safetensors").write_text("last")
    (final / "only_in_last.txt").write_text("x")
    (good / "model.safetensors").write_text("good")
    (tmp_path / ".new-final").mkdir()  # left by an earlier kill mid-copy
    _replace_dir(final, good)
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors"]
    assert (final / "model.safetensors").read_text() == "good" and (good / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "guard_model"]
