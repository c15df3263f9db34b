"""`code`: run the completion's Python against the row's tests in a sandbox.

The row's `tests` is a list of assert-style snippets run after the solution, or of
`{"input": ..., "output": ...}` pairs for stdin/stdout programs. The reward is the
fraction of tests passed (or 1.0/0.0 with `all_or_nothing=True`). An exception, a
non-zero exit, an early `os._exit(0)`, a timeout or a memory error in the model's code
is a failed test, never a pass. See rewards/sandbox.py for the isolation.
"""

from __future__ import annotations

from rewards.api import reward
from rewards.sandbox import extract_code, run_tests


@reward("code")
def code_reward(completion: str, sample: dict, timeout_s: float = 10.0, cpu_s: float | None = None,
                memory_mb: int = 512, tests_key: str = "tests", all_or_nothing: bool = False) -> float:
    """Fraction of the row's tests the completion's code passes (sandboxed subprocess)."""
    tests = sample.get(tests_key)
    if not tests:
        raise KeyError(f"sample has no {tests_key!r} tests")
    result = run_tests(extract_code(completion), tests if isinstance(tests, list) else [tests],
                       timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb)
    if all_or_nothing:
        return float(result.passed == result.total)
    return result.fraction
