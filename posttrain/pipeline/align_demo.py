"""`make align-demo`: SFT on unconstrained data, then `posttrain align` on the tiny default.

1-digit + 1-digit addition (100 problems; a tiny model learns them in minutes; the
2-digit demo task reaches low accuracy in that time) -> tiny model whose tokenizer
also knows the instruction sentences -> SFT on the bare questions, answers sometimes in a
surface form (quotes, title, keyword, end word) without the instruction, plus RL problems
with instructions the answer ignores (so the sum survives instruction text; which form an
instruction wants is left to RL) -> alignment GSPO (configs/tiny/align.yaml: the task
answer, and the constraints mostly paid only with the right answer) -> held-out
constraint rate, task accuracy and constrained answers' accuracy before/after, in
RUN_DIR/summary.json (docs/align.md).

Held-out sets: `eval.jsonl` has constrained prompts on 20 problems never used as RL
prompts; the 100 unconstrained problems (the SFT training prompts, never used by RL as
such: alignment must not lose what SFT taught) are split into `task.jsonl` (70, the
reported task accuracy) and `guard.jsonl` (30, the guard's own rows: with
`align.on_drop: rollback` it picks the final model, so it must not see the reported rows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from posttrain.core.config import load_config
from posttrain.core.data import load_rows, write_jsonl
from posttrain.core.run_dir import (CONFIG_FILE, INPUTS_FILE, SUMMARY_FILE, RunDir, atomic_write_text, flat_config,
                                     input_files)
from posttrain.phases import sft
from posttrain.pipeline.spread import machine, merge_seeds
from posttrain.rl import align
from posttrain.tasks.addition import split_rows
from posttrain.tasks.instructions import instruction_texts, make_align_data, sft_rows, unheeded_instruction_rows
from posttrain.tasks.tiny import make_tiny_model

ROOT = Path(__file__).resolve().parents[2]
ALIGN_YAML = ROOT / "configs" / "tiny" / "align.yaml"
SFT_YAML = ROOT / "configs" / "tiny" / "sft.yaml"
# The SFT stage of this demo, set in full here so changes to configs/tiny/sft.yaml
# (tuned for the 2-digit task) do not move it.
SFT_OVERRIDES = ["optim.lr=3e-3", "optim.warmup_steps=50", "optim.scheduler=cosine", "train.max_steps=600",
                 "train.batch_size=64", "train.max_length=96", "train.logging_steps=50", "train.save_steps=10000",
                 "eval.every=0", "eval.max_rows=100", "eval.max_new_tokens=16", "sft.completion_only_loss=true"]


def make_data(out: Path, seed: int = 0, copies: int = 20, styled_fraction: float = 0.3,
              sft_seed: int | None = None, unheeded_copies: int = 5, guard_problems: int = 30) -> dict[str, Path]:
    """The RL and held-out rows of `seed`; the SFT rows of `sft_seed` (default: the same): every
    problem bare `copies` times, plus `unheeded_copies` prompts with instructions the answer
    ignores per RL problem (`unheeded_instruction_rows`). The unconstrained problems are split
    into `task` (reported) and `guard_problems` of them in `guard` (the task guard's rows)."""
    sft_seed = seed if sft_seed is None else sft_seed
    d = make_align_data(seed=seed)
    sft_base = d["base"] if sft_seed == seed else make_align_data(seed=sft_seed)["base"]
    paths = {"sft": out / "sft.jsonl", "task": out / "task.jsonl", "guard": out / "guard.jsonl",
             "train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    rows = sft_rows(sft_base, copies=copies, styled_fraction=styled_fraction, seed=sft_seed)
    if unheeded_copies:  # instructions the answers ignore, on this seed's RL problems only (eval's stay unseen)
        held = {r["id"].rsplit("-if", 1)[0] for r in d["eval"]}
        rows += unheeded_instruction_rows([r for r in d["base"] if r["id"] not in held], unheeded_copies,
                                          styled_fraction, sft_seed)
    write_jsonl(paths["sft"], rows)
    task, guard = split_rows(d["base"], guard_problems, f"guard:{seed}")
    write_jsonl(paths["task"], task)
    write_jsonl(paths["guard"], guard)
    write_jsonl(paths["train"], d["train"])
    write_jsonl(paths["eval"], d["eval"])
    return paths


def make_model(data: dict[str, Path], out: Path, seed: int = 0) -> Path:
    if (out / "config.json").is_file():
        return out
    rows = load_rows(data["sft"]) + load_rows(data["train"])
    return make_tiny_model(rows, out, hidden=128, layers=4, heads=2, head_dim=64, vocab_size=512, seed=seed,
                           extra_texts=instruction_texts())


def run_sft(data: dict[str, Path], model: Path, out: Path, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(sft.Config, SFT_YAML, ["model.init=path", f"model.path={model}", f"data.train={data['sft']}",
                                             f"data.eval={data['task']}", *SFT_OVERRIDES, *overrides])
    return sft.run(cfg, out)


def align_config(data: dict[str, Path], sft_model: Path, overrides: list[str]) -> align.Config:
    return load_config(align.Config, ALIGN_YAML, [f"model.path={sft_model}", f"data.train={data['train']}",
                                                  f"data.eval={data['eval']}",
                                                  f"eval.extra_evals=[{{name: task_accuracy, data: '{data['task']}', "
                                                  "reward: 'posttrain.tasks.instructions:final_number'}, "
                                                  f"{{name: task_guard, data: '{data['guard']}', "
                                                  "reward: 'posttrain.tasks.instructions:final_number'}, "
                                                  f"{{name: constrained_task_accuracy, data: '{data['eval']}', "
                                                  "reward: 'posttrain.tasks.instructions:final_number'}]",
                                                  *overrides])


def finished_summary(run_dir: Path, cfg: align.Config) -> dict[str, Any] | None:
    """RUN_DIR's summary when it holds a finished run of exactly this align config on the same
    data files (config.yaml and inputs.json of RUN_DIR/align), else None: a multi-seed run that
    stopped, or is run again, redoes only the seeds it has not finished."""
    summary, align_dir = run_dir / SUMMARY_FILE, run_dir / "align"
    if not (summary.is_file() and (align_dir / CONFIG_FILE).is_file() and (align_dir / INPUTS_FILE).is_file()):
        return None
    new = flat_config(cfg.model_dump(mode="json"))
    if flat_config(yaml.safe_load((align_dir / CONFIG_FILE).read_text())) != new:
        return None
    inputs = json.loads((align_dir / INPUTS_FILE).read_text())
    if inputs != input_files(new):
        return None
    s = json.loads(summary.read_text())
    return None if s.get("interrupted") or s.get("constraint_rate_after") is None else s


def run_demo(run_dir: str | Path, sft_overrides: list[str] = (), align_overrides: list[str] = (),
             seed: int = 0, sft_seed: int | None = None, sft_dir: str | Path | None = None) -> dict[str, Any]:
    """One demo run. `sft_seed`/`sft_dir`: the tiny model and SFT of that seed, built once in
    SFT_DIR and shared (several RL seeds from one SFT model); default: this seed's, in RUN_DIR."""
    run = RunDir(run_dir, "align-demo")
    t0 = time.monotonic()
    sft_seed = seed if sft_seed is None else sft_seed
    home = Path(sft_dir) if sft_dir is not None else run.path
    data = make_data(run.path / "data", seed, sft_seed=sft_seed)
    init = make_model(data, home / "init_model", sft_seed)
    sft_model = home / "sft" / "final"
    if not (sft_model / "config.json").is_file():
        run_sft(data, init, home / "sft", [f"data.seed={sft_seed}", f"train.seed={sft_seed}", *sft_overrides])
    t1 = time.monotonic()
    cfg = align_config(data, sft_model, [f"train.seed={seed}", *align_overrides])
    done = finished_summary(run.path, cfg)
    if done is not None:
        print(f"{run.path}: finished with this config and data; reusing its summary", flush=True)
        return done
    a = align.run(cfg, run.path / "align")
    summary = {
        "seed": seed, "sft_seed": sft_seed,
        "constraint_rate_before": a["constraint_rate_before"], "constraint_rate_after": a["constraint_rate_after"],
        "task_accuracy_before": a["task_accuracy_before"], "task_accuracy_after": a["task_accuracy_after"],
        "constrained_task_accuracy_before": a.get("constrained_task_accuracy_before"),
        "constrained_task_accuracy_after": a.get("constrained_task_accuracy_after"),
        "prompt_strict_before": a.get("prompt_strict_before"), "prompt_strict_after": a.get("prompt_strict_after"),
        "task_guard_before": a.get("task_guard_before"), "task_guard_after": a.get("task_guard_after"),
        "guard": a.get("guard"), "steps": a.get("steps"), "interrupted": a.get("interrupted"),
        "sft_model": str(sft_model), "final_model": a["final_model"],
        "task": "1-digit + 1-digit addition (100 problems)", "data": {k: str(v) for k, v in data.items()},
        "sft_wall_s": round(t1 - t0, 1), "align_wall_s": a.get("rl_wall_s"),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    run.write_summary(summary)
    return summary


def run_seeds(run_dir: str | Path, seeds: list[int], sft_overrides: list[str] = (),
              align_overrides: list[str] = (), sft_seed: int | None = None) -> dict[str, Any]:
    """The demo once per seed in RUN_DIR/seed-N (data, tiny-model init, SFT and RL seeds; with
    `sft_seed`, one SFT model of that seed in RUN_DIR/sft-seed-N for all), then
    RUN_DIR/summary.json from `merge_seeds`."""
    sft_dir = None if sft_seed is None else Path(run_dir) / f"sft-seed-{sft_seed}"
    per_seed = [run_demo(Path(run_dir) / f"seed-{s}", sft_overrides, align_overrides, s, sft_seed, sft_dir)
                for s in seeds]
    summary = merge_seeds(per_seed)
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/align-demo")
    p.add_argument("--sft", action="append", default=[], help="key=value override of the SFT stage")
    p.add_argument("--align", action="append", default=[], help="key=value override of the align stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", help="run once per seed in RUN_DIR/seed-N; summary.json "
                   "holds the means and `seeds`, the per-seed summaries")
    p.add_argument("--sft-seed", type=int, help="with --seeds: one SFT model (this seed's) for every seed; "
                   "the seeds then vary the RL data split, constraint draws and RL sampling only")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the same numbers on any core "
                   "count, and faster than 2 on a loaded 2-core machine)")
    p.add_argument("--results", type=Path, help="also write the summary, without this machine's paths and "
                   "with the CPU and commit, here (a committed file the README tables are generated from)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.seeds:
        s = run_seeds(args.run_dir, args.seeds, args.sft, args.align, args.sft_seed)
    else:
        s = run_demo(args.run_dir, args.sft, args.align, args.seed)
    print(json.dumps(s, indent=2))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.results, json.dumps(results_record(s, args), indent=2) + "\n")
    for one in s.get("seeds", [s]):
        print(headline(one))


LOCAL = ("sft_model", "final_model", "data")


def results_record(summary: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The summary as a committed results file: local paths dropped, the command and machine added."""
    strip = lambda d: {k: v for k, v in d.items() if k not in LOCAL}  # noqa: E731
    out = strip(summary)
    if "seeds" in out:
        out["seeds"] = [strip(x) for x in out["seeds"]]
    cmd = "python -m posttrain.pipeline.align_demo " + (f"--seeds {' '.join(map(str, args.seeds))}" if args.seeds
                                                         else f"--seed {args.seed}")
    cmd += f" --sft-seed {args.sft_seed}" * (args.sft_seed is not None) + f" --threads {args.threads}"
    return {"command": cmd, "overrides": {"sft": args.sft, "align": args.align}, "machine": machine(), **out}


def headline(s: dict[str, Any]) -> str:
    cb, ca = s["constraint_rate_before"], s["constraint_rate_after"]
    tb, ta = s["task_accuracy_before"], s["task_accuracy_after"]
    ka = s.get("constrained_task_accuracy_after")
    if None in (cb, ca, tb, ta):
        return f"seed {s.get('seed')}: incomplete"
    return (f"seed {s.get('seed')}: held-out constraint rate {cb:.1%} -> {ca:.1%} ({(ca - cb) * 100:+.1f} points); "
            f"task accuracy {tb:.1%} -> {ta:.1%} ({(ta - tb) * 100:+.1f} points); constrained answers correct "
            f"{ka if ka is None else f'{ka:.1%}'}")


if __name__ == "__main__":
    main()
