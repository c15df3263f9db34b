"""HF generate fp32 vs bf16, GSPO update fp32 vs bf16 (autocast, bf16 working copy), and bf16 log-prob
error (docs/precision.md).

PYTHONPATH=. NP=4 NT=64 python scripts/precision/train_dt.py logprobs|update|hf [MODEL_DIR]
update: THREADS (default 2) torch threads, VARIANTS (default float32,autocast,working), ROUNDS (default 2);
each variant's wall and process CPU seconds (CPU time: less sensitive to other jobs on one thread).
"""
import os, sys, time
import torch
from pathlib import Path
from benchmarks.model import make_bench_model, addition_rows
from posttrain.core.models import load_tokenizer, load_causal_lm
from posttrain.core.devices import autocast
from posttrain.rl.logprobs import collate, response_logprobs
from posttrain.rl.update import gspo_update
from posttrain.rl.mixed import WorkingCopy
from posttrain.rl.policy_losses import POLICY_LOSSES
from posttrain.rl.optim import make_optimizer
from posttrain.core.config import OptimConfig
from rollouts.evaluate import encode_rows
from rollouts.types import Rollout
torch.set_num_threads(int(os.environ.get("THREADS", 2)))
what = sys.argv[1]
model_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else make_bench_model(Path("runs/measure/model"))[0]
tok = load_tokenizer(model_dir)
enc = encode_rows(tok, addition_rows(64, seed=7))
def load(dt): return load_causal_lm(model_dir, dt).eval()
if what == "hf":
    for dt in ("float32", "bfloat16", "float32", "bfloat16"):
        m = load(dt); n, T, P = 8, 128, 64
        flat = [e.token_ids for e in enc[:P] for _ in range(n)]
        w = max(map(len, flat)); pad = tok.pad_token_id
        ids = torch.tensor([[pad]*(w-len(t))+list(t) for t in flat]); mask = (torch.arange(w)[None] >= torch.tensor([w-len(t) for t in flat])[:, None]).long()
        torch.manual_seed(0); t = time.perf_counter()
        with torch.no_grad():
            out = m.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=T, min_new_tokens=T, pad_token_id=pad)
        s = time.perf_counter() - t
        print(f"RESULT hf {dt}: {P*n*T/s:.0f} tok/s ({s:.1f}s) load {os.getloadavg()[0]:.1f}", flush=True)
    sys.exit()
# a GSPO batch: 8 prompts x 8 samples x 128 tokens sampled from the model (fp32)
m = load("float32")
torch.manual_seed(0)
rolls = []
NP = int(os.environ.get('NP', 8)); NT = int(os.environ.get('NT', 128))
for i, e in enumerate(enc[:NP]):
    ids = torch.tensor([e.token_ids] * 8)
    if os.environ.get("RANDOM_TOKENS"):  # timing only: the update's cost does not depend on the tokens
        out = torch.cat([ids, torch.randint(5, len(tok), (8, NT))], 1)
    else:
        with torch.no_grad():
            out = m.generate(input_ids=ids, do_sample=True, top_k=0, max_new_tokens=NT, min_new_tokens=NT,
                             pad_token_id=tok.pad_token_id)
    for k in range(8):
        rolls.append(Rollout(f"p{i}", k, list(e.token_ids), out[k, len(e.token_ids):].tolist(), [], "", "length", 0, 0))
batch = collate([r.prompt_token_ids for r in rolls], [r.token_ids for r in rolls], tok.pad_token_id)
adv = torch.randn(len(rolls))
if what == "logprobs":
    def lps(model, mode):
        with torch.no_grad():
            if mode == "fp32":
                return response_logprobs(model, batch)
            if mode == "bf16_softmax_bf16":
                with autocast("cpu", "bfloat16"):
                    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False)
                P, R = batch.prompt_len, batch.response_mask.shape[1]
                lg = out.logits[:, P-1:P-1+R].to(torch.bfloat16)
                lp = torch.log_softmax(lg, -1).gather(-1, batch.input_ids[:, P:P+R, None]).squeeze(-1).float()
                return lp * batch.response_mask
            if mode == "bf16_working":  # the bf16 working copy (posttrain.rl.mixed): no autocast, bf16 everywhere
                return response_logprobs(WorkingCopy(model).module.eval(), batch)
            if mode == "bf16_head32":
                lm = model.get_output_embeddings(); orig = lm.forward
                def fwd(x):
                    with torch.autocast("cpu", enabled=False):
                        return torch.nn.functional.linear(x.float(), lm.weight.float())
                lm.forward = fwd
                try:
                    with autocast("cpu", "bfloat16"):
                        return response_logprobs(model, batch)
                finally:
                    lm.forward = orig
            with autocast("cpu", "bfloat16"):
                return response_logprobs(model, batch)
    MODES = ("bf16", "bf16_working", "bf16_head32", "bf16_softmax_bf16")
    ref = lps(m, "fp32"); mask = batch.response_mask.float(); L = mask.sum(-1)
    for mode in MODES:
        x = lps(m, mode)
        tok_err = ((x - ref).abs() * mask).sum() / mask.sum()
        seq = ((x - ref) * mask).sum(-1) / L
        print(f"RESULT logprobs {mode} vs fp32: token |err| mean {tok_err:.4f}, sequence mean log-ratio |err| mean {seq.abs().mean():.5f} max {seq.abs().max():.5f} (GSPO eps 3e-4)", flush=True)
    # one optimizer step, then the sequence log-ratio new/old in each precision
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    with autocast("cpu", "float32"):
        lp = response_logprobs(m, batch)
    (-(lp.sum(-1) / L * adv).mean()).backward(); opt.step()
    new_ref = lps(m, "fp32"); s_ref = ((new_ref - ref) * mask).sum(-1) / L
    m0 = load("float32")  # the pre-step weights, for the old log-probs in each precision
    for mode in MODES:
        s = ((lps(m, mode) - lps(m0, mode)) * mask).sum(-1) / L
        print(f"RESULT ratio after 1 step lr 1e-5: fp32 |log s| mean {s_ref.abs().mean():.6f}; {mode} |log s| mean {s.abs().mean():.6f}, |err vs fp32| mean {(s-s_ref).abs().mean():.6f} max {(s-s_ref).abs().max():.6f}; clipped at eps 3e-4/4e-4: fp32 {((s_ref<-3e-4)|(s_ref>4e-4)).float().mean():.2f} {mode} {((s<-3e-4)|(s>4e-4)).float().mean():.2f}", flush=True)
    sys.exit()
if what == "update":
    loss_fn = POLICY_LOSSES.get("gspo").bind({})
    variants = os.environ.get("VARIANTS", "float32,autocast,working").split(",")
    for _ in range(int(os.environ.get("ROUNDS", 2))):
        for v in variants:
            mm = load("float32"); opt, sch = make_optimizer(mm, OptimConfig(lr=1e-5), 100)
            kw = {"autocast": {"precision": "bfloat16"}, "working": {"working": WorkingCopy(mm)}}.get(v, {})
            t, c = time.perf_counter(), time.process_time()
            r = gspo_update(mm, opt, sch, loss_fn, rolls, adv, tok.pad_token_id, 4, 1.0, "trainer", torch.Generator().manual_seed(0), **kw)
            s, c = time.perf_counter() - t, time.process_time() - c
            print(f"RESULT update {v}: wall {s:.2f}s cpu {c:.2f}s for {len(rolls)}x{NT} tokens, 4 minibatches, "
                  f"{torch.get_num_threads()} threads; clip_frac {r.metrics.get('rl/clip_frac')} load {os.getloadavg()[0]:.1f}", flush=True)
