"""A judge stand-in for the align tests: the real judge's prompt rendering and score
parsing, with a canned "model" instead of a vLLM engine in a Ray actor."""

from __future__ import annotations

from rewards.api import RewardResult, reward_service
from rewards.judge import parse_score, render_prompt


@reward_service("align_test_judge")
class CannedJudge:
    """Says "Score: 10" when the completion is quoted, rambles (unparsable) otherwise."""

    def __init__(self, template: str = "rubric"):
        self.template = template

    def score(self, completions: list[str], samples: list[dict]) -> list[RewardResult]:
        out = []
        for c, s in zip(completions, samples):
            render_prompt(self.template, c, s)  # a missing row field raises, like the real judge
            text = "Score: 10" if c.strip().startswith('"') else "I am not sure what to say here."
            value = parse_score(text)
            out.append(RewardResult(value) if value is not None else
                       RewardResult.fail(f"unparsable judge output: {text[:120]!r}"))
        return out

    def close(self) -> None:
        pass
