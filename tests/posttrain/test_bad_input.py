"""Bad input, every verb of `posttrain --help`: malformed JSONL, invalid UTF-8, missing and
mistyped fields, wrong media (an image that is not one, a missing image), out-of-range values,
missing model folders, a run directory that holds a run, a file where a directory should be, a
read-only output directory. Each case exits non-zero with a short message
naming the file and row, the config field or the plugin, and no traceback; nothing
starts training. A verb missing from the table fails `test_the_table_covers_every_verb`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from posttrain.cli import app

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = CONFIGS / "tiny"
ROW = {"id": "a", "prompt": "What is 1 + 1?", "answer": "2"}
PAIR = {"id": "a", "prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}


@pytest.fixture
def files(tmp_path, tiny_model, monkeypatch):
    """Named inputs of the cases: good and bad datasets, a run dir holding a run, a plain file."""
    monkeypatch.chdir(tmp_path)  # default run dirs (runs/<phase>-<time>) land here
    f = {"model": tiny_model, "tmp": tmp_path}

    def put(name, text: str | bytes):
        p = tmp_path / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        f[name.split(".")[0]] = p

    put("good.jsonl", json.dumps(ROW) + "\n")
    put("badjson.jsonl", json.dumps(ROW) + "\n{\"id\": \"b\", \"prompt\": \n")
    put("utf8.jsonl", json.dumps(ROW).encode() + b"\n" + b'{"id": "b", "prompt": "\xff", "answer": "1"}\n')
    put("noprompt.jsonl", json.dumps(ROW) + "\n" + json.dumps({"id": "b", "answer": "1"}) + "\n")
    put("wrongtype.jsonl", json.dumps({"id": "a", "prompt": 7, "answer": "2"}) + "\n")
    put("badpairs.jsonl", json.dumps(PAIR) + "\n" + json.dumps({"id": "b", "prompt": "q", "chosen": "x"}) + "\n")
    put("longpairs.jsonl", json.dumps(PAIR) + "\n" + json.dumps({**PAIR, "id": "b", "chosen": "2 " * 400}) + "\n")
    put("plainfile.txt", "not a directory\n")
    (tmp_path / "media").mkdir()  # not in tmp_path itself: `data video-plan --frames {tmp}` needs no image there
    (tmp_path / "media" / "fake.png").write_text("not a png\n")
    put("badimage.jsonl", json.dumps({**ROW, "prompt": "<image> What is 1 + 1?", "images": ["media/fake.png"]}) + "\n")
    put("noimage.jsonl", json.dumps({"id": "a", "prompt": "<image> What is 1 + 1?", "completion": "2",
                                     "images": ["gone.png"]}) + "\n")
    f["readonly"] = _read_only_dir(tmp_path / "readonly")
    run = tmp_path / "oldrun"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    (run / "config.yaml").write_text("phase: sft\n")
    f["oldrun"] = run
    return f


def _read_only_dir(path: Path) -> Path:
    """A directory nobody may write into: mode 0555, or, for root (who writes anywhere), sysfs's
    root, where even root cannot create a file or a folder."""
    path.mkdir(mode=0o555)
    if not os.access(path, os.W_OK):
        return path
    if Path("/sys").is_dir() and _refuses_files(Path("/sys")):
        return Path("/sys")
    pytest.skip("no directory here refuses writes (root, and /sys is writable)")


def _refuses_files(d: Path) -> bool:
    try:
        (d / "posttrain-write-probe").mkdir()
    except OSError:
        return True
    (d / "posttrain-write-probe").rmdir()
    return False


M = "model.path={model}"
# (verb path, arguments, regex the message must match). {name} is a path from `files`.
CASES = [
    ("sft", ["--config", TINY / "sft.yaml", M, "data.train={badjson}"], r"badjson\.jsonl:2: not valid JSON"),
    ("sft", ["--config", TINY / "sft.yaml", M, "optim.lrr=1"], r"field 'optim\.lrr' is not a known field"),
    ("sft", ["--config", TINY / "sft.yaml", "model.init=path", "model.path={tmp}/nowhere"],
     r"model\.path=.*nowhere does not exist"),
    ("sft", ["--config", TINY / "sft.yaml", M, "--run-dir", "{oldrun}"], r"oldrun is not empty .*--resume"),
    ("sft", ["--config", TINY / "sft.yaml", M, "--run-dir", "{plainfile}/run"], r"a parent of it is a file"),
    ("sft", ["--config", TINY / "sft.yaml", M, "--run-dir", "{readonly}/run"],
     r"--run-dir .*/run (cannot be created|.*not writable)"),
    ("sft", ["--config", TINY / "sft.yaml", M, "data.train={noimage}"],
     r"noimage\.jsonl:1: .*images\[0\] 'gone\.png': no such file"),
    ("mpo", ["--config", TINY / "mpo.yaml", M, "data.train={badpairs}", "data.eval=null", "data.eval_rows=null"],
     r"badpairs\.jsonl:2: .*rejected"),
    ("mpo", ["--config", TINY / "mpo.yaml", M, "data.train={longpairs}", "data.eval=null", "data.eval_rows=null",
             "train.max_length=128"], r"longpairs\.jsonl:2: prompt \+ chosen is \d+ tokens, over train\.max_length=128"),
    ("rl", [M, "data.train={utf8}"], r"utf8\.jsonl:2: not valid UTF-8"),
    ("rl", [M, "data.train={good}", "rollout.group_size=1"], r"field 'rollout\.group_size'.*greater than or equal to 2"),
    ("rl", ["data.train={good}"], r"field 'model\.path' is not set"),
    ("rl", [M, "data.train={tmp}"], r"is a directory, not a dataset file"),
    ("rl", [M, "data.train={badimage}"], r"badimage\.jsonl:1: .*images\[0\] .*fake\.png' is not a readable image"),
    ("rl", [M, "data.train={good}", "optim.lr=-1"], r"field 'optim\.lr'"),
    ("rft", ["--config", TINY / "rft.yaml", M, "data.prompts={noprompt}", "data.eval=null"],
     r"noprompt\.jsonl:2: field 'prompt'"),
    ("filter", [M, "data.prompts={wrongtype}"], r"wrongtype\.jsonl:1: field 'prompt' must be a non-empty string"),
    ("align", ["--config", TINY / "align.yaml", M, "data.train={badjson}", "data.eval=null"],
     r"badjson\.jsonl:2: not valid JSON"),
    ("rm", ["--config", TINY / "rm.yaml", M, "data.train={badpairs}", "data.eval=null"], r"badpairs\.jsonl:2: "),
    ("rm", ["--config", TINY / "rm.yaml", M, "data.train={longpairs}", "data.eval=null", "train.max_length=128"],
     r"longpairs\.jsonl:2: prompt \+ chosen is \d+ tokens, over train\.max_length=128"),
    ("make-tiny-model", ["--data", "{tmp}/none.jsonl", "--out", "{tmp}/m"], r"none\.jsonl: dataset file does not exist"),
    ("make-tiny-model", ["--data", "{good}", "--out", "{oldrun}"], r"--out .*oldrun already exists; pass --force"),
    ("data make-task", ["--out", "{tmp}/t.jsonl", "--n", "0"], r"--n 0: the number of training rows"),
    ("data make-task", ["--out", "{good}"], r"--out .*good\.jsonl already exists"),
    ("data make-task", ["--out", "{readonly}/t.jsonl"], r"permission denied: .*t\.jsonl"),
    ("data pairs", ["--input", "{badjson}", "--output", "{tmp}/p.jsonl"], r"badjson\.jsonl:2: not valid JSON"),
    ("pipeline", ["stages.sft.valuez.x=1"], r"stages"),
    ("pipeline", ["--run-dir", "{oldrun}"], r"oldrun is not empty .*--resume"),
    ("report", ["{tmp}/nope"], r"nope is not a directory"),
    ("demo", ["--run-dir", "{oldrun}"], r"oldrun is not empty"),
    ("hints probe", ["--model", "{tmp}/nope", "--data", "{noprompt}"], r"noprompt\.jsonl:2: field 'prompt'"),
    ("hints probe", ["--model", "{tmp}/nope", "--data", "{good}"], r"nope.*(not a HF model folder|does not exist)"),
    ("hints show", ["{tmp}"], r"no hints_state\.json here or below"),
    ("rewards list", ["--bogus"], r"No such option"),
    ("rewards check", ["no_such_reward"], r"unknown reward 'no_such_reward'"),
    ("rewards score", ["--reward", "exact", "--input", "{good}", "--output", "{tmp}"], r"--output .* is a directory"),
    ("rewards score", ["--reward", "exact", "--input", "{good}", "--output", "{readonly}/s.jsonl"],
     r"permission denied: .*s\.jsonl"),
    ("rewards score", ["--reward", "exact", "--input", "{utf8}", "--output", "{tmp}/s.jsonl"],
     r"utf8\.jsonl:2: not valid UTF-8"),
    ("data cot", ["model.path={tmp}/nope", "--run-dir", "{tmp}/cot"], r"data\.sources is empty"),
    ("data review", ["{tmp}"], r"no review\.sqlite"),
    ("data video-plan", ["--model", "{tmp}/nope", "--frames", "{tmp}", "--budget", "100"], r"no image files"),
    ("cot", ["model.path={tmp}/nope", "--run-dir", "{tmp}/cot2"], r"data\.sources is empty"),
    ("merge", ["--run-dir", "{tmp}/merged"], r"field 'model\.path' .* is required"),
]


def _leaves(cmd: typer.Typer) -> list[str]:
    def walk(c, prefix: str) -> list[str]:
        if hasattr(c, "commands"):  # a group
            return [x for name, sub in c.commands.items() for x in walk(sub, f"{prefix} {name}".strip())]
        return [prefix]

    return walk(typer.main.get_command(cmd), "")


def test_the_table_covers_every_verb():
    assert sorted(set(_leaves(app))) == sorted({verb for verb, _, _ in CASES})


@pytest.mark.parametrize("verb,args,expect", CASES, ids=[f"{c[0]}:{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_clear_line(files, verb, args, expect):
    argv = [*verb.split(), *(str(a).format(**files) for a in args)]
    res = CliRunner().invoke(app, argv)
    out = res.output
    assert res.exit_code not in (0, None) and not isinstance(res.exception, (AssertionError, TypeError)), out
    assert "Traceback" not in out, out
    import re

    assert re.search(expect, out, re.S), out
    if "No such option" not in out:  # click's own usage errors are a box; ours are a line (or a field list)
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines[0].startswith("error:") and len(lines) <= 3, out
