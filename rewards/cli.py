"""`posttrain rewards ...`: list, check and run reward plugins.

    posttrain rewards list
    posttrain rewards check REWARD [--input FILE] [--kwargs JSON]
    posttrain rewards score --reward NAME[,NAME...] [--weights W,...] --input IN.jsonl \\
        --output OUT.jsonl [--timeout S] [--workers N]

`score` contract: each output row is its input row plus "reward" (float, or null on
failure) and "error" (null, or the reason); rows keep their order, every input row gets
exactly one output row, and every call is bounded by --timeout (x attempts).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

rewards_app = typer.Typer(help="List, check and run reward plugins.", no_args_is_help=True)

SAMPLE_ROWS = [
    {"completion": "<think>2 + 2 = 4</think>The answer is \\boxed{4}.", "answer": "4", "prompt": "What is 2+2?",
     "constraints": [{"id": "punctuation:no_comma", "kwargs": {}}], "tests": ["assert True"]},
    {"completion": "Answer: 1/2", "answer": "0.5", "prompt": "Half of one?",
     "constraints": [{"id": "length_constraints:number_words", "kwargs": {"num_words": 5, "relation": "less than"}}],
     "tests": ["assert 1 + 1 == 2"]},
    {"completion": "I am not sure, maybe 7", "answer": "8", "prompt": "What is 2^3?",
     "constraints": [{"id": "startend:quotation", "kwargs": {}}], "tests": ["assert False"]},
    {"completion": "```python\ndef f(x):\n    return 2 * x\n```", "answer": "f", "prompt": "Write f doubling x.",
     "constraints": [{"id": "detectable_format:title", "kwargs": {}}], "tests": ["assert f(2) == 4"]},
]


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _console():
    from rich.console import Console

    return Console(stderr=False, width=140)


def _kind(rf) -> str:
    if rf.service:
        return "service"
    return ("batched" if rf.batched else "per-sample") + (", async" if rf.is_async else "")


@rewards_app.command("list")
def list_cmd() -> None:
    """Registered, built-in and entry-point rewards."""
    from rich.table import Table

    from rewards.resolve import list_rewards

    table = Table("name", "kind", "from", "description", title="rewards")
    for rf in list_rewards():
        table.add_row(rf.name, _kind(rf), rf.module or rf.file or "", rf.doc)
    _console().print(table)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    from posttrain.core.data import DatasetError, read_jsonl

    try:
        rows = [obj for _, obj in read_jsonl(path)]
    except DatasetError as e:
        _fail(str(e))
    return rows


def _parse_kwargs(text: Optional[str], names: list[str]) -> dict[str, dict]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        _fail(f"--kwargs is not valid JSON: {e}")
    if not isinstance(data, dict):
        _fail("--kwargs must be a JSON object")
    if len(names) == 1 and not (set(data) & set(names)):
        return {names[0]: data}  # a single reward's kwargs given directly
    for k, v in data.items():
        if k not in names or not isinstance(v, dict):
            _fail(f"--kwargs: key {k!r} must be one of the rewards ({', '.join(names)}) mapping to an object")
    return data


@rewards_app.command("check")
def check_cmd(
    reward: str = typer.Argument(..., help="Name, 'file.py:fn' or 'pkg.module:fn'."),
    input: Optional[Path] = typer.Option(None, "--input", help="JSONL rows with 'completion' (default: samples)."),
    kwargs: Optional[str] = typer.Option(None, "--kwargs", help="JSON kwargs for the reward."),
    n: int = typer.Option(8, "--n", help="Rows to try."),
    timeout: float = typer.Option(30.0, "--timeout", help="Per call, seconds."),
) -> None:
    """Load a reward, run it twice on sample rows; report values, failures, timing, determinism."""
    from rich.table import Table

    from rewards.api import RewardError
    from rewards.resolve import resolve_reward
    from rewards.scorer import Scorer

    try:
        rf = resolve_reward(reward)
    except RewardError as e:
        _fail(str(e))
    rows = (_read_rows(input) if input else SAMPLE_ROWS)[:n]
    rows = [r if isinstance(r, dict) else {"completion": str(r)} for r in rows]
    comps = [r.get("completion", "") if isinstance(r.get("completion"), str) else "" for r in rows]
    spec = {"name": reward, "kwargs": _parse_kwargs(kwargs, [reward]).get(reward, {})}
    try:
        scorer = Scorer([spec], timeout_s=timeout, workers=1, retries=0, max_failed_fraction=1.0)
    except (RewardError, ValueError) as e:
        _fail(str(e))
    with scorer:
        t0 = time.perf_counter()
        first = scorer.score(comps, rows).components[scorer.keys[0]]
        elapsed = time.perf_counter() - t0
        second = scorer.score(comps, rows).components[scorer.keys[0]]
    table = Table("row", "completion", "result", "type", "same twice", title=f"{reward} ({_kind(rf)})")
    for i, (a, b) in enumerate(zip(first, second)):
        same = (a.value == b.value and a.error == b.error)
        table.add_row(str(i), comps[i][:40].replace("\n", " "), f"{a.value:.4g}" if a.ok else "",
                      "float" if a.ok else f"[red]failure: {a.error}[/red]", "yes" if same else "[red]no[/red]")
    console = _console()
    console.print(table)
    failed = sum(not r.ok for r in first)
    nondet = sum(a != b for a, b in zip(first, second))
    console.print(f"{len(rows)} rows, {failed} failed, {nondet} not deterministic, "
                  f"{1000 * elapsed / max(1, len(rows)):.1f} ms per row (incl. worker start)")
    if failed:
        raise typer.Exit(1)


@rewards_app.command("score")
def score_cmd(
    reward: str = typer.Option(..., "--reward", help="NAME[,NAME...] (registered, file.py:fn or pkg.mod:fn)."),
    input: Path = typer.Option(..., "--input", help="JSONL rows with 'completion' and what the rewards read."),
    output: Path = typer.Option(..., "--output", help="JSONL: input row + 'reward' + 'error'."),
    weights: Optional[str] = typer.Option(None, "--weights", help="W[,W...], one per reward (default 1)."),
    kwargs: Optional[str] = typer.Option(None, "--kwargs", help='JSON {"name": {...}} of reward kwargs.'),
    timeout: float = typer.Option(30.0, "--timeout", help="Per call, seconds; a call past it is killed."),
    workers: int = typer.Option(2, "--workers", help="Parallel worker processes."),
    retries: int = typer.Option(1, "--retries", help="Extra attempts after a timeout or crash."),
    batch: int = typer.Option(512, "--batch", help="Rows per scoring batch."),
) -> None:
    """Score a JSONL file; one output row per input row, in order."""
    from posttrain.core.data import write_jsonl
    from posttrain.core.run_dir import RunDirError, writable_dir
    from rewards.api import RewardError
    from rewards.scorer import Scorer

    names = [x.strip() for x in reward.split(",") if x.strip()]
    w = [1.0] * len(names)
    if weights:
        try:
            w = [float(x) for x in weights.split(",")]
        except ValueError:
            _fail(f"--weights {weights!r}: give comma-separated numbers")
        if len(w) != len(names):
            _fail(f"--weights has {len(w)} values for {len(names)} rewards")
    kw = _parse_kwargs(kwargs, names)
    specs = [{"name": nm, "weight": wt, "kwargs": kw.get(nm, {})} for nm, wt in zip(names, w)]
    if output.is_dir():  # checked before scoring: the scores must have somewhere to go
        _fail(f"--output {output} is a directory; give a file path such as {output / 'scored.jsonl'}")
    try:
        writable_dir(output.parent, "--output")
    except RunDirError as e:
        _fail(str(e))
    rows = _read_rows(input)
    try:
        scorer = Scorer(specs, timeout_s=timeout, workers=workers, retries=retries, max_failed_fraction=1.0)
    except (RewardError, ValueError) as e:
        _fail(str(e))
    out: list[dict] = []
    t0 = time.perf_counter()
    with scorer:
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            good = [i for i, r in enumerate(chunk) if isinstance(r, dict) and isinstance(r.get("completion"), str)]
            res = scorer.score([chunk[i]["completion"] for i in good], [chunk[i] for i in good]) if good else None
            scored = {i: (res.rewards[k], res.errors[k]) for k, i in enumerate(good)}
            for i, row in enumerate(chunk):
                row = dict(row) if isinstance(row, dict) else {"row": row}
                row["reward"], row["error"] = scored.get(
                    i, (None, f"input line {start + i + 1}: row has no 'completion' string"))
                out.append(row)
    write_jsonl(output, out)
    failed = sum(r["error"] is not None for r in out)
    ok = [r["reward"] for r in out if r["reward"] is not None]
    mean = sum(ok) / len(ok) if ok else float("nan")
    print(f"scored {len(out)} rows in {time.perf_counter() - t0:.1f}s: {failed} failed, mean reward {mean:.4g} "
          f"-> {output}", file=sys.stderr)
    if out and failed == len(out):
        _fail(f"every row failed (first error: {out[0]['error']}); see {output}", code=1)
