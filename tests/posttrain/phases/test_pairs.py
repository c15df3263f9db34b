"""Preference pairs from scored rollouts, and the checks on pair files."""

import json

import pytest
from typer.testing import CliRunner

from posttrain.core.data import DatasetError, write_jsonl
from posttrain.phases.pairs import build_pairs, load_pairs, pair_from_group


def _scored(pid, rewards):
    return [{"prompt_id": pid, "prompt": f"q {pid}", "completion": f"a{i}", "reward": r, "answer": "1"}
            for i, r in enumerate(rewards)]


def test_top_vs_bottom_and_ties_skipped(tmp_path):
    rows = _scored("p1", [0.0, 1.0, 0.5, 1.0]) + _scored("p2", [1.0, 1.0]) + _scored("p3", [None, 0.0, 0.2])
    write_jsonl(tmp_path / "s.jsonl", rows)
    pairs, counts = build_pairs(tmp_path / "s.jsonl")
    assert counts == {"prompts": 3, "pairs": 2, "skipped_ties": 1}
    p1, p3 = pairs
    assert (p1["chosen"], p1["rejected"]) == ("a1", "a0")  # earliest of the tied top samples
    assert (p3["chosen"], p3["rejected"]) == ("a2", "a1")  # the failed (None) sample is left out
    assert p1["answer"] == "1" and p1["chosen_reward"] == 1.0


def test_several_pairs_per_prompt_and_reference_pairs(tmp_path):
    rows = (_scored("p1", [0.0, 1.0, 0.0, 1.0])  # 2 distinct right x 2 distinct wrong texts
            + _scored("p2", [0.0, 0.0, None])  # all wrong: only the reference can be chosen
            + [dict(r, completion="1") for r in _scored("p3", [1.0, 1.0])])  # all right: no pair
    write_jsonl(tmp_path / "s.jsonl", rows)
    pairs, counts = build_pairs(tmp_path / "s.jsonl", per_prompt=3, reference=True)
    got = [(p["prompt_id"], p["chosen"], p["rejected"]) for p in pairs]
    assert got == [("p1", "a1", "a0"), ("p1", "a1", "a2"), ("p1", "a3", "a0"),  # capped at 3
                   ("p2", "1", "a0"), ("p2", "1", "a1")]
    assert counts == {"prompts": 3, "pairs": 5, "skipped_ties": 1}
    assert len({p["id"] for p in pairs}) == 5
    no_ref, _ = build_pairs(tmp_path / "s.jsonl", per_prompt=3)
    assert {p["prompt_id"] for p in no_ref} == {"p1"}


def test_cli_holds_out_whole_prompts(tmp_path):
    from posttrain.cli import app

    rows = [r for i in range(6) for r in _scored(f"p{i}", [0.0, 1.0, 0.0, 1.0])]
    write_jsonl(tmp_path / "s.jsonl", rows)
    res = CliRunner().invoke(app, ["data", "pairs", "--input", str(tmp_path / "s.jsonl"), "--output",
                                   str(tmp_path / "t.jsonl"), "--eval-out", str(tmp_path / "e.jsonl"),
                                   "--n-eval", "2", "--per-prompt", "4"])
    assert res.exit_code == 0, res.output
    train = [json.loads(l) for l in (tmp_path / "t.jsonl").read_text().splitlines()]
    held = [json.loads(l) for l in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(train) == 16 and len(held) == 8
    assert not {p["prompt_id"] for p in train} & {p["prompt_id"] for p in held}


def test_single_scored_sample_gives_no_pair():
    assert pair_from_group("x", [(1, None, {}), (2, 1.0, {"prompt": "p", "completion": "a"})]) is None


def test_missing_reward_names_file_and_line(tmp_path):
    rows = _scored("p1", [0.0, 1.0])
    del rows[1]["reward"]
    write_jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(DatasetError, match=r"s\.jsonl:2: field 'reward' is missing"):
        build_pairs(tmp_path / "s.jsonl")


@pytest.mark.parametrize("row, msg", [
    ({"prompt": "q", "chosen": "a"}, r"p\.jsonl:2: field 'rejected' is missing"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, r"p\.jsonl:2: field 'chosen' is empty"),
    ({"chosen": "a", "rejected": "b"}, r"p\.jsonl:2: field 'prompt' is missing"),
])
def test_bad_pairs_name_file_and_row(tmp_path, row, msg):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DatasetError, match=msg):
        load_pairs(tmp_path / "p.jsonl")


def test_pairs_are_conversational(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    (p,) = load_pairs(tmp_path / "p.jsonl")
    assert p["prompt"] == [{"role": "user", "content": "q"}]
    assert p["chosen"] == [{"role": "assistant", "content": "a"}]


def test_cli_data_pairs(tmp_path):
    from posttrain.cli import app

    write_jsonl(tmp_path / "s.jsonl", _scored("p1", [0.0, 1.0]) + _scored("p2", [1.0, 1.0]))
    res = CliRunner().invoke(app, ["data", "pairs", "--input", str(tmp_path / "s.jsonl"),
                                   "--output", str(tmp_path / "pairs.jsonl")])
    assert res.exit_code == 0, res.output
    assert "wrote 1 pairs" in res.output and "1 skipped" in res.output
    out = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert out[0]["chosen"] == "a1"
    load_pairs(tmp_path / "pairs.jsonl")  # the output is a valid pair file
    write_jsonl(tmp_path / "s2.jsonl", [r for i in range(5) for r in _scored(f"q{i}", [0.0, 1.0])])
    res = CliRunner().invoke(app, ["data", "pairs", "--input", str(tmp_path / "s2.jsonl"), "--output",
                                   str(tmp_path / "tr.jsonl"), "--eval-out", str(tmp_path / "ev.jsonl"), "--n-eval", "2"])
    assert res.exit_code == 0, res.output
    tr, ev = (load_pairs(tmp_path / f) for f in ("tr.jsonl", "ev.jsonl"))
    assert (len(tr), len(ev)) == (3, 2)
    bad = CliRunner().invoke(app, ["data", "pairs", "--input", str(tmp_path / "nope.jsonl"),
                                   "--output", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
