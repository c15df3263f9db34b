"""`posttrain rewards list | check | score` and the score contract."""

import json
import time

import pytest
from typer.testing import CliRunner

from posttrain.cli import app
from tests.rewards.conftest import plugin

pytestmark = pytest.mark.timeout(120)

runner = CliRunner()


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_list_shows_builtins():
    res = runner.invoke(app, ["rewards", "list"])
    assert res.exit_code == 0, res.output
    for name in ("math", "ifeval", "format", "code", "judge", "reward_model"):
        assert name in res.output


def test_check_reports_values_and_failures(tmp_path):
    res = runner.invoke(app, ["rewards", "check", "math"])
    assert res.exit_code == 0, res.output
    assert "0 failed, 0 not deterministic" in res.output
    res = runner.invoke(app, ["rewards", "check", plugin("string"), "--n", "2"])
    assert res.exit_code == 1 and "wrong type" in res.output
    res = runner.invoke(app, ["rewards", "check", "no_such_reward"])
    assert res.exit_code == 2 and "unknown reward 'no_such_reward'" in res.output


def test_score_contract(tmp_path, no_children_left):
    rows = [{"completion": "a"}, {"completion": "hang"}, {"nope": 1}, {"completion": "ccc", "extra": [1]},
            {"completion": "hang"}, {"completion": "dd"}]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, rows)
    t0 = time.monotonic()
    res = runner.invoke(app, ["rewards", "score", "--reward", plugin("hangs_on_marked"), "--input", str(src),
                              "--output", str(dst), "--timeout", "1", "--workers", "2", "--retries", "0"])
    assert res.exit_code == 0, res.output
    assert time.monotonic() - t0 < 60  # two hangs of 1 s each, killed; without the kill this never ends
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(out) == len(rows)
    assert [r["reward"] for r in out] == [1.0, None, None, 3.0, None, 2.0]
    assert out[1]["error"].startswith("hangs_on_marked: timeout")
    assert "no 'completion'" in out[2]["error"] and out[2]["nope"] == 1
    assert out[3]["extra"] == [1] and out[3]["error"] is None


def test_score_weights_and_kwargs(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, [{"completion": "<think>x</think>\\boxed{4}", "answer": "4"}, {"completion": "5", "answer": "4"}])
    res = runner.invoke(app, ["rewards", "score", "--reward", "math,format", "--weights", "1,0.5",
                              "--kwargs", '{"format": {"kind": "think"}}', "--input", str(src), "--output", str(dst),
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["reward"] for x in dst.read_text().splitlines()] == [1.5, 0.0]
    res = runner.invoke(app, ["rewards", "score", "--reward", "math,format", "--weights", "1",
                              "--input", str(src), "--output", str(dst)])
    assert res.exit_code == 2 and "--weights has 1 values for 2 rewards" in res.output


def test_score_checks_output_first_and_fails_when_every_row_fails(tmp_path):
    src = tmp_path / "in.jsonl"
    write_rows(src, [{"completion": "a"}, {"completion": "b"}])
    t0 = time.monotonic()
    res = runner.invoke(app, ["rewards", "score", "--reward", plugin("raises"), "--input", str(src),
                              "--output", str(tmp_path), "--workers", "1"])
    assert res.exit_code == 2 and "is a directory" in res.output
    assert time.monotonic() - t0 < 5  # refused before any worker started
    dst = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["rewards", "score", "--reward", plugin("raises"), "--input", str(src),
                              "--output", str(dst), "--workers", "1", "--retries", "0"])
    assert res.exit_code == 1 and "every row failed" in res.output
    assert [json.loads(x)["reward"] for x in dst.read_text().splitlines()] == [None, None]  # still written
