#!/usr/bin/env bash
# The tiny phase chain on 2-term addition, offline, with the numbers each phase reports:
#   data -> SFT (tiny model from scratch, stopped once 40% of a dev slice is right)
#        -> RFT (sample 8 on every training prompt, keep verified, retrain)
#        -> pairs from RFT's scored samples (2 per prompt; the reference answer beats the
#           samples of all-wrong prompts; 200 prompts held out) -> MPO and RM from the SFT model.
# Usage: scripts/tiny_phases.sh [OUT=runs/tiny]   (SFT: configs/demo/sft.yaml; the others: configs/tiny/<phase>.yaml)
set -euo pipefail
OUT=${1:-runs/tiny}
PT=${PT:-.venv/bin/posttrain}
export HF_DATASETS_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
t() { /usr/bin/time -f "  [$1: %e s wall]" "${@:2}"; }

$PT data make-task --out "$OUT/data/train.jsonl" --eval-out "$OUT/data/eval.jsonl" --n 9000 --n-eval 200
D="data.train=$OUT/data/train.jsonl data.eval=$OUT/data/eval.jsonl"
# When SFT's accuracy jumps varies by run (docs/phases.md): the demo's SFT, which stops by measurement.
t sft $PT sft --config configs/demo/sft.yaml --run-dir "$OUT/sft" $D > "$OUT/sft.log" 2>&1
t rft $PT rft --config configs/tiny/rft.yaml --run-dir "$OUT/rft" model.path="$OUT/sft/final" \
  data.prompts="$OUT/data/train.jsonl" data.eval="$OUT/data/eval.jsonl" data.max_prompts=9000 > "$OUT/rft.log" 2>&1
$PT data pairs --input "$OUT/rft/scored.jsonl" --output "$OUT/pairs/train.jsonl" \
  --eval-out "$OUT/pairs/eval.jsonl" --n-eval 200 --per-prompt 2 --reference
P="data.train=$OUT/pairs/train.jsonl data.eval=$OUT/pairs/eval.jsonl model.path=$OUT/sft/final"
t mpo $PT mpo --config configs/tiny/mpo.yaml --run-dir "$OUT/mpo" $P data.eval_rows="$OUT/data/eval.jsonl" \
  > "$OUT/mpo.log" 2>&1
t rm $PT rm --config configs/tiny/rm.yaml --run-dir "$OUT/rm" $P train.max_steps=1200 eval.max_rows=1000 \
  > "$OUT/rm.log" 2>&1

.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
s = {p: json.load(open(f"{out}/{p}/summary.json")) for p in ("sft", "rft", "mpo", "rm")}
print(f"SFT  held-out greedy accuracy {s['sft']['eval/accuracy_start']:.3f} -> {s['sft']['eval/accuracy']:.3f}"
      f"  ({s['sft']['steps']} steps, train {s['sft']['train_seconds']} s)")
print(f"RFT  kept {s['rft']['rft/kept']} of {s['rft']['rft/prompts']} prompts x k; sample accuracy "
      f"{s['rft']['rft/sample_accuracy']:.3f}; held-out accuracy {s['rft']['eval/accuracy_start']:.3f} -> "
      f"{s['rft']['eval/accuracy']:.3f}")
print(f"MPO  held-out margin {s['mpo']['start/eval/margin']:.3f} -> {s['mpo']['eval/margin']:.3f}; pair acc "
      f"{s['mpo']['start/eval/pair_accuracy']:.3f} -> {s['mpo']['eval/pair_accuracy']:.3f}; greedy acc "
      f"{s['mpo']['start/eval/accuracy']:.3f} -> {s['mpo']['eval/accuracy']:.3f}")
print(f"RM   held-out ranking accuracy {s['rm']['start/eval/accuracy']:.3f} -> {s['rm']['eval/accuracy']:.3f}")
PY
