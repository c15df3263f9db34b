import json

from typer.testing import CliRunner

from hints import HintSampler, HintsConfig
from posttrain.cli import app
from posttrain.core.data import write_jsonl
from posttrain.tasks.addition import make_addition_rows
from tests.hints.fakes import make_rows


def test_probe_writes_the_table9_json(tmp_path):
    from posttrain.tasks.tiny import make_tiny_model

    rows = make_addition_rows(3, seed=1)
    write_jsonl(tmp_path / "rows.jsonl", rows)
    model = make_tiny_model(rows, tmp_path / "model", hidden=64, layers=1, heads=1)
    out = tmp_path / "probe.json"
    res = CliRunner().invoke(app, ["hints", "probe", "--model", str(model), "--data", str(tmp_path / "rows.jsonl"),
                                   "--samples", "2", "--max-tokens", "3", "--output", str(out)])
    assert res.exit_code == 0, res.output
    table = json.loads(out.read_text())
    assert [r["level"] for r in table] == [0, 1, 2, 3, 4, 5]
    assert all(set(r) == {"level", "all_wrong", "mean_correct"} for r in table)
    assert all(0 <= r["all_wrong"] <= 1 and 0 <= r["mean_correct"] <= 2 for r in table)
    assert "L5" in res.output and "all 2 wrong" in res.output


def test_probe_names_a_missing_model(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", make_addition_rows(2))
    res = CliRunner().invoke(app, ["hints", "probe", "--model", str(tmp_path / "nope"),
                                   "--data", str(tmp_path / "rows.jsonl")])
    assert res.exit_code == 2 and "no config.json" in res.output


def test_show_prints_the_scheduler_state(tmp_path):
    rows = make_rows(["p", "q"])
    hs = HintSampler(HintsConfig(enabled=True), rows)
    hs.update([(hs.plan(rows[:1], 0)[0], [0.0, 0.0])])
    hs.save(tmp_path / "run")
    res = CliRunner().invoke(app, ["hints", "show", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "L1=1" in res.output and "p" in res.output
    res = CliRunner().invoke(app, ["hints", "show", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "hints.enabled=true" in res.output
