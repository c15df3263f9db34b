"""python -m benchmarks [--quick] [--only rollout,rl_step,...] [--skip-demo] [--out runs/bench]"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from benchmarks.common import FULL, QUICK, log
from benchmarks.model import make_bench_model
from benchmarks.stats import bf16_skips, load_results, loadavg, machine_info, merge_workload, write_results
from posttrain.core.devices import cpu_summary, resolve_dtype

WORKLOADS = ("rollout", "rl_step", "accuracy", "accuracy_long", "rewards", "memory", "ablation", "scale",
             "slowfast", "mm_rollout")
ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--out", default="runs/bench", help="results directory (results.json goes here)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    p.add_argument("--skip-demo", action="store_true",
                   help="memory: do not run the demo; reuse OUT/memory/demo_memory.json if present")
    p.add_argument("--sft", default=None,
                   help="accuracy: folder with final/ (SFT checkpoint of the demo task), train.jsonl, eval.jsonl")
    p.add_argument("--demo-sft-steps", type=int, default=300,
                   help="memory: cap the demo's SFT steps (the peak is set in the GSPO phase)")
    p.add_argument("--demo-rl-steps", type=int, default=20, help="memory: GSPO steps of the demo run")
    p.add_argument("--acc-budget", type=float, default=None, help="accuracy: training seconds per contender")
    p.add_argument("--acc-eval-every", type=float, default=None, help="accuracy: seconds between evaluations")
    p.add_argument("--acc-eval-rows", type=int, default=None, help="accuracy: held-out rows evaluated")
    p.add_argument("--rl-prompts", type=int, default=None, help="rl_step: prompts per step (default 8)")
    p.add_argument("--rl-old-logprobs", default="engine", choices=("engine", "trainer"),
                   help="rl_step: posttrain's algo.old_logprobs (engine: the sampler's log-probs; trainer: recompute)")
    p.add_argument("--variants", default="", help="ablation: comma-separated subset of benchmarks.ablation.VARIANTS")
    p.add_argument("--ablation-task", default="demo", choices=("demo", "long", "tiny"),
                   help="ablation: the demo task's SFT checkpoint, or the accuracy_long workload's model and task")
    p.add_argument("--pt-overrides", default="",
                   help="accuracy_long: comma-separated key=value overrides of posttrain's config (e.g. features)")
    p.add_argument("--scale-sizes", default="", help="scale: comma-separated subset of 1m,27m,124m,494m")
    p.add_argument("--scale-parts", default="sync,cost", help="scale: sync (object store vs stream vs memcpy), "
                   "cost (step time, sync time, peak RSS per process), or both")
    p.add_argument("--scale-strategies", default="single,fsdp",
                   help="scale: cost-growth variants to run now (the others keep the previous numbers)")
    p.add_argument("--sync-bucket-mb", type=float, default=256.0, help="scale: streamed sync bucket size (MiB)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per ratio (default 3)")
    p.add_argument("--eager", action="store_true", help="rollout, mm_rollout: vLLM enforce_eager (default: compiled)")
    p.add_argument("--bf16", dest="bf16", action="store_true", default=None,
                   help="also measure bf16 contenders (default: where the CPU has a fast bf16 unit, AMX)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 contenders only")
    p.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown to regenerate")
    p.add_argument("--no-docs", action="store_true", help="do not regenerate the docs")
    p.add_argument("--analysis", default=str(ROOT / "benchmarks" / "analysis.md"),
                   help="hand-written text appended to the docs ('' for none: e.g. a page of one machine's "
                   "partial run, written with --docs elsewhere; its plots go to img/<page name>/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    only = [w for w in args.only.split(",") if w] or list(WORKLOADS)
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        print(f"unknown workload(s) {sorted(unknown)}; choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if args.bf16 is None:  # bf16 contenders only where bf16 is fast (posttrain.core.devices)
        args.bf16 = resolve_dtype("auto", "cpu").dtype == "bfloat16"

    for field, value in (("repeats", args.repeats), ("rl_prompts", args.rl_prompts), ("acc_budget_s", args.acc_budget),
                         ("acc_eval_every_s", args.acc_eval_every), ("acc_eval_rows", args.acc_eval_rows)):
        if value is not None:
            sizes = replace(sizes, **{field: value})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = load_results(results_path)
    results.setdefault("details", {})
    failed = []
    t_all = time.monotonic()
    for name in only:
        log(f"workload {name} ({'quick' if args.quick else 'full'}), load {loadavg()}")
        t0 = time.monotonic()
        try:
            headline, details = run_workload(name, out, sizes, args)
        except Exception as e:
            traceback.print_exc()
            failed.append(name)
            headline, details = {}, {"error": f"{type(e).__name__}: {e}"}
        details.update(quick=args.quick, wall_s=round(time.monotonic() - t0, 1), loadavg_end=loadavg())
        results = load_results(results_path) or results  # another bench process may have written meanwhile
        results.setdefault("details", {})
        merge_workload(results, name, headline, details)
        results["machine"] = machine_info()
        results["cpu"] = cpu_summary()
        results["skipped"] = bf16_skips(args.bf16, resolve_dtype("auto", "cpu").reason)
        write_results(results_path, results)
        log(f"workload {name} done in {details['wall_s']}s: {headline}")
        if not args.no_docs:  # after every workload, so an interrupted run still leaves agreeing docs
            from benchmarks.report import write_docs

            docs = Path(args.docs)
            img = docs.parent / "img" if docs.stem == "benchmarks" else docs.parent / "img" / docs.stem
            write_docs(load_results(results_path), docs, img, analysis=Path(args.analysis) if args.analysis else None,
                       command=" ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]))
    log(f"all done in {time.monotonic() - t_all:.0f}s; results in {results_path}; failed: {failed or 'none'}")
    return 1 if failed else 0


def run_workload(name: str, out: Path, sizes, args) -> tuple[dict, dict]:
    if name == "rewards":
        from benchmarks import rewards_wl

        return rewards_wl.run(sizes)
    if name == "memory":
        from benchmarks import memory

        return memory.run(out / "memory", sizes, skip_demo=args.skip_demo, quick=args.quick,
                          sft_steps=args.demo_sft_steps, rl_steps=args.demo_rl_steps)

    if name == "scale":
        from benchmarks import scale

        return scale.run(out / "scale", sizes, quick=args.quick,
                         only_sizes=[x for x in args.scale_sizes.split(",") if x] or None,
                         bucket_mb=args.sync_bucket_mb, parts=tuple(x for x in args.scale_parts.split(",") if x),
                         previous=load_results(out / "results.json").get("details", {}).get("scale"),
                         strategies=tuple(x for x in args.scale_strategies.split(",") if x))

    if name == "slowfast":
        from benchmarks import slowfast

        return slowfast.run(out / "slowfast", sizes, quick=args.quick)
    if name == "mm_rollout":
        from benchmarks import mm_rollout

        return mm_rollout.run(out / "mm_rollout", sizes, enforce_eager=args.eager, bf16=args.bf16)

    model_dir, params = make_bench_model(out / "model")
    if name == "rollout":
        from benchmarks import rollout

        return rollout.run(model_dir, params, sizes, enforce_eager=args.eager, bf16=args.bf16)
    if name == "rl_step":
        from benchmarks import rl_step

        return rl_step.run(model_dir, params, out / "rl_step", sizes, old_logprobs=args.rl_old_logprobs,
                           bf16=args.bf16)
    if name == "accuracy":
        from benchmarks import accuracy

        return accuracy.run(out / "accuracy", sizes, quick=args.quick, sft=args.sft)
    if name == "accuracy_long":
        from benchmarks import accuracy_long

        return accuracy_long.run(out / "accuracy_long", sizes, quick=args.quick,
                                 overrides=[o for o in args.pt_overrides.split(",") if o])
    if name == "ablation":
        from benchmarks import ablation

        return ablation.run(out / "ablation", sizes, quick=args.quick, sft=args.sft,
                            variants=[v for v in args.variants.split(",") if v] or None, task=args.ablation_task)
    raise ValueError(name)


if __name__ == "__main__":
    sys.exit(main())
