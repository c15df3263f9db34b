"""The progressive-hints ablation: GSPO with and without hints from one SFT checkpoint.

    make hints-ablation            # or: python scripts/hints_ablation.py --out runs/hints-ablation

Stages (each writes under OUT and is skipped when its output exists, so a re-run resumes):
1. data: distinct 2-digit addition problems (rows with their five hints) split into an SFT
   set, an RL training set and a held-out set.
2. sft: the demo's tiny Qwen2 and SFT config (`configs/demo/sft.yaml`): the task from
   scratch until its stop accuracy, then `--hint-sft-steps` on the same problems with
   `--sft-hinted-copies` hinted copies each (`data.hinted_copies`), so the model reads hints.
3. hard: `--hard-samples` samples per prompt without hints from the SFT model; a prompt is
   hard when none is correct and its greedy answer is wrong too. Held-out hard prompts are
   the hard prompts' held-out twins (same task family, never trained on).
4. probe: the Table-9 probe of the SFT checkpoint on the hard RL prompts (fresh samples), and
   on all RL prompts for reference.
5. rl: GSPO runs from the SFT checkpoint, same seed and budget, one per arm: no hints;
   hints trained on the hinted prompt (Keye's choice, the contract's "with hints"); hints
   trained on the bare question (`hints.train_prompt=plain`).
6. eval: greedy accuracy without hints on the held-out hard prompts, for every arm.
Writes OUT/summary.json (see docs/hints.md for the fields).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Measured here: with other jobs on the 2 cores, torch's 2 threads made a tiny model's
# training step 5-30x slower than 1 thread (oversubscription). Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def log(msg: str) -> None:
    print(f"[hints-ablation {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, obj: Any) -> None:
    from posttrain.core.run_dir import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------------------- 1. data

def make_data(out: Path, args) -> dict[str, Path]:
    from posttrain.core.data import load_rows, write_jsonl
    from posttrain.tasks.addition import make_addition_rows

    paths = {k: out / "data" / f"{k}.jsonl" for k in ("sft", "rl_train", "heldout")}
    if all(p.exists() for p in paths.values()):
        return paths
    n_sft, n_rl, n_held = args.sft_rows, args.rl_rows, args.heldout_rows
    rows = make_addition_rows(n_sft + n_rl + n_held, digits=2, terms=2, seed=args.data_seed)
    write_jsonl(paths["sft"], rows[:n_sft])  # with hints: SFT adds the hinted copies (data.hinted_copies)
    write_jsonl(paths["rl_train"], [dict(r, id=f"rl-{r['id']}") for r in rows[n_sft:n_sft + n_rl]])
    write_jsonl(paths["heldout"], [dict(r, id=f"ho-{r['id']}") for r in rows[n_sft + n_rl:]])
    load_rows(paths["rl_train"]), load_rows(paths["heldout"])  # validate the contract
    return paths


# ---------------------------------------------------------------------------- 2. sft

def run_sft(out: Path, paths: dict[str, Path], args) -> Path:
    """SFT in two parts: the task from scratch until the demo config's stop accuracy, then
    `--hint-sft-steps` more on the same problems with hinted copies, so the model reads hints
    (a large pretrained model comes with both). From scratch with the copies mixed in, the
    accuracy jump did not come by step 1,500 (12% held-out)."""
    from posttrain.core.config import load_config
    from posttrain.phases.sft import Config, run

    common = [f"data.train={paths['sft']}", f"data.eval={paths['heldout']}", f"data.seed={args.data_seed}",
              f"train.seed={args.seed}", "eval.max_rows=256"]
    task = out / "sft_task" / "final"
    if not (task / "config.json").is_file():
        summary = run(load_config(Config, args.sft_config, [*common, *args.sft_set]), out / "sft_task")
        log(f"sft (task): {json.dumps(summary)}")
    final = out / "sft" / "final"
    if not (final / "config.json").is_file():
        cfg = load_config(Config, args.sft_config, [
            *common, "model.init=path", f"model.path={task}", f"data.hinted_copies={args.sft_hinted_copies}",
            "train.max_length=160",  # a level-5 hint makes the prompt ~4x longer; truncation would drop its answer
            f"train.max_steps={args.hint_sft_steps}", "eval.stop_at_accuracy=null", "optim.scheduler=constant",
            f"optim.lr={args.hint_sft_lr}", "optim.warmup_steps=0", *args.sft_set])
        summary = run(cfg, out / "sft")
        log(f"sft (hints): {json.dumps(summary)}")
    return final


# ---------------------------------------------------------------------------- 3. hard prompts

def pass_counts(model_dir: Path, rows: list[dict], samples: int, seed: int) -> dict[str, int]:
    """Correct of G (T=1, no hint) per row id."""
    from hints.cli import make_probe_generator
    from hints.probe import count_correct_groups, sample_groups
    from rollouts.types import SamplingSpec

    gen, encode = make_probe_generator(model_dir, "hf")
    groups = sample_groups(gen, encode, rows, SamplingSpec(n=samples, max_tokens=8, seed=seed))
    gen.close()
    counts = count_correct_groups(groups, rows, _exact)
    return {r["id"]: c for r, c in zip(rows, counts)}


def greedy_correct(model_dir: Path, rows: list[dict]) -> dict[str, bool]:
    """Greedy exact match per row id (rollouts.evaluate: the one definition of greedy accuracy)."""
    from posttrain.core.models import load_policy
    from rewards.config import default_reward
    from rewards.scorer import Scorer
    from rollouts.evaluate import hf_greedy_eval

    model, tok = load_policy(model_dir)
    with Scorer.from_config(default_reward("exact", workers=1)) as scorer:
        res = hf_greedy_eval(model, tok, rows, scorer, max_new_tokens=8)
    return {i: v >= 1.0 for i, v in res.rewards.items()}


def _exact(texts: list[str], rows: list[dict]) -> list[bool]:
    return [t.strip() == r["answer"].strip() for t, r in zip(texts, rows)]


def find_hard(out: Path, sft: Path, paths: dict[str, Path], args) -> dict[str, Any]:
    from posttrain.core.data import load_rows

    path = out / "hard.json"
    if path.exists():
        return read_json(path)
    info: dict[str, Any] = {}
    for split in ("rl_train", "heldout"):
        rows = load_rows(paths[split])
        counts = pass_counts(sft, rows, args.hard_samples, args.seed)
        greedy = greedy_correct(sft, rows)
        hard = [r["id"] for r in rows if counts[r["id"]] == 0 and not greedy[r["id"]]]
        info[split] = {"rows": len(rows), "hard": hard, "hard_fraction": len(hard) / len(rows),
                       "greedy_accuracy": sum(greedy.values()) / len(rows),
                       "mean_pass_rate": sum(counts.values()) / (len(rows) * args.hard_samples)}
        log(f"hard[{split}]: {len(hard)}/{len(rows)} hard; greedy acc {info[split]['greedy_accuracy']:.3f}")
    write_json(path, info)
    return info


# ---------------------------------------------------------------------------- 4. probe

def run_probe_stage(out: Path, sft: Path, paths: dict[str, Path], hard: dict, args) -> dict[str, list[dict]]:
    """Table 9 of the report on the hard RL prompts (Keye measured it on hard samples: hints
    are only given to them), with fresh samples (seed + 1: the hard stage's draws are all
    wrong by construction); and, for reference, on the first `--probe-rows` RL prompts."""
    from hints.cli import print_probe_table, run_probe
    from posttrain.core.data import load_rows

    path = out / "probe.json"
    if path.exists():
        return read_json(path)
    rows = load_rows(paths["rl_train"])
    hard_ids = set(hard["rl_train"]["hard"])
    tables = {}
    for name, subset in (("hard", [r for r in rows if r["id"] in hard_ids][:args.probe_rows]),
                         ("all", rows[:args.probe_rows])):
        tables[name] = run_probe(sft, subset, samples=args.samples, max_tokens=8, seed=args.seed + 1)
        print_probe_table(tables[name], args.samples, len(subset), f"SFT checkpoint, {name} RL training prompts")
    write_json(path, tables)
    return tables


# ---------------------------------------------------------------------------- 5. rl

# arm name -> hints section; the contract's "with hints" is Keye's choice, `hints`.
ARMS = {"no_hints": {"enabled": False},
        "hints": {"enabled": True, "train_prompt": "hinted"},
        "hints_plain": {"enabled": True, "train_prompt": "plain"}}


def rl_config(sft: Path, train: Path, heldout_hard: Path, arm: str, seed: int, args) -> Any:
    from posttrain.core.config import build_config, read_yaml
    from posttrain.rl.config import Config

    raw = read_yaml(args.rl_config)
    raw.update(
        model={**raw.get("model", {}), "path": str(sft)},
        data={"train": str(train), "eval": str(heldout_hard), "seed": seed, "max_eval_rows": args.eval_rows},
        # In-process generation: 9 short runs would spend more on starting engines than on rollouts.
        rollout={**raw.get("rollout", {}), "backend": "hf", "prompts_per_step": args.prompts_per_step},
        train={"steps": args.rl_steps, "seed": seed},
        eval={**raw.get("eval", {}), "every": 0},
        # Same seed, prompts and steps in every arm; only the hints differ. Hinted arms probe
        # newly hard prompts at every level in the step (the probes join the training batch).
        hints={**ARMS[arm], "search": "linear",
               **(args.hints_set if ARMS[arm]["enabled"] else {})})
    return build_config(Config, raw, f"hints ablation rl ({arm})")


def rl_rows(paths: dict[str, Path], hard: dict, args) -> list[dict]:
    """`--rl-used-rows` RL training prompts, half of them hard (as many as there are, up to
    half) and the rest not: a set of hard prompts only made the unhinted arm trade accuracy
    on all held-out prompts (57.5% -> 48-52%) for accuracy on the hard ones (run 4a)."""
    from posttrain.core.data import load_rows

    rows, hard_ids = load_rows(paths["rl_train"]), set(hard["rl_train"]["hard"])
    hard_rows = [r for r in rows if r["id"] in hard_ids][:args.rl_used_rows // 2]
    rest = [r for r in rows if r["id"] not in hard_ids][:max(args.rl_used_rows - len(hard_rows), 0)]
    return sorted(hard_rows + rest, key=lambda r: r["id"])


def run_rl_arms(out: Path, sft: Path, paths: dict[str, Path], hard: dict, args) -> dict[tuple[str, int], Path]:
    """Both arms for every RL seed; returns {(arm, seed): final model folder}."""
    from posttrain.core.data import load_rows, write_jsonl
    from posttrain.rl.trainer import run

    train = out / "data" / "rl_used.jsonl"
    write_jsonl(train, rl_rows(paths, hard, args))
    held_hard = out / "data" / "heldout_hard.jsonl"
    hard_ids = set(hard["heldout"]["hard"])
    write_jsonl(held_hard, [r for r in load_rows(paths["heldout"]) if r["id"] in hard_ids])
    arms = {}
    for seed in args.rl_seeds:
        for name in args.arms:
            run_dir = out / f"rl_{name}_s{seed}"
            arms[(name, seed)] = run_dir / "final"
            if (run_dir / "summary.json").exists() and (run_dir / "final" / "config.json").exists():
                continue
            t0 = time.time()
            summary = run(rl_config(sft, train, held_hard, name, seed, args), run_dir)
            log(f"rl[{name}, seed {seed}] {time.time() - t0:.0f}s: {json.dumps(summary)}")
    return arms


# ---------------------------------------------------------------------------- 6. eval

def eval_arm(model_dir: Path, sets: dict[str, list[dict]], args) -> dict[str, float]:
    """No hints anywhere. Greedy accuracy on each set; sampled pass rate on the held-out hard set."""
    out = {}
    for name, rows in sets.items():
        greedy = greedy_correct(model_dir, rows)
        out[f"{name}/greedy_accuracy"] = sum(greedy.values()) / max(len(rows), 1)
    counts = pass_counts(model_dir, sets["heldout_hard"], args.samples, args.seed + 1)
    out["heldout_hard/sampled_pass_rate"] = sum(counts.values()) / max(len(counts) * args.samples, 1)
    out["heldout_hard/pass_at_G"] = sum(c > 0 for c in counts.values()) / max(len(counts), 1)
    return out


def eval_sets(paths: dict[str, Path], hard: dict, args) -> dict[str, list[dict]]:
    from posttrain.core.data import load_rows

    held = load_rows(paths["heldout"])
    used = rl_rows(paths, hard, args)
    held_hard, train_hard = set(hard["heldout"]["hard"]), set(hard["rl_train"]["hard"])
    return {"heldout_hard": [r for r in held if r["id"] in held_hard],
            "train_hard": [r for r in used if r["id"] in train_hard],
            "heldout_all": held}


def arm_diagnostics(run_dir: Path) -> dict[str, Any]:
    """From the arm's metrics.jsonl: reward early/late, hinted prompts and level use at the end."""
    recs = [r for r in (json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines())
            if "reward/mean" in r]
    if not recs:
        return {}
    q = max(1, len(recs) // 4)
    mean = lambda rs, k: sum(r.get(k, 0.0) or 0.0 for r in rs) / len(rs)  # noqa: E731
    out = {"reward_first_quarter": mean(recs[:q], "reward/mean"), "reward_last_quarter": mean(recs[-q:], "reward/mean"),
           "trained_samples_per_step": mean(recs, "rl/trained_samples"),
           "hinted_prompts_end": recs[-1].get("hints/hinted_prompts", 0.0),
           "searched_prompts": sum(r.get("hints/searched_prompts", 0.0) for r in recs)}
    out["level_use_last_quarter"] = {k: mean(recs[-q:], f"hints/level_{k}") for k in range(6)}
    return out


def evaluate_arms(out: Path, sft: Path, arms: dict, paths: dict[str, Path], hard: dict, args) -> dict:
    sets = eval_sets(paths, hard, args)
    results: dict[str, Any] = {"sft": eval_arm(sft, sets, args)}
    diagnostics = {}
    for (name, seed), model in arms.items():
        results[f"{name}_s{seed}"] = eval_arm(model, sets, args)
        diagnostics[f"{name}_s{seed}"] = arm_diagnostics(out / f"rl_{name}_s{seed}")
    per_seed = {name: [results[f"{name}_s{s}"]["heldout_hard/greedy_accuracy"] for s in args.rl_seeds]
                for name in args.arms}
    mean = {name: sum(v) / len(v) for name, v in per_seed.items()}
    log(f"hard held-out accuracy (mean of seeds {args.rl_seeds}): "
        + ", ".join(f"{k} {v:.4f}" for k, v in mean.items()) + f"; per seed {per_seed}")
    key = {"hints": "with_hints", "no_hints": "without_hints", "hints_plain": "with_hints_plain"}
    return {**{f"hard_accuracy_{key[k]}": v for k, v in mean.items()},
            **{f"hard_accuracy_{key[k]}_per_seed": v for k, v in per_seed.items()}, "rl_seeds": args.rl_seeds,
            "heldout_hard_prompts": len(sets["heldout_hard"]), "train_hard_prompts": len(sets["train_hard"]),
            "eval": results, "diagnostics": diagnostics}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/hints-ablation"))
    p.add_argument("--seed", type=int, default=0, help="Seed of SFT, sampling and both RL arms.")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--sft-rows", type=int, default=8000)
    p.add_argument("--rl-rows", type=int, default=1000)
    p.add_argument("--heldout-rows", type=int, default=1000)
    p.add_argument("--sft-config", type=Path, default=ROOT / "configs" / "demo" / "sft.yaml",
                   help="SFT phase YAML (model.init: tiny builds the model); data paths are set here.")
    p.add_argument("--sft-set", action="append", default=[], metavar="KEY=VALUE", help="Override in the SFT config.")
    p.add_argument("--sft-hinted-copies", type=int, default=5, help="Hinted copies of each SFT problem (0-5).")
    p.add_argument("--hint-sft-steps", type=int, default=800, help="SFT steps with hinted copies, after the task SFT.")
    p.add_argument("--hint-sft-lr", type=float, default=1e-3)
    p.add_argument("--rl-config", type=Path, default=ROOT / "configs" / "demo" / "rl.yaml",
                   help="GSPO phase YAML; model, data, rollout backend, steps, eval and hints are set here.")
    p.add_argument("--samples", type=int, default=8, help="G: responses per prompt.")
    p.add_argument("--hard-samples", type=int, default=32,
                   help="Samples per prompt that must all be wrong (with the greedy answer) for a prompt to be "
                        "hard. With 8, most 'hard' prompts were bad draws that unhinted RL solved anyway (run 4).")
    p.add_argument("--probe-rows", type=int, default=512)
    p.add_argument("--rl-steps", type=int, default=60)
    p.add_argument("--rl-seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2],
                   help="Comma-separated seeds; both arms run once per seed (sampling and data order).")
    p.add_argument("--arms", type=lambda v: v.split(","), default=list(ARMS),
                   help=f"Comma-separated arms of {', '.join(ARMS)}; the contract needs hints and no_hints.")
    p.add_argument("--rl-used-rows", type=int, default=256,
                   help="RL training prompts: hard ones of rl_train (up to N/2), then non-hard ones up to N.")
    p.add_argument("--prompts-per-step", type=int, default=32)
    p.add_argument("--eval-rows", type=int, default=None, help="Cap on held-out hard rows in the trainer's eval.")
    p.add_argument("--hints-set", action="append", default=[], metavar="KEY=VALUE",
                   help="A hints.KEY value of the hinted arms (e.g. k=3).")
    p.add_argument("--stages", default="data,sft,hard,probe,rl,eval")
    args = p.parse_args(argv)
    import yaml

    args.hints_set = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.hints_set)}
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = args.out
    stages = set(args.stages.split(","))
    t0 = time.time()
    paths = make_data(out, args)
    sft = run_sft(out, paths, args) if "sft" in stages else out / "sft" / "final"
    hard = find_hard(out, sft, paths, args) if stages & {"hard", "probe", "rl", "eval"} else None
    probe = run_probe_stage(out, sft, paths, hard, args) if "probe" in stages else {}
    summary: dict[str, Any] = {"seed": args.seed,  # data, SFT and hardness sampling; RL seeds below
                                "probe": probe.get("hard"), "probe_all_prompts": probe.get("all"),
                                "args": {k: str(v) for k, v in vars(args).items()}}
    if hard is not None:
        summary["hard"] = {s: {k: v for k, v in d.items() if k != "hard"} | {"n_hard": len(d["hard"])}
                           for s, d in hard.items()}
    if "rl" in stages:
        arms = run_rl_arms(out, sft, paths, hard, args)
        if "eval" in stages:
            summary.update(evaluate_arms(out, sft, arms, paths, hard, args))
    summary["wall_seconds"] = round(time.time() - t0, 1)
    write_json(out / "summary.json", summary)
    log(f"wrote {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
