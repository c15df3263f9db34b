"""The policy-loss registry: each loss with the settings it declares.

A loss's settings are the keyword parameters of its pure function (posttrain.losses) with
their defaults, read from its signature: GSPO clips at eps 3e-4/4e-4, GRPO at 0.2/0.28.
The `algo:` config section is validated against these declarations at load time, and the
trainer binds them once (`POLICY_LOSSES.get(name).bind(settings)`) without naming a key.

>>> POLICY_LOSSES.get("grpo").settings
{'eps_low': 0.2, 'eps_high': 0.28}
>>> POLICY_LOSSES.get("gspo").check({"eps_hi": 1e-3})
Traceback (most recent call last):
...
ValueError: policy loss 'gspo' has no setting 'eps_hi' (did you mean 'eps_high'?); its settings: eps_low=0.0003, eps_high=0.0004
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from posttrain.core.registry import Registry
from posttrain.losses import grpo_loss, gspo_loss

LossFn = Callable[..., Any]


@dataclass(frozen=True)
class PolicyLoss:
    name: str
    fn: LossFn
    fixed: dict[str, Any] = field(default_factory=dict)  # arguments this entry pins (e.g. GSPO's variant)

    @property
    def settings(self) -> dict[str, Any]:
        """Declared settings and their defaults: the function's keyword parameters not pinned here."""
        return {p.name: p.default for p in inspect.signature(self.fn).parameters.values()
                if p.default is not inspect.Parameter.empty and p.name not in self.fixed}

    def check(self, args: dict[str, Any]) -> dict[str, float]:
        known = self.settings
        for key, value in args.items():
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                accepted = ", ".join(f"{k}={v}" for k, v in known.items()) or "none"
                raise ValueError(f"policy loss {self.name!r} has no setting {key!r}{hint}; its settings: {accepted}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"policy loss {self.name!r}: setting {key!r} must be a number, got {value!r}")
        return {k: float(v) for k, v in args.items()}

    def bind(self, args: dict[str, Any]) -> LossFn:
        """The loss with its settings applied: loss(logprobs, old_logprobs, advantages, response_mask)."""
        return functools.partial(self.fn, **self.fixed, **self.check(args))


POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")
for _loss in (PolicyLoss("gspo", gspo_loss, {"variant": "sequence"}),
              PolicyLoss("gspo_token", gspo_loss, {"variant": "token"}),
              PolicyLoss("grpo", grpo_loss)):
    POLICY_LOSSES.add(_loss.name, _loss)
