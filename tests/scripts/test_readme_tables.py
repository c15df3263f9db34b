"""README tables are generated from docs/results (scripts/readme_tables.py): the committed
README matches its results files, and a hand edit of a generated number is caught."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def test_committed_readme_and_hints_doc_match_their_results_files():
    for f in (ROOT / "README.md", ROOT / "docs" / "hints.md"):
        text = f.read_text()
        assert "<!-- results:" in text, f"{f.name} has no generated table"
        assert tables.render(text) == text, f"{f.name} is out of date: run python scripts/readme_tables.py"


def test_check_catches_a_hand_edited_number(tmp_path):
    readme = tmp_path / "README.md"
    text = tables.render("x\n<!-- results:hints-ablation -->\n\n<!-- /results:hints-ablation -->\n")
    readme.write_text(text)
    assert tables.main(["--check", str(readme)]) == 0
    readme.write_text(text.replace("35.7%", "36.7%", 1))
    assert tables.main(["--check", str(readme)]) == 1
    tables.main([str(readme)])
    assert readme.read_text() == text


def test_align_table_shows_every_seed_and_the_spread():
    seeds = [{"seed": s, "steps": 60, "constraint_rate_before": 0.0, "constraint_rate_after": 0.3 + 0.1 * s,
              "task_accuracy_before": 1.0, "task_accuracy_after": 0.99,
              "constrained_task_accuracy_before": 0.4, "constrained_task_accuracy_after": 0.95} for s in (0, 1)]
    out = tables.align_table({"seeds": seeds, "machine": {"cpu": "CPU X", "commit": "abc"}})
    assert "| constraint rate (held-out constrained prompts) | 0.0% → 30.0% | 0.0% → 40.0% | 35.0% [30.0%, 40.0%] |" in out
    assert "CPU X" in out and "2 seeds, 60 GSPO steps" in out and "final model" not in out
    rolled = [{**x, "guard": {"metric": "eval/task_guard", "on_drop": "rollback", "worst_drop_points": 3.0 * x["seed"],
                              "final_step": 60 - 20 * x["seed"]}} for x in seeds]
    out = tables.align_table({"seeds": rolled, "machine": {"cpu": "CPU X", "commit": "abc"}})
    assert "| largest drop of `eval/task_guard` at any eval during RL (points) | 0 | 3 | max 3 |" in out
    assert "the last eval within the guard's limit) | 60 | 40 | |" in out
    json.dumps(out)


def test_demo_tables_say_their_dtype():
    r = {"seeds": [0], "stages": {"rl1": {"mean": 0.7, "min": 0.7, "max": 0.7, "n": 1}},
         "per_seed": [{"seed": 0, "stages": {"rl1": 0.7}}], "machine": {"cpu": "CPU X", "commit": "abc"}}
    assert "on a CPU with AMX" in tables.demo_table({**r, "dtype": "bfloat16"})
    assert "fp32: what `make demo` runs on CPUs without AMX" in tables.demo_table({**r, "dtype": "float32"})
    assert "what `make demo` runs on a CPU with AMX" in tables.demo_table({**r, "dtype": "mixed"})
    assert "dtype not recorded" in tables.demo_table(r)
