"""Rollout generation: a `Generator` protocol, a Ray pool of vLLM engines, and
in-process doubles for tests. `ray` and `vllm` are imported only where used."""

from rollouts.types import Generator, PromptInput, Rollout, SamplingSpec

__all__ = ["Generator", "PromptInput", "Rollout", "SamplingSpec"]
