"""The merge phase: PEFT's arithmetic on task vectors, the selection rule, the contract
(final/ loads, summary table, retention) and bad input naming the expert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain.core.config import ConfigError, load_config
from posttrain.core.models import load_causal_lm, load_tokenizer, save_hf
from posttrain.phases import merge
from posttrain.phases.merging import merge_state_dicts
from posttrain.tasks.addition import make_addition_rows
from posttrain.tasks.reversal import make_reversal_rows
from posttrain.core.data import write_jsonl
from posttrain.tasks.tiny import make_tiny_model


def test_methods_on_hand_computed_task_vectors():
    base = {"w": torch.zeros(4), "step": torch.tensor(3)}
    e1 = {"w": torch.tensor([2.0, -1.0, 0.0, 0.5]), "step": torch.tensor(9)}
    e2 = {"w": torch.tensor([2.0, 1.0, 4.0, 0.0]), "step": torch.tensor(9)}
    ta = merge_state_dicts(base, [e1, e2], "task_arithmetic", [1.0, 0.5])
    torch.testing.assert_close(ta["w"], torch.tensor([3.0, -0.5, 2.0, 0.5]))
    assert ta["step"].item() == 3  # integer buffers are the base's
    lin = merge_state_dicts(base, [e1, e2], "linear", [3.0, 1.0])
    torch.testing.assert_close(lin["w"], torch.tensor([2.0, -0.5, 1.0, 0.375]))
    # TIES, density 1: sign elected by total mass per entry, then the mean of the agreeing values
    ties = merge_state_dicts(base, [e1, e2], "ties", [1.0, 1.0], density=1.0)
    torch.testing.assert_close(ties["w"], torch.tensor([2.0, 1.0, 4.0, 0.5]))
    # DARE is seeded: the same seed gives the same merge, and density 1 drops nothing
    d1 = merge_state_dicts(base, [e1, e2], "dare_linear", [1.0, 1.0], density=0.5, seed=1)
    d2 = merge_state_dicts(base, [e1, e2], "dare_linear", [1.0, 1.0], density=0.5, seed=1)
    torch.testing.assert_close(d1["w"], d2["w"])
    full = merge_state_dicts(base, [e1, e2], "dare_linear", [1.0, 1.0], density=1.0)
    torch.testing.assert_close(full["w"], torch.tensor([4.0, 0.0, 4.0, 0.5]))


def test_selection_rule_prefers_retention_then_mean():
    recs = [{"index": 0, "retention": 0.8, "accuracy": {"a": 0.9, "b": 0.9}},
            {"index": 1, "retention": 0.95, "accuracy": {"a": 0.5, "b": 0.5}},
            {"index": 2, "retention": 0.95, "accuracy": {"a": 0.6, "b": 0.5}}]
    best = max(recs, key=lambda r: (merge.candidate_key(r), -r["index"]))
    assert best["index"] == 2


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """A tiny base and two 'experts': copies with one task vector each (no training needed)."""
    d = tmp_path_factory.mktemp("merge")
    rows = make_addition_rows(40, seed=1) + make_reversal_rows(40, seed=1)
    write_jsonl(d / "eval.jsonl", rows)
    base = make_tiny_model(rows, d / "base", hidden=64, layers=1, heads=1, head_dim=64)
    tok = load_tokenizer(base)
    out = []
    for i in range(2):
        m = load_causal_lm(base)
        torch.manual_seed(i)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        out.append(save_hf(m, tok, d / f"e{i}"))
    return d, base, out


def _cfg(d, base, experts, *over):
    return load_config(merge.Config, None, [
        f"model.path={base}", "eval.max_rows=8", "eval.max_new_tokens=4",
        f"experts=[{{name: add, model: {experts[0]}, eval: {d}/eval.jsonl, task: addition}}, "
        f"{{name: rev, model: {experts[1]}, eval: {d}/eval.jsonl, task: reversal}}]",
        "candidates=[{method: task_arithmetic}, {method: ties, density: 0.5}, {method: dare_linear, density: 0.7}]",
        *over])


def test_merge_run_writes_table_and_loadable_final(experts, tmp_path):
    d, base, ex = experts
    summary = merge.run(_cfg(d, base, ex), tmp_path / "m")
    acc = summary["accuracy"]
    assert set(acc) == {"base", "add", "rev", "merged"}
    assert all(set(v) == {"addition", "reversal"} for v in acc.values())
    assert summary["tasks"] == {"add": "addition", "rev": "reversal"}
    assert len(summary["candidates"]) == 3
    assert 0.0 <= summary["merge_retention"] <= 1.0
    model = load_causal_lm(tmp_path / "m" / "final")  # one HF folder, weights = the chosen merge
    chosen = summary["chosen"]
    want = merge_state_dicts(load_causal_lm(base).state_dict(),
                             [load_causal_lm(p).state_dict() for p in ex], chosen["method"], chosen["weights"],
                             chosen["density"])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, want[k])
    lines = (tmp_path / "m" / "candidates.jsonl").read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1, 2]


def test_candidates_are_chosen_on_validation_rows_and_reported_on_the_rest(experts, tmp_path, monkeypatch):
    d, base, ex = experts
    cfg = _cfg(d, base, ex, "eval.validation_rows=5", "eval.max_rows=6")
    task, val, test = merge.task_rows(cfg.experts[0], cfg.eval.max_rows, cfg.eval.validation_rows)
    assert task == "addition" and len(val) == 5 and len(test) == 6
    assert not {r["id"] for r in val} & {r["id"] for r in test}
    seen = []
    real = merge.hf_greedy_eval

    def spy(model, tok, rows, *a):
        seen.append(frozenset(r["id"] for r in rows))
        return real(model, tok, rows, *a)

    monkeypatch.setattr(merge, "hf_greedy_eval", spy)
    summary = merge.run(cfg, tmp_path / "m")
    val_ids = {frozenset(r["id"] for r in merge.task_rows(e, 6, 5)[1]) for e in cfg.experts}
    # base: test; 2 experts: validation + test; 3 candidates: validation; the chosen merge: test
    assert sum(s in val_ids for s in seen) == 2 * 2 + 3 * 2 and len(seen) == 2 + 2 * 4 + 3 * 2 + 2
    assert summary["selection"]["validation_rows"] == 5
    assert summary["merge_retention"] == merge.retention(summary["accuracy"]["merged"], summary["accuracy"],
                                                         summary["tasks"])
    with pytest.raises(Exception, match="all taken by eval.validation_rows=40"):
        merge.run(_cfg(d, base, ex, "eval.validation_rows=40"), tmp_path / "n")


def test_lora_adapter_expert_is_folded_into_the_base(experts, tmp_path):
    from peft import LoraConfig, get_peft_model

    d, base, ex = experts
    pm = get_peft_model(load_causal_lm(base), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    pm.save_pretrained(tmp_path / "adapter")
    summary = merge.run(_cfg(d, base, [tmp_path / "adapter", ex[1]], "candidates=[{method: task_arithmetic}]"),
                        tmp_path / "m")
    assert summary["accuracy"]["merged"].keys() == {"addition", "reversal"}
    folded = pm.merge_and_unload().state_dict()
    want = merge_state_dicts(load_causal_lm(base).state_dict(), [folded, load_causal_lm(ex[1]).state_dict()],
                             "task_arithmetic", [1.0, 1.0])
    got = load_causal_lm(tmp_path / "m" / "final").state_dict()
    torch.testing.assert_close(got["model.layers.0.self_attn.q_proj.weight"],
                               want["model.layers.0.self_attn.q_proj.weight"])


def test_bad_experts_are_named(experts, tmp_path):
    d, base, ex = experts
    other = make_tiny_model(make_addition_rows(30, seed=9), tmp_path / "other", hidden=64, layers=1, heads=1,
                            head_dim=64)
    with pytest.raises(ConfigError, match="expert 'rev'.*(architecture|tokenizer)"):
        merge.run(_cfg(d, base, [ex[0], other]), tmp_path / "m")
    retok = tmp_path / "retok"  # the base's weights, another chat template
    save_hf(load_causal_lm(base), load_tokenizer(base), retok)
    tc = json.loads((retok / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (retok / "tokenizer_config.json").write_text(json.dumps(tc))
    (retok / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="expert 'rev'.*different tokenizer"):
        merge.run(_cfg(d, base, [ex[0], retok]), tmp_path / "m")
    with pytest.raises(ConfigError, match="expert 'rev'.*does not exist"):
        merge.run(_cfg(d, base, [ex[0], tmp_path / "nope"]), tmp_path / "m")
    with pytest.raises(ConfigError, match="one weight per expert"):
        merge.run(_cfg(d, base, ex, "candidates=[{method: linear, weights: [1]}]"), tmp_path / "m")


@pytest.mark.slow
@pytest.mark.engine
def test_merged_folder_loads_in_vllm_and_matches_transformers(experts, tmp_path):
    """The merged folder is a plain HF checkpoint: a vLLM engine (Ray actor) serves it, and its greedy
    completions mostly equal transformers' (an untrained model's logits are near ties, so a few may
    differ by float rounding)."""
    from posttrain.core.config import EngineConfig, RayConfig
    from rewards.config import default_reward
    from rewards.scorer import Scorer
    from rollouts.actors import RolloutPool
    from rollouts.evaluate import greedy_eval, hf_greedy_eval

    d, base, ex = experts
    merge.run(_cfg(d, base, ex, "candidates=[{method: ties, density: 0.5}]"), tmp_path / "m")
    final = tmp_path / "m" / "final"
    rows = make_addition_rows(6, seed=2)
    tok = load_tokenizer(final)
    with Scorer.from_config(default_reward("exact", workers=1)) as scorer:
        hf = hf_greedy_eval(load_causal_lm(final), tok, rows, scorer, 6)
        pool = RolloutPool(str(final), EngineConfig(num_actors=1, max_model_len=256), RayConfig(num_cpus=2),
                           unit_timeout_s=300)
        try:
            vl = greedy_eval(pool, tok, rows, scorer, 6)
        finally:
            pool.close()
    assert len(vl.completions) == len(rows)
    assert sum(vl.completions[k] == hf.completions[k] for k in hf.completions) >= len(rows) - 2
