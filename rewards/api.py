"""The reward plugin API: `@reward(name)`, reward references, and results that are
values or failures (never a silent 0).

A reward is a plain function, per sample `fn(completion, sample, **kwargs) -> float`
or per batch (`batched=True`) `fn(completions, samples, **kwargs) -> list[float]`,
sync or `async def`. A *service* reward (`@reward_service`) is a class built once with
the spec's kwargs whose `score(completions, samples)` returns a list of floats or
`RewardResult`s; it runs in the scoring process (judges and reward models are Ray
actors behind it) and owns its timeouts.

A reward is named by a registered name, by an entry point of the group
`posttrain.rewards`, by `path/to/file.py:function` or by `package.module:function`;
rewards/resolve.py finds it.

>>> @reward("shout_demo")
... def shout(completion, sample):
...     return float(completion.isupper())
>>> REWARDS.get("shout_demo").fn("HI", {})
1.0
>>> check_value(float("nan")).error
'non-finite reward nan'
>>> check_value("1.0").error
"wrong type: expected a float, got str '1.0'"
"""

from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from posttrain.core.registry import Registry


class RewardError(ValueError):
    """A reward cannot be loaded or configured; the message names the plugin."""


class RewardFailureLimit(RuntimeError):
    """Too many samples failed to score: the run stops instead of training on noise."""

    def __init__(self, message: str, reward: str, failed_fraction: float, examples: Sequence[str]):
        super().__init__(message)
        self.reward = reward
        self.failed_fraction = failed_fraction
        self.examples = list(examples)


@dataclass(frozen=True)
class RewardResult:
    """A score or a failure: exactly one of `value` / `error` is set."""

    value: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @staticmethod
    def fail(reason: str) -> "RewardResult":
        return RewardResult(None, reason)


@dataclass(frozen=True)
class RewardFn:
    """A registered reward. `module`/`file` let a fresh worker process import it again."""

    name: str
    fn: Callable[..., Any]
    batched: bool = False
    is_async: bool = False
    service: bool = False  # a class: built once, `score(completions, samples)`, `close()`
    module: str | None = None
    file: str | None = None
    doc: str = field(default="", compare=False)

    @property
    def ref(self) -> "RewardRef":
        return RewardRef(self.name, self.module, self.file)


@dataclass(frozen=True)
class RewardRef:
    """Enough to find a reward again in another process (picklable)."""

    name: str
    module: str | None = None
    file: str | None = None


REWARDS: Registry[RewardFn] = Registry("reward")


def _register(rf: RewardFn) -> None:
    """Add to the registry; the same function imported twice (reload, doctest) replaces itself."""
    old = REWARDS._entries.get(rf.name)
    if old is not None and old.fn is not rf.fn and _same_source(old.fn, rf.fn):
        REWARDS._entries[rf.name] = rf
        return
    REWARDS.add(rf.name, rf)


def _same_source(a: Any, b: Any) -> bool:
    try:
        return a.__qualname__ == b.__qualname__ and inspect.getsourcefile(a) == inspect.getsourcefile(b)
    except TypeError:
        return False


def _make(name: str, fn: Callable, batched: bool, service: bool) -> RewardFn:
    target = fn.score if service else fn
    module = getattr(fn, "__module__", None)
    try:
        file = inspect.getsourcefile(fn)  # the fallback when a worker cannot import `module`
    except TypeError:
        file = None
    if module in (None, "__main__", "__mp_main__") or module.startswith("_posttrain_file_"):
        module = None
    doc = (inspect.getdoc(fn) or "").split("\n\n")[0]
    return RewardFn(name, fn, batched, inspect.iscoroutinefunction(target), service, module, file, doc)


def reward(name: str, batched: bool = False) -> Callable[[Callable], Callable]:
    """Register `fn(completion, sample) -> float` (or batched: lists in, list out)."""

    def deco(fn: Callable) -> Callable:
        _register(_make(name, fn, batched, service=False))
        return fn

    return deco


def reward_service(name: str) -> Callable[[type], type]:
    """Register a class `cls(**kwargs)` with `score(completions, samples)` and `close()`."""

    def deco(cls: type) -> type:
        if not callable(getattr(cls, "score", None)):
            raise TypeError(f"reward service {name!r}: {cls.__name__} needs a score(completions, samples) method")
        _register(_make(name, cls, batched=True, service=True))
        return cls

    return deco


def check_kwargs(rf: RewardFn, kwargs: dict) -> None:
    """Fail at load time, naming the reward, when a config passes kwargs it does not take."""
    target = rf.fn.__init__ if rf.service else rf.fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    args = (None,) if rf.service else (None, None)
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        accepted = [p for p in sig.parameters if p not in ("self", "completion", "sample", "completions", "samples")]
        raise RewardError(f"reward {rf.name!r}: bad kwargs {sorted(kwargs)} ({e}); it accepts: "
                          f"{', '.join(accepted) or 'no kwargs'}") from None


def check_value(value: Any) -> RewardResult:
    """Turn whatever a plugin returned into a RewardResult (never a silent 0)."""
    if isinstance(value, RewardResult):
        return value if not value.ok else check_value(value.value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            shown = f"{value!r:.80}"
        except Exception:  # a hostile __repr__
            shown = "<unprintable>"
        return RewardResult(None, f"wrong type: expected a float, got {type(value).__name__} {shown}")
    value = float(value)
    if not math.isfinite(value):
        return RewardResult(None, f"non-finite reward {value}")
    return RewardResult(value)


def check_batch(values: Any, n: int) -> list[RewardResult]:
    """Results of a batched call: a list of exactly `n` values, each checked."""
    if not isinstance(values, (list, tuple)):
        return [RewardResult.fail(f"wrong type: batched reward returned {type(values).__name__}, not a list")] * n
    if len(values) != n:
        return [RewardResult.fail(f"wrong count: batched reward returned {len(values)} scores for {n} samples")] * n
    return [check_value(v) for v in values]


def describe_exception(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"plugin called sys.exit({e.code!r})"
    if isinstance(e, KeyboardInterrupt):
        return "KeyboardInterrupt"
    text = str(e)
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def call_reward(rf: RewardFn, completions: list[str], samples: list[dict], kwargs: dict) -> list[RewardResult]:
    """Run a (non-service) reward in this process, turning every outcome into a result.

    No timeout here: the worker pool bounds calls by killing the process.
    """
    if rf.batched:
        try:
            out = rf.fn(completions, samples, **kwargs)
            if rf.is_async:
                out = _run_async(out)
        except BaseException as e:
            return [RewardResult.fail(describe_exception(e))] * len(completions)
        return check_batch(out, len(completions))
    results = []
    for c, s in zip(completions, samples):
        results.append(call_one(rf, c, s, kwargs))
    return results


def call_one(rf: RewardFn, completion: str, sample: dict, kwargs: dict) -> RewardResult:
    try:
        out = rf.fn(completion, sample, **kwargs)
        if rf.is_async:
            out = _run_async(out)
    except BaseException as e:
        return RewardResult.fail(describe_exception(e))
    return check_value(out)


def _run_async(coro):
    return asyncio.run(coro)
