"""Merging expert checkpoints that share a base: the tensor arithmetic is PEFT's.

Each expert's *task vector* is `expert - base`, per parameter tensor. PEFT's merge
utilities (`peft.utils.merge_utils`, the functions behind `add_weighted_adapter`) combine
the task vectors of one tensor, and the merged tensor is `base + combined`:

    linear           task_arithmetic with the weights scaled to sum to 1 (a weighted average)
    task_arithmetic  sum_i w_i * tau_i                                (Ilharco et al. 2023)
    ties             trim to the top-`density` magnitudes, elect a sign, disjoint mean
                                                                      (Yadav et al. 2023)
    dare_linear      drop a random 1-density, rescale by 1/density, then task arithmetic
    dare_ties        the DARE drop, then the TIES sign election       (Yu et al. 2024)

Why PEFT rather than mergekit: PEFT is already in the stack (SFT's LoRA), its functions
take plain tensors so one code path merges full fine-tunes and LoRA adapters alike (an
adapter is first folded into its base with `merge_and_unload`), and mergekit is not
installed here (it would add a dependency tree of its own for the same five formulas).

A LoRA expert folder (one with `adapter_config.json`) is loaded onto the merge's base
model and folded in; a full expert folder is read as is. Experts must have the base's
architecture (model type and every parameter name and shape) and the base's tokenizer
(vocabulary and chat template); otherwise the merge stops with an error naming the expert.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from posttrain.core.config import ConfigError
from posttrain.core.models import load_causal_lm, load_tokenizer

Method = Literal["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
METHODS: tuple[str, ...] = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")


def _combiner(method: str, density: float, majority_sign: str) -> Callable[[list[torch.Tensor], torch.Tensor],
                                                                          torch.Tensor]:
    from peft.utils import merge_utils as mu  # peft: heavy, imported when a merge runs

    if method in ("linear", "task_arithmetic"):
        return mu.task_arithmetic
    if method == "ties":
        return lambda t, w: mu.ties(t, w, density, majority_sign)
    if method == "dare_linear":
        return lambda t, w: mu.dare_linear(t, w, density)
    if method == "dare_ties":
        return lambda t, w: mu.dare_ties(t, w, density, majority_sign)
    raise ConfigError(f"unknown merge method {method!r}; use one of {', '.join(METHODS)}")


def merge_state_dicts(base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]], method: str,
                      weights: list[float], density: float = 1.0, majority_sign: str = "total",
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """base + combine([expert_i - base]) per floating-point tensor; other tensors are the base's.

    >>> b = {"w": torch.zeros(2)}
    >>> e = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 3.0])}]
    >>> merge_state_dicts(b, e, "task_arithmetic", [1.0, 1.0])["w"].tolist()
    [1.0, 3.0]
    >>> merge_state_dicts(b, e, "linear", [1.0, 1.0])["w"].tolist()
    [0.5, 1.5]
    """
    if len(weights) != len(experts):
        raise ConfigError(f"merge: {len(weights)} weights for {len(experts)} experts; give one weight per expert")
    if method == "linear":
        total = sum(weights)
        if total <= 0:
            raise ConfigError(f"merge: linear weights must have a positive sum (got {weights})")
        weights = [w / total for w in weights]
    combine = _combiner(method, density, majority_sign)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # DARE's random drop: the same merge for the same seed
    try:
        w = torch.tensor(weights, dtype=torch.float32)
        out = {}
        for name, b in base.items():
            if not torch.is_floating_point(b):
                out[name] = b
                continue
            taus = [(e[name].to(torch.float32) - b.to(torch.float32)) for e in experts]
            out[name] = (b.to(torch.float32) + combine(taus, w)).to(b.dtype)
        return out
    finally:
        torch.random.set_rng_state(gen_state)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _model_type(path: str | Path) -> str | None:
    cfg = Path(path) / "config.json"
    return json.loads(cfg.read_text()).get("model_type") if cfg.is_file() else None


def load_expert_state(base_path: str, expert_path: str, name: str, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """An expert's full state dict (a LoRA adapter folded into the base first)."""
    if not Path(expert_path).is_dir():
        raise ConfigError(f"merge: expert {name!r}: model folder {expert_path} does not exist; did its stage run?")
    if is_adapter(expert_path):
        from peft import PeftModel  # peft: heavy, imported when a merge runs

        model = PeftModel.from_pretrained(load_causal_lm(base_path, dtype), expert_path).merge_and_unload()
    else:
        if _model_type(expert_path) != _model_type(base_path):
            raise ConfigError(f"merge: expert {name!r} ({expert_path}) is a {_model_type(expert_path)} model but "
                              f"the base is {_model_type(base_path)}; experts must be trained from the same base")
        model = load_causal_lm(expert_path, dtype)
    return {k: v.detach() for k, v in model.state_dict().items()}


def check_compatible(base: dict[str, torch.Tensor], expert: dict[str, torch.Tensor], name: str) -> None:
    """Same parameter names and shapes as the base, or a ConfigError naming the expert."""
    missing, extra = sorted(set(base) - set(expert)), sorted(set(expert) - set(base))
    if missing or extra:
        raise ConfigError(f"merge: expert {name!r} has a different architecture than the base (parameters "
                          f"missing: {missing[:3]}, extra: {extra[:3]}); experts must share the base")
    for k, t in base.items():
        if expert[k].shape != t.shape:
            raise ConfigError(f"merge: expert {name!r}: parameter {k} has shape {tuple(expert[k].shape)}, the "
                              f"base {tuple(t.shape)}; experts must share the base's architecture")


def check_tokenizer(base_path: str, expert_path: str, name: str) -> None:
    """The expert's tokenizer (adapters may carry none) must equal the base's."""
    if not any((Path(expert_path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return
    a, b = load_tokenizer(base_path), load_tokenizer(expert_path)
    if a.get_vocab() != b.get_vocab() or getattr(a, "chat_template", None) != getattr(b, "chat_template", None):
        raise ConfigError(f"merge: expert {name!r} ({expert_path}) has a different tokenizer than the base "
                          f"{base_path} (vocabulary or chat template); experts must share the base's tokenizer")


def merged_model(base_path: str, state: dict[str, torch.Tensor], dtype: str = "float32") -> Any:
    model = load_causal_lm(base_path, dtype)
    model.load_state_dict(state)
    return model
