"""The pipeline without training: stage wiring by name, config hashes (refusal, --force,
upstream changes), the 0 < accuracy < 1 filter, the summary contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.core.config import ConfigError
from posttrain.core.data import write_jsonl
from posttrain.core.devices import resolve_dtype
from posttrain.phases import filter as prompt_filter
from posttrain.pipeline import runner as pipeline
from posttrain.pipeline.config import load_pipeline_config, resolve, stage_precision, with_data_defaults
from posttrain.pipeline.spread import dtype_overrides

ROOT = Path(__file__).resolve().parents[3]
KEYE = ROOT / "configs" / "recipes" / "keye.yaml"


def _plan(tmp_path, *overrides):
    cfg = with_data_defaults(load_pipeline_config(KEYE, list(overrides)), tmp_path)
    return {st.name: st for st in resolve(cfg, tmp_path)}


def test_keye_stages_are_wired_by_name(tmp_path):
    plan = _plan(tmp_path)
    assert list(plan) == ["sft", "rl1", "rft", "filter", "rl2"]
    assert [st.kind for st in plan.values()] == ["sft", "rl", "rft", "filter", "rl"]
    sft, rl1, rft, flt, rl2 = plan.values()
    assert sft.cfg.model.path == str(tmp_path / "init_model") and sft.tiny_init
    assert sft.cfg.data.train == str(tmp_path / "data" / "train.jsonl")
    assert rl1.cfg.model.path == str(tmp_path / "sft" / "final")
    assert rft.cfg.model.path == str(tmp_path / "rl1" / "final")  # the RL model samples ...
    assert rft.cfg.sft.start_model == str(tmp_path / "sft" / "final")  # ... and retrains the SFT model
    assert [e.path for e in rft.cfg.sft.extra] == [str(tmp_path / "data" / "train.jsonl")]  # mixed with its data
    assert flt.cfg.model.path == str(tmp_path / "rft" / "final")
    assert flt.cfg.reuse.accuracy == str(tmp_path / "rft" / "prompt_accuracy.jsonl")
    assert flt.cfg.reuse.model == str(tmp_path / "rl1" / "final")  # measured on another model: not reused
    assert not prompt_filter.reusable(flt.cfg)
    assert rl2.cfg.model.path == str(tmp_path / "rft" / "final")
    assert rl2.cfg.data.train == str(tmp_path / "filter" / "rl_prompts.jsonl")
    assert rl2.cfg.hints.init_state == str(tmp_path / "rl1" / "hints_state.json")
    assert rl1.cfg.hints.enabled and rl2.cfg.hints.enabled
    assert all(st.cfg.data.eval == str(tmp_path / "data" / "eval.jsonl") for st in (sft, rl1, rft))


def test_user_task_file_and_overrides_reach_every_stage(tmp_path):
    plan = _plan(tmp_path, "data.train=/t/train.jsonl", "data.eval=/t/eval.jsonl", "model.init=tiny",
                 "defaults.rl.rollout.backend=hf", "stages.rl2.values.train.steps=7")
    assert plan["sft"].cfg.data.train == "/t/train.jsonl" and plan["rft"].cfg.data.prompts == "/t/train.jsonl"
    assert plan["filter"].cfg.data.prompts == "/t/train.jsonl"
    assert plan["rl1"].cfg.rollout.backend == "hf" == plan["rl2"].cfg.rollout.backend
    assert plan["rl2"].cfg.train.steps == 7


@pytest.mark.parametrize("override, message", [
    ("stages.rl1.from.model=rl2", "must name an earlier stage"),
    ("stages.rl1.from.prompts=sft", "has no prompts output"),
    ("stages.sft.from.hints=rl1", "not an input of sft"),
    ("stages.rl1.kind=dpo", "stages.rl1.kind"),
    ("stages.rl1.values.train.stepz=3", "did you mean 'train.steps'"),
])
def test_bad_wiring_is_refused_with_the_fix(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _plan(tmp_path, override)


AMX_XEON = {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
NO_AMX = [{"avx2", "avx512f", "avx512_bf16"}, {"avx2"}]  # Zen 4-like (bf16 slow without AMX), older x86


def test_make_demo_picks_bf16_with_amx_and_fp32_without(tmp_path):
    """`make demo` (configs/recipes/keye.yaml) says `dtype: auto` for every trainer and engine: on a
    CPU with AMX the GSPO trainers and every engine run bf16 and the TRL-trained stages (sft, rft's
    SFT) fp32, where TRL's bf16 autocast measured no faster (docs/precision.md); on a CPU without AMX
    everything is fp32. Decided from flag sets, not this machine's. `spread --dtype auto` is the
    same plan; `--dtype float32` pins fp32 on any CPU."""
    plan = _plan(tmp_path)
    roles = {n: set(stage_precision(st.kind, st.cfg, AMX_XEON)) for n, st in plan.items()}
    assert roles == {"sft": {"trainer"}, "rl1": {"trainer", "engine"}, "rft": {"trainer", "engine"},
                     "filter": {"engine"}, "rl2": {"trainer", "engine"}}
    for flags, want in [(AMX_XEON, "bfloat16"), *((f, "float32") for f in NO_AMX)]:
        for name, st in plan.items():
            for role, choice in stage_precision(st.kind, st.cfg, flags).items():
                expect = "float32" if (st.kind in ("sft", "rft") and role == "trainer") else want
                assert (choice.dtype, choice.reason.startswith("auto: ")) == (expect, True), (name, role, flags)
    auto = _plan(tmp_path, *dtype_overrides("auto"))  # `spread --dtype auto`: the same plan as the default
    assert [st.hash for st in auto.values()] == [st.hash for st in plan.values()]
    forced = _plan(tmp_path, *dtype_overrides("float32"))
    for flags in (AMX_XEON, *NO_AMX):
        assert {c.dtype for st in forced.values() for c in stage_precision(st.kind, st.cfg, flags).values()} == {
            "float32"}


def test_downstream_hash_follows_upstream_changes(tmp_path):
    a = _plan(tmp_path)
    b = _plan(tmp_path, "stages.rft.values.sampling.k=4")
    assert [a[n].hash == b[n].hash for n in a] == [True, True, False, False, False]


# ---------------------------------------------------------------------------- runner with fake stages


@pytest.fixture
def fake_stages(monkeypatch):
    calls: list[tuple[str, bool]] = []

    def run_stage(st, resume):
        calls.append((st.name, resume))
        st.dir.mkdir(parents=True, exist_ok=True)
        acc = {"sft": 0.3, "rl1": 0.4, "rft": 0.45, "rl2": 0.5}.get(st.name)
        (st.dir / "metrics.jsonl").write_text(json.dumps({"phase": st.kind, "step": 1, "eval/accuracy": acc}) + "\n")
        if st.kind == "rl":
            return {"accuracy_before_rl": acc - 0.1, "accuracy_after_rl": acc, "rl_wall_s": 1.5,
                    "final_model": str(st.dir / "final"), "interrupted": False, "steps": 1,
                    "trainer/dtype": "bfloat16", "trainer/dtype_reason": "recorded by the trainer"}
        return {"eval/accuracy": acc} if acc is not None else {"filter/kept": 3}

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    monkeypatch.setattr(pipeline, "prepare_inputs", lambda *a: None)
    return calls


def _cfg(*overrides):
    return load_pipeline_config(KEYE, ["data.train=/t/train.jsonl", "data.eval=/t/eval.jsonl", "report=false",
                                       *overrides])


def test_summary_contract_and_finished_stages_are_not_rerun(tmp_path, fake_stages):
    s = pipeline.run_pipeline(_cfg(), tmp_path)
    assert [c[0] for c in fake_stages] == ["sft", "rl1", "rft", "filter", "rl2"]
    assert [(x["name"], x["kind"], x["accuracy"]) for x in s["stages"]] == [
        ("sft", "sft", 0.3), ("rl1", "rl", 0.4), ("rft", "rft", 0.45), ("filter", "filter", 0.45),
        ("rl2", "rl", 0.5)]
    assert set(s["stages"][0]) == {"name", "kind", "accuracy", "model", "dtype", "dtype_reason"}
    # the plan's choice on this machine (the demo says auto), unless the stage recorded its own (rl1 below)
    engine = resolve_dtype("auto", "cpu")
    assert s["stages"][0]["dtype"] == {"trainer": "float32"}  # TRL-trained: fp32 under auto on any CPU
    assert s["stages"][0]["dtype_reason"]["trainer"].startswith("auto: ")
    assert s["stages"][3]["dtype"] == {"engine": engine.dtype}
    assert s["stages"][1]["dtype"] == {"trainer": "bfloat16", "engine": engine.dtype}
    assert s["stages"][1]["dtype_reason"] == {"trainer": "recorded by the trainer", "engine": engine.reason}
    assert s["stages"][3]["model"] == s["stages"][2]["model"] == str(tmp_path / "rft" / "final")
    assert s["sft_model"] == str(tmp_path / "sft" / "final") and s["final_model"] == str(tmp_path / "rl2" / "final")
    assert s["accuracy_before_rl"] == pytest.approx(0.3) and s["accuracy_after_rl"] == 0.4 and s["rl_wall_s"] == 1.5
    assert s["eval_data"] == "/t/eval.jsonl" and "wall_s" in s and "sft_wall_s" in s
    assert json.loads((tmp_path / "summary.json").read_text())["stages"] == s["stages"]
    state = json.loads((tmp_path / "pipeline_state.json").read_text())["stages"]
    assert {r["status"] for r in state.values()} == {"done"} and all(len(r["hash"]) == 16 for r in state.values())
    fake_stages.clear()
    pipeline.run_pipeline(_cfg(), tmp_path)
    assert fake_stages == []  # nothing rerun


def test_changed_config_is_refused_unless_forced(tmp_path, fake_stages):
    pipeline.run_pipeline(_cfg(), tmp_path)
    fake_stages.clear()
    with pytest.raises(ConfigError, match=r"stage\(s\) filter, rl2 changed.*--force"):
        pipeline.run_pipeline(_cfg("stages.filter.values.sampling.k=2"), tmp_path)
    assert fake_stages == []
    (tmp_path / "rl2" / "marker").write_text("old")
    pipeline.run_pipeline(_cfg("stages.filter.values.sampling.k=2"), tmp_path, force=True)
    assert fake_stages == [("filter", False), ("rl2", False)]  # fresh reruns, upstream untouched
    assert not (tmp_path / "rl2" / "marker").exists()


def test_an_interrupted_stage_resumes_through_its_phase(tmp_path, fake_stages, monkeypatch):
    real = pipeline.run_stage

    def stop_in_rl2(st, resume):
        out = real(st, resume)
        return {**out, "interrupted": True} if st.name == "rl2" and not resume else out

    monkeypatch.setattr(pipeline, "run_stage", stop_in_rl2)
    with pytest.raises(pipeline.PipelineInterrupted, match="--resume"):
        pipeline.run_pipeline(_cfg(), tmp_path)
    assert json.loads((tmp_path / "pipeline_state.json").read_text())["stages"]["rl2"]["status"] == "interrupted"
    fake_stages.clear()
    pipeline.run_pipeline(_cfg(), tmp_path)
    assert fake_stages == [("rl2", True)]
    assert json.loads((tmp_path / "pipeline_state.json").read_text())["stages"]["rl2"]["attempts"] == 2


# ---------------------------------------------------------------------------- the filter


def test_keep_between_is_strict():
    rows = [{"id": i} for i in "abcdef"]
    acc = {"a": 0.0, "b": 0.125, "c": 0.5, "d": 0.875, "e": 1.0}
    assert [r["id"] for r in prompt_filter.keep_between(rows, acc)] == ["b", "c", "d"]
    assert [r["id"] for r in prompt_filter.keep_between(rows, acc, 0.2, 0.9)] == ["c", "d"]


def test_filter_reuses_accuracy_of_the_same_model_only(tmp_path, monkeypatch):
    rows = [{"id": f"p{i}", "prompt": f"q{i}", "answer": "1"} for i in range(4)]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    write_jsonl(tmp_path / "acc.jsonl", [{"id": "p0", "accuracy": 0.0}, {"id": "p1", "accuracy": 0.5},
                                         {"id": "p2", "accuracy": 1.0}, {"id": "p3", "accuracy": 0.25}])
    (tmp_path / "m").mkdir()
    sampled = []
    monkeypatch.setattr(prompt_filter, "sample_accuracy",
                        lambda cfg, rs, gen=None: sampled.append(1) or [{"id": r["id"], "accuracy": 0.5, "n": 2}
                                                                         for r in rs])

    def cfg(reuse_model):
        return prompt_filter.Config(model={"path": str(tmp_path / "m")}, data={"prompts": str(tmp_path / "rows.jsonl")},
                                    reuse={"accuracy": str(tmp_path / "acc.jsonl"), "model": reuse_model})

    s = prompt_filter.run(cfg(str(tmp_path / "m")), tmp_path / "same")
    assert s["source"] == "reused" and sampled == [] and s["filter/kept"] == 2
    assert [r["id"] for r in map(json.loads, (tmp_path / "same" / "rl_prompts.jsonl").read_text().splitlines())] \
        == ["p1", "p3"]
    assert s["filter/all_right"] == 1 and s["filter/all_wrong"] == 1
    s = prompt_filter.run(cfg(str(tmp_path / "other")), tmp_path / "other_run")
    assert s["source"] == "sampled" and sampled == [1] and s["filter/kept"] == 4


def test_filter_with_nothing_left_says_why(tmp_path, monkeypatch):
    from posttrain.core.data import DatasetError

    write_jsonl(tmp_path / "rows.jsonl", [{"id": "p0", "prompt": "q", "answer": "1"}])
    monkeypatch.setattr(prompt_filter, "sample_accuracy", lambda cfg, rs, gen=None: [{"id": "p0", "accuracy": 1.0}])
    cfg = prompt_filter.Config(model={"path": "m"}, data={"prompts": str(tmp_path / "rows.jsonl")})
    with pytest.raises(DatasetError, match="no prompt has 0.0 < accuracy < 1.0"):
        prompt_filter.run(cfg, tmp_path / "run")


def test_an_mpo_stage_takes_pairs_built_from_rft_samples(tmp_path):
    plan = _plan(tmp_path, "stages.mpo.kind=mpo", "stages.mpo.config=configs/tiny/mpo.yaml",
                 "stages.mpo.from={model: rft, pairs: rft}")
    mpo = plan["mpo"]
    assert list(plan)[-1] == "mpo" and mpo.cfg.model.path == str(tmp_path / "rft" / "final")
    assert mpo.cfg.data.train == str(tmp_path / "mpo" / "pairs.jsonl")
    assert mpo.cfg.data.eval_rows == str(tmp_path / "data" / "eval.jsonl")
    write_jsonl(tmp_path / "rft" / "scored.jsonl", [
        {"prompt_id": "p", "sample_idx": i, "prompt": "What is 1 + 1?", "completion": c, "reward": r}
        for i, (c, r) in enumerate([("2", 1.0), ("3", 0.0), ("2", 1.0)])])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("")
    pipeline.prepare_inputs(with_data_defaults(load_pipeline_config(KEYE), tmp_path), tmp_path, mpo)
    pairs = [json.loads(l) for l in (tmp_path / "mpo" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 1 and pairs[0]["chosen"] != pairs[0]["rejected"]


def test_a_task_without_hints_runs_rl_without_dataset_hints(tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"Reverse {w}", "answer": w[::-1]} for i, w in enumerate(["abc", "hello"])]
    write_jsonl(tmp_path / "own.jsonl", rows)
    plan = _plan(tmp_path, f"data.train={tmp_path / 'own.jsonl'}", f"data.eval={tmp_path / 'own.jsonl'}")
    assert not plan["rl1"].cfg.hints.enabled and not plan["rl2"].cfg.hints.enabled
    assert plan["rl2"].cfg.hints.init_state is None  # rl1 has no hint state to pass on
    assert plan["sft"].cfg.model.path == str(tmp_path / "init_model")  # tiny model, tokenizer from own.jsonl
    write_jsonl(tmp_path / "own.jsonl", [{**r, "hints": ["h"] * 5} for r in rows])
    assert _plan(tmp_path, f"data.train={tmp_path / 'own.jsonl'}")["rl1"].cfg.hints.enabled


def test_an_align_stage_after_the_last_rl_round(tmp_path):
    pytest.importorskip("posttrain.rl.align")
    plan = _plan(tmp_path, "stages.align.kind=align", "stages.align.config=configs/tiny/align.yaml",
                 "stages.align.from.model=rl2")
    align = plan["align"]
    assert align.cfg.phase == "align" and align.cfg.model.path == str(tmp_path / "rl2" / "final")
    assert align.cfg.data.train == "runs/align-demo/data/train.jsonl"  # its own constrained prompts
    assert align.outputs["model"] == str(tmp_path / "align" / "final")


def test_rft_can_mix_the_sft_stage_data_into_its_retraining(tmp_path):
    plan = _plan(tmp_path, "stages.rft.values.sft.kept_weight=2")
    rft = plan["rft"].cfg
    assert [(e.path, e.weight) for e in rft.sft.extra] == [(str(tmp_path / "data" / "train.jsonl"), 1.0)]
    assert rft.sft.kept_weight == 2
    with pytest.raises(ConfigError, match="no sft_data output"):
        _plan(tmp_path, "stages.rft.from.sft_data=rl1")


def test_experts_recipe_wires_experts_and_their_tasks(tmp_path):
    cfg = with_data_defaults(load_pipeline_config(ROOT / "configs" / "recipes" / "experts.yaml"), tmp_path)
    plan = {st.name: st for st in resolve(cfg, tmp_path)}
    m = plan["merge"].cfg
    assert m.model.path == str(tmp_path / "base" / "final")
    assert [(e.name, e.model, e.task) for e in m.experts] == [
        ("rev_expert", str(tmp_path / "rev_expert" / "final"), "reversal"),
        ("shift_expert", str(tmp_path / "shift_expert" / "final"), "shift")]
    assert all(e.eval == str(tmp_path / "data" / "eval.jsonl") for e in m.experts)
    assert m.eval.validation_rows > 0  # the merge is chosen on rows the table does not report
    assert plan["shift_expert"].cfg.model.path == str(tmp_path / "base" / "final")
    changed = with_data_defaults(load_pipeline_config(ROOT / "configs" / "recipes" / "experts.yaml",
                                                      ["stages.rev_expert.values.train.max_steps=7"]), tmp_path)
    b = {st.name: st for st in resolve(changed, tmp_path)}  # a changed expert changes the merge's hash
    assert b["merge"].hash != plan["merge"].hash and b["shift_expert"].hash == plan["shift_expert"].hash


@pytest.mark.parametrize("override, message", [
    ("stages.merge.from.experts=rev_expert", "from.experts must be a list of stage names"),
    ("stages.merge.from.experts=[rev_expert,nope]", "'nope' must name an earlier stage"),
    ("stages.merge.from.model=[base]", "from.model must be one stage name"),
])
def test_bad_merge_wiring_names_the_stage(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(ROOT / "configs" / "recipes" / "experts.yaml", [override])


def test_experts_summary_carries_the_merge_table_and_errors_name_the_stage(tmp_path, monkeypatch):
    table = {"base": {"reversal": 0.0, "shift": 0.0}, "rev_expert": {"reversal": 0.9, "shift": 0.0},
             "shift_expert": {"reversal": 0.0, "shift": 0.5}, "merged": {"reversal": 0.9, "shift": 0.48}}

    def run_stage(st, resume):
        st.dir.mkdir(parents=True, exist_ok=True)
        if st.kind == "merge":
            return {"eval/accuracy": 0.69, "accuracy": table, "merge_retention": 0.96}
        return {"eval/accuracy": 0.5}

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    monkeypatch.setattr(pipeline, "prepare_inputs", lambda *a: None)
    experts = ROOT / "configs" / "recipes" / "experts.yaml"
    s = pipeline.run_pipeline(load_pipeline_config(experts, ["report=false", "data.train=/t/t.jsonl"]), tmp_path)
    assert s["accuracy"] == table and s["merge_retention"] == 0.96

    def failing(st, resume):
        from posttrain.core.data import DatasetError
        raise DatasetError("cot: tier A is empty")

    monkeypatch.setattr(pipeline, "run_stage", failing)
    with pytest.raises(Exception, match="stage 'base' \\(sft\\): cot: tier A is empty"):
        pipeline.run_pipeline(load_pipeline_config(experts, ["report=false", "data.train=/t/u.jsonl"]), tmp_path / "b")


def test_cot_recipe_feeds_the_cot_file_to_the_student(tmp_path):
    cfg = with_data_defaults(load_pipeline_config(ROOT / "configs" / "recipes" / "cot.yaml"), tmp_path)
    plan = {st.name: st for st in resolve(cfg, tmp_path)}
    assert plan["cot"].cfg.model.path == str(tmp_path / "teacher" / "final")
    assert plan["cot"].cfg.data.sources == str(tmp_path / "data" / "train.jsonl")
    assert plan["cot"].outputs == {"model": str(tmp_path / "teacher" / "final"),
                                   "sft_data": str(tmp_path / "cot" / "sft.jsonl")}
    assert plan["student"].cfg.data.train == str(tmp_path / "cot" / "sft.jsonl")
    assert plan["student"].cfg.model.path == str(tmp_path / "teacher" / "final")
