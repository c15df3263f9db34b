"""Spread and rerun checks for the demos: one number per stage is not a result, N seeds are.

    python -m posttrain.pipeline.spread demo --seeds 0 1 2          # as keye.yaml says (auto): bf16 with AMX -> demo-bf16.json
    python -m posttrain.pipeline.spread demo --seeds 0 --dtype float32  # fp32 on any CPU -> docs/results/demo.json
    python -m posttrain.pipeline.spread check --seed 0          # `make determinism`
    python -m posttrain.pipeline.spread check --seed 0 --against docs/results/demo.json

`demo` runs `make demo`'s pipeline (configs/recipes/keye.yaml) once per seed, each in a
fresh RUN_ROOT/seed-N, in a child process (one Ray/vLLM life per run, as `make demo`
has), and writes per-stage mean, min and max of the held-out greedy accuracy, with the dtype
the runs computed in (the recipe says auto: bf16 GSPO trainers and engines with TRL SFT in fp32,
"mixed", on CPUs with AMX, fp32 elsewhere; `--dtype float32` pins fp32; all-fp32 results go to
demo.json, the others to demo-bf16.json). The seed
sets the demo data, the tiny model's init (via the data its tokenizer is built from) and
every stage's training seed. `check` runs one seed twice from fresh run directories and
exits 1 when any stage accuracy differs: reruns on one machine must be identical
(docs/reproducibility.md says why they are not across CPUs).

The align demo's spread is `python -m posttrain.pipeline.align_demo --seeds 0 1 2`
(its summary.json carries `spread` and `seeds`, built by `merge_seeds` here).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from posttrain.core.devices import cpu_summary
from posttrain.core.run_dir import atomic_write_text
from posttrain.pipeline.config import load_pipeline_config, resolve, stage_precision, with_data_defaults

ROOT = Path(__file__).resolve().parents[2]
KEYE = ROOT / "configs" / "recipes" / "keye.yaml"


def stats(values: list[float]) -> dict[str, float]:
    """Mean, min and max (rounded to 6 places: 0.1 + 0.2 is 0.3 here).

    >>> stats([0.425, 0.465])
    {'mean': 0.445, 'min': 0.425, 'max': 0.465, 'n': 2}
    """
    return {"mean": round(sum(values) / len(values), 6), "min": min(values), "max": max(values), "n": len(values)}


def merge_seeds(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary over several seeds: every number is the mean over seeds (`spread` has
    mean/min/max), anything else the value shared by all seeds or the list of them; the
    per-seed summaries go under `seeds`.

    >>> m = merge_seeds([{"seed": 0, "rate": 0.2, "task": "add"}, {"seed": 1, "rate": 0.4, "task": "add"}])
    >>> m["rate"], m["task"], m["seed"], m["spread"]["rate"], len(m["seeds"])
    (0.3, 'add', [0, 1], {'mean': 0.3, 'min': 0.2, 'max': 0.4, 'n': 2}, 2)
    """
    merged: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    for key in summaries[0]:
        values = [s.get(key) for s in summaries]
        if key != "seed" and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            spread[key] = stats(values)
            merged[key] = spread[key]["mean"]
        else:
            merged[key] = values[0] if all(v == values[0] for v in values) else values
    return {**merged, "spread": spread, "seeds": summaries}


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they are per machine (docs/reproducibility.md), and
    `dtype: auto` follows the CPU's flags (docs/precision.md)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"cpu": cpu, "python": platform.python_version(), "commit": commit, "flags": cpu_summary()["flags"]}


def seed_overrides(seed: int) -> list[str]:
    """Pipeline overrides that make `seed` the demo's seed everywhere."""
    return [f"data.seed={seed}", f"defaults.sft.train.seed={seed}", f"defaults.rl.train.seed={seed}",
            f"defaults.rft.sft.train.seed={seed}", f"defaults.rft.sampling.seed={seed}",
            f"defaults.filter.sampling.seed={seed}"]


DTYPE_KINDS = ("sft", "rl", "rft", "filter")  # the kinds keye.yaml runs; each has model.dtype and/or engine.dtype


def dtype_overrides(dtype: str | None) -> list[str]:
    """Pipeline overrides that run every trainer and engine of the demo in `dtype` (None: as the
    recipe says; keye.yaml says auto). `auto`: bf16 on CPUs with AMX; `float32`: docs/results/demo.json.

    >>> dtype_overrides("float32")[:2]
    ['defaults.sft.model.dtype=float32', 'defaults.rl.model.dtype=float32']
    >>> dtype_overrides(None)
    []
    """
    if dtype is None:
        return []
    return ([f"defaults.{k}.model.dtype={dtype}" for k in DTYPE_KINDS]
            + [f"defaults.{k}.engine.dtype={dtype}" for k in DTYPE_KINDS if k != "sft"])


def stage_dtypes(summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{stage name: {"trainer": dtype, "engine": dtype}} from a pipeline summary.json (empty for
    summaries written before stages carried their dtype).

    >>> stage_dtypes({"stages": [{"name": "rl1", "dtype": {"trainer": "bfloat16", "engine": "bfloat16"}}]})
    {'rl1': {'trainer': 'bfloat16', 'engine': 'bfloat16'}}
    """
    return {st["name"]: st["dtype"] for st in summary["stages"] if st.get("dtype")}


def run_dtype(per_seed: list[dict[str, Any]]) -> str:
    """The one dtype every trainer and engine of every run computed in, or "mixed".

    >>> run_dtype([{"dtypes": {"sft": {"trainer": "float32"}, "rl1": {"trainer": "float32", "engine": "float32"}}}])
    'float32'
    >>> run_dtype([{"dtypes": {"sft": {"trainer": "float32"}}}, {"dtypes": {"sft": {"trainer": "bfloat16"}}}])
    'mixed'
    """
    seen = {d for r in per_seed for roles in (r.get("dtypes") or {}).values() for d in roles.values()}
    return seen.pop() if len(seen) == 1 else ("mixed" if seen else "unknown")


def results_path(dtype: str) -> Path:
    """Where `demo` files its results: demo.json holds the all-fp32 runs (what CPUs without AMX run),
    demo-bf16.json any run with bf16 in it (CPUs with AMX: `auto` there is "mixed", bf16 GSPO trainers
    and engines with the TRL SFT stages in fp32); the README shows both.

    >>> [results_path(d).name for d in ("float32", "bfloat16", "mixed")]
    ['demo.json', 'demo-bf16.json', 'demo-bf16.json']
    """
    return ROOT / "docs" / "results" / ("demo.json" if dtype == "float32" else "demo-bf16.json")


def planned_dtype(config: Path, overrides: list[str]) -> str:
    """The dtype the recipe will run in on this machine (`run_dtype` of its resolved stages), known before it runs."""
    with tempfile.TemporaryDirectory() as tmp:
        plan = resolve(with_data_defaults(load_pipeline_config(config, overrides), Path(tmp)), Path(tmp))
    return run_dtype([{"dtypes": {st.name: {r: c.dtype for r, c in stage_precision(st.kind, st.cfg).items()}
                                  for st in plan}}])


def stage_accuracies(summary: dict[str, Any]) -> dict[str, float | None]:
    """{stage name: held-out greedy accuracy} from a pipeline summary.json.

    >>> stage_accuracies({"stages": [{"name": "sft", "accuracy": 0.425}, {"name": "rl1", "accuracy": 0.69}]})
    {'sft': 0.425, 'rl1': 0.69}
    """
    return {st["name"]: st.get("accuracy") for st in summary["stages"]}


def run_pipeline_seed(run_dir: Path, seed: int, config: Path = KEYE, overrides: list[str] = ()) -> dict[str, Any]:
    """`make demo` with this seed into a fresh RUN_DIR (removed first); its stage accuracies."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "posttrain.cli", "pipeline", "--config", str(config), "--run-dir", str(run_dir),
           *seed_overrides(seed), *overrides]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return read_pipeline_seed(run_dir, seed)


def read_pipeline_seed(run_dir: Path, seed: int) -> dict[str, Any]:
    """A finished run's per-seed record: stage accuracies, the dtypes they computed in, wall time."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seed": seed, "stages": stage_accuracies(summary), "dtypes": stage_dtypes(summary),
            "wall_s": summary.get("wall_s"), "run_dir": str(run_dir)}


def spread(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-stage mean/min/max over the seeds' stage accuracies.

    >>> s = spread([{"seed": 0, "stages": {"sft": 0.4}}, {"seed": 1, "stages": {"sft": 0.5}}])
    >>> s["seeds"], s["stages"]["sft"]
    ([0, 1], {'mean': 0.45, 'min': 0.4, 'max': 0.5, 'n': 2})
    """
    names = list(per_seed[0]["stages"])
    return {"seeds": [r["seed"] for r in per_seed],
            "stages": {n: stats([r["stages"][n] for r in per_seed if r["stages"].get(n) is not None]) for n in names},
            "per_seed": per_seed}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Stages whose accuracies differ between two runs ([] when the reruns agree).

    >>> differences({"sft": 0.425, "rl1": 0.69}, {"sft": 0.425, "rl1": 0.7})
    ['rl1: 0.69 != 0.7']
    """
    return [f"{k}: {a.get(k)} != {b.get(k)}" for k in sorted(set(a) | set(b), key=list({**a, **b}).index)
            if a.get(k) != b.get(k)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="make demo once per seed; per-stage mean/min/max to --out")
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    d.add_argument("--out", type=Path, help="default: docs/results/demo.json for fp32 runs, demo-bf16.json for bf16")
    d.add_argument("--add", action="store_true", help="add these seeds to the ones already in --out")
    d.add_argument("--reuse", action="store_true", help="record RUN_ROOT/seed-N where it has finished (its "
                   "summary.json) instead of running it again (a `make demo` run dir of seed 0 counts: same stages)")
    c = sub.add_parser("check", help="make demo twice from fresh run dirs; exit 1 when a stage accuracy differs")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--against", type=Path, help="run once and compare with this seed's stage accuracies in a "
                   "results file of `demo` (measured on this machine: across CPUs they differ)")
    for q in (d, c):
        q.add_argument("--run-root", type=Path, default=Path("runs/spread"))
        q.add_argument("--config", type=Path, default=KEYE)
        q.add_argument("--dtype", choices=["config", "auto", "float32", "bfloat16"], default="config",
                       help="every trainer and engine in this dtype (config: as the recipe says, auto for "
                            "keye.yaml; auto: bf16 on CPUs with AMX, fp32 elsewhere)")
        q.add_argument("overrides", nargs="*", help="key=value pipeline overrides (e.g. shorter stages)")
    args = p.parse_args(argv)
    overrides = dtype_overrides(None if args.dtype == "config" else args.dtype) + args.overrides
    dtype = planned_dtype(args.config, overrides)
    if args.cmd == "demo":
        out = args.out or results_path(dtype)
        per_seed = []
        if args.add and out.is_file():  # keep the seeds already in --out (same config, overrides, dtype)
            old = json.loads(out.read_text())
            if (old.get("config"), old.get("overrides"), old.get("dtype_setting", "config")) != (
                    str(args.config.resolve().relative_to(ROOT)), args.overrides, args.dtype):
                raise SystemExit(f"--add: {out} was written with another config, overrides or --dtype")
            per_seed = [r for r in old["per_seed"] if r["seed"] not in args.seeds]
        for s in args.seeds:  # written after every seed: a long spread that stops keeps what it has
            d = args.run_root / f"seed-{s}"
            per_seed.append(read_pipeline_seed(d, s) if args.reuse and (d / "summary.json").is_file()
                            else run_pipeline_seed(d, s, args.config, overrides))
            result = {"command": "make demo", "config": str(args.config.resolve().relative_to(ROOT)),
                      "overrides": args.overrides, "dtype_setting": args.dtype,
                      "dtype": dtype if run_dtype(per_seed) == "unknown" else run_dtype(per_seed),
                      "machine": machine(), **spread(per_seed)}
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["stages"], indent=2))
        return 0
    if args.against:  # one run against the seed's recorded accuracies (a results file of `demo`)
        against = json.loads(args.against.read_text())
        recorded = {r["seed"]: r["stages"] for r in against["per_seed"]}
        if args.seed not in recorded:
            raise SystemExit(f"--against {args.against}: no seed {args.seed} there (has {sorted(recorded)})")
        if against.get("dtype", dtype) != dtype:
            raise SystemExit(f"--against {args.against}: recorded in {against['dtype']}, this run would be {dtype} "
                             f"(pass --dtype {against['dtype']}, or compare with the {dtype} results)")
        runs = [recorded[args.seed],
                run_pipeline_seed(args.run_root / "rerun-1", args.seed, args.config, overrides)["stages"]]
    else:
        runs = [run_pipeline_seed(args.run_root / f"rerun-{i}", args.seed, args.config, overrides)["stages"]
                for i in (1, 2)]
    diff = differences(*runs)
    print(json.dumps({"first": runs[0], "second": runs[1]}, indent=2))
    print("reruns differ: " + "; ".join(diff) if diff else "reruns identical")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
