"""Pool fault handling on real Ray with fake engine actors (no vLLM, fast):
hung or failing weight sync, stale weight versions, dying and hanging generators
(RELIABILITY.md #1 and #7)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from posttrain.core.config import EngineConfig, RayConfig
from rollouts.types import PromptInput, Rollout, SamplingSpec


class FakeEngineActor:
    """Behaviour is steered by files in the `model` folder, so it survives restarts."""

    def __init__(self, model: str, engine_kwargs: dict):
        self.dir, self.version = Path(model), 0
        self.incarnation = f"{os.getpid()}-{time.time_ns()}"

    def _once(self, name: str) -> bool:
        """True for exactly one call across all actors while the flag file exists: the
        `.done` marker is claimed with O_EXCL, so two actors cannot both see it missing."""
        if not (self.dir / name).exists():
            return False
        try:
            fd = os.open(self.dir / f"{name}.done", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    def ready(self):
        return {"pid": os.getpid(), "version": self.version, "startup_s": 0.0, "incarnation": self.incarnation}

    def state(self):
        return self.incarnation, self.version

    def pid(self):
        return os.getpid()

    def load_weights(self, state_dict, version):
        if self._once("sync_hang"):
            time.sleep(3600)
        if (self.dir / "sync_raise").exists():
            raise RuntimeError("engine rejected the weights")
        self.version = version
        return version

    def generate(self, units, temperature, top_p, max_tokens, base_seed, ignore_eos=False):
        if self._once("die"):
            os._exit(1)
        if self._once("gen_hang"):
            time.sleep(3600)
        version = self.version - 1 if self._once("stale") else self.version
        return [Rollout(key[1], key[2], ids, [key[2]], [-0.5], str(key[2]), weight_version=version, step=key[0])
                for key, ids in units]


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    return tmp_path_factory.mktemp("control")


@pytest.fixture(autouse=True)
def _clean(control):
    yield
    for f in control.iterdir():
        f.unlink()


@pytest.fixture(scope="module")
def pool(control):
    import sys

    from ray import cloudpickle

    from rollouts.actors import RolloutPool

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

    p = RolloutPool(str(control), EngineConfig(num_actors=2, num_cpus_per_actor=0.5, start_timeout_s=60),
                    RayConfig(num_cpus=2), unit_timeout_s=20, sync_timeout_s=3, actor_cls=FakeEngineActor,
                    max_restarts=50)  # one pool for the module: restarts add up across tests
    yield p
    p.close()


PROMPTS = [PromptInput(f"p{i}", [1, 2, i]) for i in range(6)]
SPEC = SamplingSpec(n=3, max_tokens=1)


def _keys(out):
    return [(r.prompt_id, r.sample_idx) for r in out]


def test_hung_weight_sync_restarts_the_engine_within_the_timeout(pool, control):
    (control / "sync_hang").touch()
    t0 = time.monotonic()
    pool.update_weights({}, version=1)
    assert time.monotonic() - t0 < 30
    assert pool.restarts == 1
    out = pool.generate(PROMPTS, SPEC, step=1)
    assert {r.weight_version for r in out} == {1}


def test_failing_weight_sync_is_an_error_not_a_silent_success(pool, control):
    from rollouts.actors import WeightSyncError

    (control / "sync_raise").touch()
    with pytest.raises(WeightSyncError, match="weight version 1"):
        pool.update_weights({}, version=1)
    (control / "sync_raise").unlink()
    pool.update_weights({}, version=1)


def test_stale_results_are_rejected_and_redone(pool, control):
    pool.update_weights({}, version=4)
    (control / "stale").touch()
    out = pool.generate(PROMPTS, SPEC, step=2)
    assert {r.weight_version for r in out} == {4}
    assert _keys(out) == [(p.prompt_id, j) for p in PROMPTS for j in range(3)]


def test_dead_generator_units_come_back_exactly_once_with_current_weights(pool, control):
    pool.update_weights({}, version=2)
    (control / "die").touch()
    out = pool.generate(PROMPTS, SPEC, step=3)
    assert _keys(out) == [(p.prompt_id, j) for p in PROMPTS for j in range(3)]
    assert {r.weight_version for r in out} == {2}  # the restarted actor was re-synced first


def test_hung_generator_is_a_timeout_error(pool, control):
    from rollouts.actors import RolloutTimeout

    (control / "gen_hang").touch()
    pool.unit_timeout_s = 3
    t0 = time.monotonic()
    with pytest.raises(RolloutTimeout, match="not back after 3s"):
        pool.generate(PROMPTS, SPEC, step=4)
    assert time.monotonic() - t0 < 15
    pool.unit_timeout_s = 20
    for i in range(len(pool.actors)):
        pool._restart(i, reason="test cleanup")
