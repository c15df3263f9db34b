"""Rewrite the README's result tables from the committed results files: no hand-copied numbers.

    python scripts/readme_tables.py            # rewrite README.md (and docs/hints.md's seed table)
    python scripts/readme_tables.py --check    # exit 1 when a table differs from its results file

Each table sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` and is
generated from docs/results/NAME.json:
- demo.json / demo-bf16.json: `python -m posttrain.pipeline.spread demo --seeds ...` (`make demo`'s
  pipeline per seed: per-stage mean, min, max), all-fp32 runs in demo.json, runs with bf16 in them
  (`make demo` on a CPU with AMX) in demo-bf16.json;
- align-demo.json: `python -m posttrain.pipeline.align_demo --seeds 0 1 2 --results
  docs/results/align-demo.json` (runs/align-demo/summary.json with `seeds` and `spread`);
- hints-ablation.json: runs/hints-ablation/summary.json of `make hints-ablation` (3 RL seeds).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
STAGE_NAMES = {"sft": "SFT", "rl1": "RL1 (GSPO)", "rft": "RFT + SFT", "filter": "filter", "rl2": "RL2 (GSPO)"}


def pct(x: float | None) -> str:
    """0.425 -> '42.5%'.

    >>> pct(0.425), pct(None)
    ('42.5%', 'n/a')
    """
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _where(r: dict[str, Any]) -> str:
    m = r.get("machine") or {}
    return f"{m.get('cpu', 'unknown CPU')}, commit {m.get('commit', '?')}"


DTYPE_LABELS = {"float32": "fp32: what `make demo` runs on CPUs without AMX (`dtype: auto`), and anywhere "
                           "with `spread demo --dtype float32`",
                "bfloat16": "bf16 (fp32 master weights): `spread demo --dtype auto` on a CPU with AMX",
                "mixed": "what `make demo` runs on a CPU with AMX (`dtype: auto`): GSPO trainers and every engine "
                         "in bf16 (fp32 master weights), the TRL SFT stages (sft, RFT's SFT) in fp32, where bf16 "
                         "autocast measured no faster"}


def dtype_label(r: dict[str, Any]) -> str:
    """The sentence saying which precision a demo result was measured in (older files: unknown).

    >>> dtype_label({"dtype": "bfloat16"}).split(":")[0], dtype_label({})
    ('bf16 (fp32 master weights)', 'dtype not recorded')
    """
    d = r.get("dtype")
    return DTYPE_LABELS.get(d, f"dtype {d}") if d else "dtype not recorded"


def demo_table(r: dict[str, Any]) -> str:
    """Per-stage held-out greedy accuracy over seeds, from spread.py's JSON.

    >>> print(demo_table({"seeds": [0, 1], "stages": {"sft": {"mean": 0.45, "min": 0.4, "max": 0.5, "n": 2}},
    ...                   "per_seed": [{"seed": 0, "stages": {"sft": 0.4}}, {"seed": 1, "stages": {"sft": 0.5}}],
    ...                   "machine": {"cpu": "X", "commit": "abc"}, "dtype": "float32"}))  # doctest: +ELLIPSIS
    | stage | mean | min | max | seed 0 | seed 1 |
    |---|---|---|---|---|---|
    | SFT | 45.0% | 40.0% | 50.0% | 40.0% | 50.0% |
    <BLANKLINE>
    2 seeds (0, 1) on X, commit abc; fp32: what `make demo` runs on CPUs without AMX ...
    """
    seeds = r["seeds"]
    head = ["stage", "mean", "min", "max", *(f"seed {s}" for s in seeds)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in r["stages"].items():
        per = [pct(p["stages"].get(name)) for p in r["per_seed"]]
        lines.append(f"| {STAGE_NAMES.get(name, name)} | {pct(s['mean'])} | {pct(s['min'])} | {pct(s['max'])} | "
                     + " | ".join(per) + " |")
    n = f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))})"
    return "\n".join(lines) + f"\n\n{n} on {_where(r)}; {dtype_label(r)}."


ALIGN_ROWS = (("constraint rate (held-out constrained prompts)", "constraint_rate"),
              ("task accuracy (unconstrained prompts)", "task_accuracy"),
              ("constrained answers with the right sum", "constrained_task_accuracy"))


def align_table(r: dict[str, Any]) -> str:
    """Before -> after per seed and the spread, from the align demo's multi-seed summary."""
    seeds = r.get("seeds") or [r]
    head = ["metric", *(f"seed {s.get('seed')}" for s in seeds), "after: mean [min, max]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in ALIGN_ROWS:
        cells = [f"{pct(s.get(key + '_before'))} → {pct(s.get(key + '_after'))}" for s in seeds]
        after = [s.get(key + "_after") for s in seeds]
        after = [a for a in after if a is not None]
        span = f"{pct(sum(after) / len(after))} [{pct(min(after))}, {pct(max(after))}]" if after else "n/a"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {span} |")
    guards = [s.get("guard") or {} for s in seeds]
    drops = [g.get("worst_drop_points") for g in guards]
    if all(d is not None for d in drops):
        metric = guards[0].get("metric") or "eval/task_accuracy"
        lines.append(f"| largest drop of `{metric}` at any eval during RL (points) | "
                     + " | ".join(f"{d:.0f}" for d in drops) + f" | max {max(drops):.0f} |")
    finals = [g.get("final_step") for g in guards]
    if all(f is not None for f in finals) and any(g.get("on_drop") == "rollback" for g in guards):
        lines.append("| step of the final model (`on_drop: rollback`: the last eval within the guard's limit) | "
                     + " | ".join(str(f) for f in finals) + " | |")
    steps = seeds[0].get("steps")
    return "\n".join(lines) + (f"\n\n{len(seeds)} seeds, {steps} GSPO steps each, on {_where(r)}; "
                               "greedy decoding on held-out prompts.")


HINT_ARMS = (("no hints", "hard_accuracy_without_hints"), ("hints (Keye)", "hard_accuracy_with_hints"),
             ("hints, trained on the bare question", "hard_accuracy_with_hints_plain"))


def hints_table(r: dict[str, Any]) -> str:
    """Held-out hard-prompt accuracy per arm and RL seed, from `make hints-ablation`'s summary."""
    seeds = r["rl_seeds"]
    head = ["arm", "mean", "min", "max", *(f"seed {s}" for s in seeds)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in HINT_ARMS:
        per = r.get(f"{key}_per_seed")
        if not per:
            continue
        lines.append(f"| {label} | {pct(r[key])} | {pct(min(per))} | {pct(max(per))} | "
                     + " | ".join(pct(p) for p in per) + " |")
    return "\n".join(lines) + (f"\n\n{r['heldout_hard_prompts']} held-out hard prompts, no hints at eval, "
                               f"{len(seeds)} GSPO seeds from one SFT model.")


TABLES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "demo": ("demo.json", demo_table), "demo-bf16": ("demo-bf16.json", demo_table),
    "align-demo": ("align-demo.json", align_table),
    "hints-ablation": ("hints-ablation.json", hints_table)}
WRITERS = {"demo": "python -m posttrain.pipeline.spread demo --seeds 0 1 2 --dtype float32",
           "demo-bf16": "python -m posttrain.pipeline.spread demo --seeds 0 1 2 (on a CPU with AMX)",
           "align-demo": "python -m posttrain.pipeline.align_demo --seeds 0 1 2 --sft-seed 0 --results "
                         "docs/results/align-demo.json",
           "hints-ablation": "make hints-ablation, then copy runs/hints-ablation/summary.json"}


def fill(text: str, name: str, table: str) -> str:
    """Replace what sits between the markers of NAME; a file without them is left as it is.

    >>> fill("a\\n<!-- results:x -->\\nold\\n<!-- /results:x -->\\nb", "x", "new")
    'a\\n<!-- results:x -->\\nnew\\n<!-- /results:x -->\\nb'
    >>> fill("<!-- results:x -->\\n<!-- /results:x -->", "x", "new")
    '<!-- results:x -->\\nnew\\n<!-- /results:x -->'
    """
    pat = re.compile(rf"(<!-- results:{re.escape(name)} -->)\n.*?(<!-- /results:{re.escape(name)} -->)", re.S)
    return pat.sub(lambda m: f"{m.group(1)}\n{table}\n{m.group(2)}", text)


def render(text: str, results: Path = RESULTS) -> str:
    for name, (file, make) in TABLES.items():
        path = results / file
        if f"<!-- results:{name} -->" in text:
            table = (make(json.loads(path.read_text())) if path.is_file() else
                     f"Not measured with the script yet: `{WRITERS[name]}` writes `docs/results/{file}`.")
            text = fill(text, name, table)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when a file is out of date")
    p.add_argument("files", nargs="*", type=Path, default=[ROOT / "README.md", ROOT / "docs" / "hints.md"])
    args = p.parse_args(argv)
    stale = []
    for f in args.files:
        old = f.read_text()
        new = render(old)
        if new != old:
            stale.append(str(f))
            if not args.check:
                f.write_text(new)
    if args.check and stale:
        print("out of date with docs/results: " + ", ".join(stale) + "; run python scripts/readme_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
