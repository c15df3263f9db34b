"""RFT: filtering (verifier, dedup, cap, per-prompt accuracy) and the tiny config end to end."""

import json

import pytest

from rollouts.types import Rollout
from tests.posttrain.phase_fixtures import TINY, task_files


class ScriptedGenerator:
    """Answers by prompt position: prompt 0 always right, prompt 1 never, others half right with a duplicate."""

    weight_version = 0

    def __init__(self, answers):
        self.answers = answers  # prompt id -> answer

    def generate(self, prompts, sampling, step=0):
        out = []
        for j, p in enumerate(prompts):
            ans = self.answers[p.prompt_id]
            for i in range(sampling.n):
                right = j % 3 == 0 or (j % 3 == 2 and i % 2 == 0)
                text = (ans if i % 4 else f" {ans} ") if right else "0"
                out.append(Rollout(p.prompt_id, i, list(p.token_ids), [5], [-0.1], text, "stop", 0, step))
        return out

    def update_weights(self, state_dict, version):
        pass

    def close(self):
        pass


@pytest.fixture
def setup(tmp_path):
    from posttrain.core.data import load_rows
    from posttrain.tasks.tiny import make_tiny_model

    train, held = task_files(tmp_path, n=12, n_eval=8)
    model = make_tiny_model(train, tmp_path / "model", hidden=64, layers=1, heads=1)
    rows = load_rows(train)
    return tmp_path, train, held, model, {r["id"]: r["answer"] for r in rows}


def test_kept_set_accuracy_and_rl_prompts(setup):
    from posttrain.core.config import load_config
    from posttrain.phases import rft

    tmp_path, train, held, model, answers = setup
    cfg = load_config(rft.Config, TINY / "rft.yaml", [
        f"model.path={model}", f"data.prompts={train}", f"data.eval={held}", "sampling.k=4",
        "filter.max_per_prompt=2", "sft.train.max_steps=2", "sft.train.batch_size=4", "eval.max_rows=8"])
    s = rft.run(cfg, tmp_path / "run", generator=ScriptedGenerator(answers))
    run = tmp_path / "run"
    acc = [json.loads(x) for x in (run / "prompt_accuracy.jsonl").read_text().splitlines()]
    assert [a["accuracy"] for a in acc[:3]] == [1.0, 0.0, 0.5]
    # prompt 0: 4 right answers, 2 distinct after stripping -> dedup leaves 1 (" 12 " == "12" stripped)
    assert [a["kept"] for a in acc[:3]] == [1, 0, 1]
    kept = [json.loads(x) for x in (run / "kept.jsonl").read_text().splitlines()]
    assert all(k["completion"][0]["content"].strip() == answers[k["prompt_id"]] for k in kept)
    rl = [json.loads(x)["id"] for x in (run / "rl_prompts.jsonl").read_text().splitlines()]
    assert rl == [a["id"] for a in acc if 0 < a["accuracy"] < 1]
    scored = (run / "scored.jsonl").read_text().splitlines()
    assert len(scored) == 12 * 4
    assert s["rft/kept"] == len(kept) and (run / "final" / "config.json").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(x["phase"] == "rft" for x in lines) and "eval/accuracy" in lines[-1]


def test_nothing_accepted_is_a_clear_error(setup):
    from posttrain.core.config import load_config
    from posttrain.core.data import DatasetError
    from posttrain.phases import rft

    tmp_path, train, held, model, answers = setup
    cfg = load_config(rft.Config, TINY / "rft.yaml", [f"model.path={model}", f"data.prompts={train}",
                                                      "sampling.k=2", "filter.reward.threshold=2.0"])
    with pytest.raises(DatasetError, match="no sample was accepted"):
        rft.run(cfg, tmp_path / "run", generator=ScriptedGenerator(answers))
    assert (tmp_path / "run" / "scored.jsonl").is_file()


def test_tiny_config_with_hf_generator(setup):
    """The real path: HF generator sampling, exact verifier (threshold 0 keeps all), SFT, final/ loads."""
    from transformers import AutoModelForCausalLM

    from posttrain.core.config import load_config
    from posttrain.phases import rft

    tmp_path, train, held, model, _ = setup
    cfg = load_config(rft.Config, TINY / "rft.yaml", [
        f"model.path={model}", f"data.prompts={train}", f"data.eval={held}", "sampling.k=3",
        "sampling.max_tokens=4", "filter.reward.threshold=0.0", "sft.train.max_steps=2", "sft.train.batch_size=4"])
    s = rft.run(cfg, tmp_path / "run")
    assert s["rft/prompts"] == 12 and s["rft/kept"] >= 12
    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")


def test_reward_model_filter_compares_with_the_reference(setup, monkeypatch):
    """Without a verifier, a sample is kept when the RM scores it above the reference answer."""
    from posttrain.core.config import load_config
    from posttrain.phases import rft

    tmp_path, train, held, model, answers = setup
    # stand-in RM score: the length of the response (" 12 " beats "12"; "0" loses)
    monkeypatch.setattr(rft, "reward_scores",
                        lambda rm, tok, prompts, sides, batch_size=32: [float(len(s[0]["content"])) for s in sides])
    cfg = load_config(rft.Config, TINY / "rft.yaml", [
        f"model.path={model}", f"data.prompts={train}", "data.eval=null", "sampling.k=4", "filter.reward=null",
        f"filter.reward_model={model}", "sft.train.max_steps=1", "sft.train.batch_size=4"])
    rft.run(cfg, tmp_path / "run", generator=ScriptedGenerator(answers))
    acc = [json.loads(x) for x in (tmp_path / "run" / "prompt_accuracy.jsonl").read_text().splitlines()]
    assert [a["accuracy"] for a in acc[:3]] == [0.25, 0.0, 0.25]
    scored = [json.loads(x) for x in (tmp_path / "run" / "scored.jsonl").read_text().splitlines()]
    assert all(isinstance(s["reward"], float) for s in scored)


def test_retraining_can_keep_hinted_copies_of_the_sft_data(setup):
    """`sft.hinted_copies` reaches the retraining's SFT data: the kept set (no hints) is
    unchanged, the mixed-in task file (rows with hints) gains hinted prompts."""
    from posttrain.core.config import build_config
    from posttrain.core.data import write_jsonl
    from posttrain.phases import rft
    from posttrain.phases.sft import build_train_dataset

    tmp, train, held, model, _ = setup
    kept = tmp / "kept.jsonl"
    write_jsonl(kept, [{"id": "k", "prompt": [{"role": "user", "content": "What is 1 + 1?"}],
                        "completion": [{"role": "assistant", "content": "2"}]}])
    cfg = build_config(rft.Config, {"model": {"path": str(model)}, "data": {"prompts": str(train), "eval": str(held)},
                                    "sft": {"hinted_copies": 2}})
    assert rft.RFTSFT().hinted_copies == 0
    cfg.sft.extra = [rft.DataSource(path=str(train), weight=1.0)]
    data = rft.sft_config(cfg, kept, str(model)).data
    assert data.hinted_copies == 2
    plain = type(data).model_validate({**data.model_dump(), "hinted_copies": 0})

    def hinted(d):  # rows of the retraining set whose question carries a hint
        return sum("\nHint: " in r["prompt"][-1]["content"] for r in build_train_dataset(d))

    assert hinted(plain) == 0 and hinted(data) > 0


SERVICE_PLUGIN = '''
import ray


class SeesRay:
    """A service reward (like a judge) that scores 1 only when Ray is up with the run's namespace."""

    def __init__(self, namespace):
        self.namespace = namespace

    def score(self, completions, samples):
        ok = ray.is_initialized() and ray.get_runtime_context().namespace == self.namespace
        return [1.0 if ok else 0.0] * len(completions)

    def close(self):
        pass
'''


@pytest.mark.parametrize("phase", ["rft", "filter"])
def test_reward_services_score_inside_the_runs_ray(setup, phase):
    """A service reward (judge, reward model) runs on the Ray the phase started with its own `ray`
    settings, after the rollouts (the pool used to stop Ray first, and the service started one with
    defaults); and Ray is stopped when the phase ends."""
    import ray

    from posttrain.core.config import load_config
    from posttrain.core.data import DatasetError
    from posttrain.phases import filter as filter_phase
    from posttrain.phases import rft

    tmp_path, train, held, model, answers = setup
    plugin = tmp_path / "sees_ray.py"
    plugin.write_text(SERVICE_PLUGIN)
    reward = f"{{components: [{{name: '{plugin}:SeesRay', kwargs: {{namespace: mine}}}}], threshold: 0.5}}"
    common = [f"model.path={model}", f"data.prompts={train}", "sampling.k=2", "ray.num_cpus=1", "ray.namespace=mine"]
    if phase == "rft":
        cfg = load_config(rft.Config, TINY / "rft.yaml", [*common, f"data.eval={held}", f"filter.reward={reward}", "sft.train.max_steps=1",
                                                          "sft.train.batch_size=4"])
        rft.run(cfg, tmp_path / "run", generator=ScriptedGenerator(answers))
        accuracy = tmp_path / "run" / "prompt_accuracy.jsonl"
    else:
        cfg = load_config(filter_phase.Config, None, [*common, f"reward={reward}"])
        with pytest.raises(DatasetError, match="no prompt has"):  # every prompt is right: none left to filter in
            filter_phase.run(cfg, tmp_path / "run", generator=ScriptedGenerator(answers))
        accuracy = tmp_path / "run" / "prompt_accuracy.jsonl"
    assert [json.loads(x)["accuracy"] for x in accuracy.read_text().splitlines()] == [1.0] * 12
    assert not ray.is_initialized()
