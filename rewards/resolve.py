"""Finding a reward by name: a registered or built-in name, an entry point of the group
`posttrain.rewards`, `path/to/file.py:function` or `package.module:function`.

Importing this module registers the built-in rewards (rewards/builtin).

>>> resolve_reward("exact").name
'exact'
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import rewards.builtin  # noqa: F401  (registers the built-in rewards)
from rewards.api import REWARDS, RewardError, RewardFn, RewardRef, _make, describe_exception

ENTRY_POINT_GROUP = "posttrain.rewards"


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _from_object(name: str, obj: Any, origin: str) -> RewardFn:
    """An object loaded from a module: already registered (decorated) or a plain function."""
    for rf in REWARDS._entries.values():
        if rf.fn is obj:
            return rf
    if isinstance(obj, RewardFn):
        return obj
    if inspect.isclass(obj):
        return _make(name, obj, batched=True, service=True)
    if not callable(obj):
        raise RewardError(f"reward {name!r}: {origin} is a {type(obj).__name__}, not a function")
    rf = _make(name, obj, batched=bool(getattr(obj, "batched", False)), service=False)
    if rf.module is None and rf.file is None:
        rf = RewardFn(rf.name, rf.fn, rf.batched, rf.is_async, False, None, origin.split(":")[0], rf.doc)
    return rf


def load_file(path: str | Path):
    """Import a Python file as a module (cached by absolute path)."""
    path = Path(path).resolve()
    mod_name = "_posttrain_file_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    if not path.is_file():
        raise RewardError(f"reward file {path} does not exist")
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[mod_name]
        raise RewardError(f"reward file {path} failed to import: {describe_exception(e)}") from e
    return module


def _resolve_target(name: str) -> RewardFn:
    where, _, attr = name.rpartition(":")
    if where.endswith(".py") or "/" in where:
        module = load_file(where)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise RewardError(f"reward {name!r}: cannot import module {where!r}: {describe_exception(e)}") from e
    if not hasattr(module, attr):
        raise RewardError(f"reward {name!r}: {where} has no attribute {attr!r}")
    rf = _from_object(name, getattr(module, attr), name)
    # Keep the spec's name so metrics read reward/<what the config says>/mean.
    module_name = None if where.endswith(".py") or "/" in where else where
    file = str(Path(where).resolve()) if module_name is None else None
    return RewardFn(name, rf.fn, rf.batched, rf.is_async, rf.service, module_name, file, rf.doc)


def resolve_reward(name: str) -> RewardFn:
    """Find a reward by registered name, entry point, `file.py:fn` or `pkg.module:fn`.

    Raises RewardError naming the reward and what is known when it cannot be found.
    """
    if name in REWARDS:
        return REWARDS.get(name)
    if ":" in name:
        return _resolve_target(name)
    eps = _entry_points()
    if name in eps:
        try:
            obj = eps[name].load()
        except Exception as e:
            raise RewardError(f"reward {name!r}: entry point {eps[name].value} failed to load: "
                              f"{describe_exception(e)}") from e
        rf = _from_object(name, obj, eps[name].value)
        if name not in REWARDS:
            REWARDS.add(name, RewardFn(name, rf.fn, rf.batched, rf.is_async, rf.service,
                                       rf.module, rf.file, rf.doc))
        return REWARDS.get(name)
    known = ", ".join(sorted(set(REWARDS.names()) | set(eps))) or "(none)"
    raise RewardError(f"unknown reward {name!r}; known: {known}; or name a function as "
                      "'path/to/file.py:function' or 'package.module:function'")


def uses_services(*rewards: Any) -> bool:
    """True when any component of these reward configs (None skipped) is a service (a judge, a
    reward model): those run as Ray actors, so the command must start Ray with its own settings first."""
    return any(resolve_reward(c.name).service for r in rewards if r is not None for c in r.components)


def resolve_ref(ref: RewardRef) -> RewardFn:
    """In a worker process: import what registered the reward, then look it up."""
    if ref.name not in REWARDS and ":" not in ref.name:
        imported = False
        if ref.module:
            try:
                importlib.import_module(ref.module)
                imported = True
            except ImportError:
                pass  # e.g. a test module imported under a rootdir-relative name
        if not imported and ref.file:
            load_file(ref.file)
    return resolve_reward(ref.name)


def list_rewards() -> list[RewardFn]:
    """Every registered and entry-point reward (entry points are loaded)."""
    out = {n: REWARDS.get(n) for n in REWARDS.names()}
    for name in _entry_points():
        if name not in out:
            try:
                out[name] = resolve_reward(name)
            except RewardError as e:
                out[name] = RewardFn(name, lambda *a, **k: None, doc=f"(broken: {e})")
    return [out[n] for n in sorted(out)]
