"""`make bench` / `python -m benchmarks`: posttrain against TRL, HF generate and
the hardware's own peak, measured side by side in one run (contenders alternate,
because the machine is shared and noisy).

Workloads (each runs alone with `--only NAME`):
  rollout   RolloutPool (1 vLLM actor on both cores) vs HF `generate`; fraction of fp32 matmul peak
  rl_step   end-to-end GSPO steps: posttrain's trainer vs TRL's GRPOTrainer set up as GSPO
  accuracy  held-out accuracy gain after equal wall time from one SFT checkpoint
  rewards   reward service (2 workers) vs a sequential math-verify loop (rewards.bench)
  memory    peak resident memory of `posttrain demo`, summed over the process tree

Results: RUN_DIR/results.json (contract in benchmarks.stats); docs/benchmarks.md and
docs/img/*.png are regenerated from it (benchmarks.report).
"""
