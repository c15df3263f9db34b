"""Judge templates and parsing (pure), and one real vLLM judge in a Ray actor."""

import pytest

from rewards.judge import JudgeReward, parse_score, render_prompt


@pytest.mark.parametrize("text,value", [
    ("Score: 10", 1.0), ("score = 1", 0.0), ("**Score:** 4", 3 / 9), ("Score: 7/10", 6 / 9), ("5", 4 / 9),
    ("Score: 3 ... on reflection Score: 9", 8 / 9), ("Score: 11", None), ("Score: 0", None),
    ("great answer", None), ("", None),
])
def test_parse_score(text, value):
    got = parse_score(text)
    assert got == (pytest.approx(value) if value is not None else None)


def test_templates():
    row = {"prompt": [{"role": "user", "content": "Write a haiku."}], "rubric": ["5-7-5", "about autumn"]}
    text = render_prompt("rubric", "leaves fall", row)
    assert "1. 5-7-5\n2. about autumn" in text and "Write a haiku." in text
    with pytest.raises(KeyError, match="answer"):
        render_prompt("reference", "x", {"prompt": "q"})
    steps = render_prompt("steps", "x", {"prompt": "q", "steps": ["define", "solve"]})
    assert "1. define\n2. solve" in steps
    assert "Response:\nok" in render_prompt("safety", "ok", {"prompt": "q"})
    assert render_prompt("Q={prompt} A={completion}", "a", {"prompt": "q"}) == "Q=q A=a"


class _FakeHandle:
    def __init__(self, outputs):
        self.outputs = outputs

    def call(self, method, prompts, *args):
        return self.outputs[:len(prompts)]

    def close(self):
        pass


def test_unparsable_judge_output_is_a_recorded_failure():
    judge = JudgeReward.__new__(JudgeReward)
    judge.template, judge.max_tokens, judge.temperature, judge.last_outputs = "reference", 8, 0.0, []
    judge.handle = _FakeHandle(["Score: 10", "hmm, hard to say", "Score: 42"])
    res = judge.score(["a", "b", "c", "d"], [{"prompt": "q", "answer": "a"}] * 3 + [{"prompt": "q"}])
    assert res[0].value == 1.0
    assert res[1].error == "unparsable judge output: 'hmm, hard to say'"
    assert res[2].error.startswith("unparsable judge output")
    assert "answer" in res[3].error


class _PromptKeyedJudge:
    """A deterministic judge model: answers only the exact prompts it was given (a wrong
    prompt is a KeyError), as a real engine would be called."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.calls = answers, []

    def call(self, method, prompts, max_tokens, temperature):
        self.calls.append((method, max_tokens, temperature))
        return [self.answers[p] for p in prompts]


def test_judge_sends_the_rendered_prompt_and_parses_the_answer():
    sample = {"prompt": "What is 2+2?", "answer": "4"}
    judge = JudgeReward.__new__(JudgeReward)
    judge.template, judge.max_tokens, judge.temperature, judge.last_outputs = "reference", 8, 0.0, []
    judge.handle = _PromptKeyedJudge({render_prompt("reference", "4", sample): "Score: 10",
                                      render_prompt("reference", "five", sample): "Score: 1 (wrong)",
                                      render_prompt("reference", "4?", sample): "Score: 6/10"})
    res = judge.score(["4", "five", "4?"], [sample] * 3)
    assert [r.value for r in res] == [1.0, 0.0, pytest.approx(5 / 9)] and all(r.error is None for r in res)
    assert judge.handle.calls == [("generate", 8, 0.0)]  # one batched call with the configured sampling
    assert judge.last_outputs == ["Score: 10", "Score: 1 (wrong)", "Score: 6/10"]


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_real_judge_engine_in_ray(tmp_path):
    """A random tiny judge through the real engine: greedy output is deterministic and every
    result is exactly the parse of the text the engine wrote."""
    import ray

    from posttrain.tasks.tiny import make_tiny_model
    from rewards.scorer import Scorer

    rows = [{"id": "0", "prompt": "What is 2+2? Score: 4", "answer": "4"}]
    path = make_tiny_model(rows, tmp_path / "judge", hidden=64, layers=1, heads=1, head_dim=64, vocab_size=300)
    owns = not ray.is_initialized()
    if owns:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = {"name": "judge", "kwargs": {"model": str(path), "max_tokens": 8, "max_model_len": 512,
                                            "start_timeout_s": 180, "timeout_s": 60}}
        with Scorer([spec], max_failed_fraction=1.0) as scorer:
            batch = scorer.score(["4", "five"], [{"prompt": "What is 2+2?", "answer": "4"}] * 2)
            outputs = scorer.services[0].last_outputs
            again = scorer.score(["4", "five"], [{"prompt": "What is 2+2?", "answer": "4"}] * 2)
            assert scorer.services[0].last_outputs == outputs  # greedy: the same text twice
        assert len(outputs) == 2 and again.rewards == batch.rewards
        for text, r, e in zip(outputs, batch.rewards, batch.errors):  # each result is the parse of its text
            if parse_score(text) is None:
                assert r is None and e == f"judge: unparsable judge output: {text[:120]!r}"
            else:
                assert r == pytest.approx(parse_score(text)) and e is None
    finally:
        if owns:
            ray.shutdown()
