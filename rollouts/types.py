"""The data that crosses the rollout boundary, and the `Generator` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class Media:
    """The images of one prompt, by path: engines load them where they run, so a prompt's n
    samples share one decoded copy and nothing is re-encoded per sample. `sizes[i]`, when given,
    is the (height, width) image i is resized to first (SlowFast frames, core/video.py). An image
    given as a tuple of paths is a `grid` x `grid` mosaic of those frames (SlowFast's packed fast
    frames on a fixed-size encoder, core/video.plan_video)."""

    images: tuple[str | tuple[str, ...], ...]
    sizes: tuple[tuple[int, int], ...] = ()
    grid: int = 2


@dataclass(frozen=True)
class PromptInput:
    prompt_id: str
    token_ids: list[int]  # with media: one image token per image; the engine expands it
    media: Media | None = None


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int = 0  # base seed; each unit (step, prompt_id, sample_idx) derives its own
    ignore_eos: bool = False  # sample exactly max_tokens (benchmarks); EOS is not a stop


@dataclass
class Rollout:
    """One sampled response. `logprobs[t]` is log p(token_ids[t]) under the engine.
    With media, `prompt_token_ids` are the engine's expanded prompt (every image token in place)."""

    prompt_id: str
    sample_idx: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str = "stop"
    weight_version: int = 0
    step: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.step, self.prompt_id, self.sample_idx)


class Generator(Protocol):
    """Samples `sampling.n` responses per prompt with the current weights.

    `generate` returns len(prompts) * n rollouts, grouped by prompt in input order,
    samples in index order. `update_weights` installs a new HF state dict and stamps
    it with `version`; rollouts carry the version that produced them.
    """

    weight_version: int

    def generate(self, prompts: Sequence[PromptInput], sampling: SamplingSpec, step: int = 0) -> list[Rollout]: ...

    def update_weights(self, state_dict: dict[str, Any], version: int) -> None: ...

    def close(self) -> None: ...
