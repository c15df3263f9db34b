"""Ray-actor reward services: the reward model on a tiny Qwen2ForSequenceClassification,
and timeouts/restarts of a hanging actor. One local Ray for the module."""

import math
import time

import pytest

from rewards.api import RewardError
from rewards.scorer import Scorer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():  # another module's Ray: use it, leave it running
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from posttrain.tasks.tiny import train_tokenizer

    out = tmp_path_factory.mktemp("rm")
    tok = train_tokenizer(["What is 2+3? The answer is 5.", "hello world, a longer completion"] * 5, 256)
    tok.save_pretrained(out)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, head_dim=64, num_labels=1,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(cfg).save_pretrained(out)
    return str(out)


def test_reward_model_scores_in_batches(ray_local, tiny_rm):
    comps = ["5", "The answer is 5", "hello world, a longer completion", "x"]
    samples = [{"prompt": "What is 2+3?"}] * 4
    spec = {"name": "reward_model", "kwargs": {"model": tiny_rm, "batch_size": 3, "timeout_s": 60}}
    with Scorer([spec]) as scorer:
        batch = scorer.score(comps, samples)
        one = scorer.score(comps[1:2], samples[1:2])
    assert batch.errors == [None] * 4 and all(math.isfinite(r) for r in batch.rewards)
    assert len(set(batch.rewards)) > 1
    assert one.rewards[0] == pytest.approx(batch.rewards[1], abs=1e-5)  # padding does not change a score
    assert "reward/reward_model/mean" in batch.metrics


def test_reward_model_refuses_a_multi_label_head(ray_local, tiny_rm, tmp_path):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_rm)
    assert cfg.num_labels == 1
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_rm, bad)
    cfg.num_labels = 3
    cfg.save_pretrained(bad)
    with pytest.raises(RewardError, match="reward_model.*failed to start"):
        Scorer([{"name": "reward_model", "kwargs": {"model": str(bad), "start_timeout_s": 60}}])


def test_a_hanging_actor_times_out_is_restarted_and_samples_fail(ray_local):
    from rewards.judge import JudgeReward
    from rewards.ray_actors import ActorHandle

    class _Sleeper:  # local: Ray pickles it by value
        def __init__(self, delay: float):
            self.delay = delay

        def ready(self):
            return True

        def generate(self, prompts, max_tokens, temperature):
            time.sleep(self.delay)
            return ["Score: 7"] * len(prompts)

    remote = ray_local.remote(_Sleeper).options(num_cpus=0)
    judge = JudgeReward.__new__(JudgeReward)
    judge.template, judge.max_tokens, judge.temperature, judge.last_outputs = "reference", 8, 0.0, []
    judge.handle = ActorHandle("judge", lambda: remote.remote(600), 30, call_timeout_s=1.0, retries=1,
                               backoff_s=0.1)
    t0 = time.monotonic()
    results = judge.score(["a", "b"], [{"prompt": "q", "answer": "a"}] * 2)
    assert time.monotonic() - t0 < 20
    assert all(not r.ok and "timeout: no answer within 1s (actor killed) after 2 attempts" in r.error
               for r in results)
    assert judge.handle.restarts == 1
    judge.handle.factory = lambda: remote.remote(0)  # a healthy actor again
    judge.handle._kill()
    ok = judge.score(["a"], [{"prompt": "q", "answer": "a"}])
    assert ok[0].value == pytest.approx(6 / 9)
    judge.close()
