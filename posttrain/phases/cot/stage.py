"""`posttrain data cot` and the `cot` pipeline stage: Keye-VL 1.5's five-step LongCoT
cold-start data pipeline (docs/data.md).

    1 collect   task files merged, exact + near duplicates dropped, questions optionally
                rewritten by a model                                  -> 1_collected.jsonl
    2 generate  k reasoning paths per prompt (Ray + vLLM engines or transformers), each with
                its mean token log-prob and mean entropy              -> 2_paths.jsonl,
                                                                         unfiltered_sft.jsonl
    3 judge     answer level + step level -> tiers A / B / C, C dropped -> 3_judged.jsonl
    4 review    tier B and borderline A to the review queue (review.sqlite, the page of
                `posttrain data review RUN_DIR`); `review.mode: auto` keeps A and drops B
                                                                      -> 4_reviewed.jsonl
    5 score     quality 1-5, the 4-5 paths upsampled                  -> 5_scored.jsonl, sft.jsonl

Each step writes its file atomically and its counts to RUN_DIR/counts.json; with
`--resume` a step whose file exists is not run again (so a human review can sit between
two invocations). In human mode a run whose queue still has undecided samples stops
after step 4 (`interrupted`, with the command to run).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from posttrain.core.config import ConfigError, Section
from posttrain.core.data import DatasetError, read_jsonl, write_jsonl
from posttrain.core.models import load_causal_lm, load_tokenizer
from posttrain.core.run_dir import RunDir, atomic_write_text
from posttrain.phases.cot import collect as collect_step
from posttrain.phases.cot.generate import mean_entropies, path_records
from posttrain.phases.cot.judge import judge, tier_counts
from posttrain.phases.cot.report import write_cot_report
from posttrain.phases.cot.review_store import REVIEW_DB, REVIEWED_FILE, ReviewStore
from posttrain.phases.cot.score import chat_row, histogram, judge_scores, rule_scores, sft_rows
from posttrain.phases.rft import SamplingPhase, make_generator, sample
from rewards.config import RewardConfig, default_reward
from rollouts.evaluate import encode_rows
from rollouts.types import SamplingSpec

COLLECTED, PATHS, UNFILTERED = "1_collected.jsonl", "2_paths.jsonl", "unfiltered_sft.jsonl"
JUDGED, SCORED, SFT_FILE, COUNTS = "3_judged.jsonl", "5_scored.jsonl", "sft.jsonl", "counts.json"
REWRITE_TEMPLATE = ("Rewrite this question in other words. Keep every number and what it asks.\n"
                    "Question: {prompt}")


class CotData(Section):
    sources: list[str] | str | None = Field(None, description="Task files (id, prompt, answer), merged in order.")
    max_prompts: int | None = Field(None, ge=1, description="Keep the first N prompts after deduplication.")


class Rewrite(Section):
    enabled: bool = False
    model: str | None = Field(None, description="Rewriting model (default: model.path).")
    template: str = Field(REWRITE_TEMPLATE, description="Prompt to the rewriter; {prompt} is the question.")
    max_tokens: int = 64


class Collect(Section):
    near_threshold: float = Field(0.9, gt=0.0, le=1.0, description="Jaccard of character 3-grams at or above "
                                                                   "which a prompt is a near duplicate.")
    rewrite: Rewrite = Field(default_factory=Rewrite)


class Judge(Section):
    answer: RewardConfig = Field(default_factory=lambda: default_reward("exact", workers=1),
                                 description="Answer level: passes when reward >= its threshold.")
    steps: RewardConfig | None = Field(None, description="Step level (a step-check or judge reward); null: answer "
                                                         "only, so no tier B.")
    borderline_quantile: float = Field(0.2, ge=0.0, le=1.0, description="Tier-A paths in this lowest fraction "
                                                                        "of confidence also go to review.")
    entropy_batch: int = Field(32, ge=1)


class Review(Section):
    mode: Literal["auto", "human"] = Field("human", description="auto: keep A, drop B, no review; human: the "
                                                                "queue must be decided on the review page.")


class Score(Section):
    method: Literal["rule", "judge"] = "rule"
    judge: RewardConfig | None = Field(None, description="method=judge: reward whose [0,1] value maps to 1-5.")
    upsample_factor: int = Field(2, ge=1, description="Copies of each path scoring >= upsample_min_score.")
    upsample_min_score: int = Field(4, ge=1, le=5)
    seed: int = 0


class Config(SamplingPhase):
    phase: Literal["cot"] = "cot"
    generator: Literal["hf", "vllm"] = Field("vllm", description="vllm: the Ray + vLLM pool (engine settings "
                                                                "under `engine`); hf: transformers in process.")
    data: CotData = Field(default_factory=CotData)
    collect: Collect = Field(default_factory=Collect)
    judge: Judge = Field(default_factory=Judge)
    review: Review = Field(default_factory=Review)
    score: Score = Field(default_factory=Score)


def outputs(cfg: Config, stage_dir: Path) -> dict[str, str | None]:
    """The SFT file; the model is the generator's (this stage trains nothing)."""
    return {"model": cfg.model.path, "sft_data": str(Path(stage_dir) / SFT_FILE)}


def say(msg: str) -> None:
    print(f"[cot] {msg}", file=sys.stderr, flush=True)


class Steps:
    """Step bookkeeping: a step is done when its file exists (on resume); counts in counts.json."""

    def __init__(self, run: RunDir, resume: bool):
        self.run, self.resume = run, resume
        path = run.path / COUNTS
        self.counts: dict[str, Any] = json.loads(path.read_text()) if resume and path.is_file() else {}

    def done(self, name: str) -> bool:
        return self.resume and (self.run.path / name).is_file()

    def read(self, name: str) -> list[dict[str, Any]]:
        return [obj for _, obj in read_jsonl(self.run.path / name)]

    def write(self, step: str, name: str, rows: list[dict[str, Any]], counts: dict[str, Any]) -> None:
        write_jsonl(self.run.path / name, rows)
        self.counts[step] = counts
        atomic_write_text(self.run.path / COUNTS, json.dumps(self.counts, indent=2) + "\n")
        self.run.log(len(self.counts), {f"cot/{step}/{k}": v for k, v in counts.items() if isinstance(v, (int, float))})
        say(f"step {step}: {counts}")


def step_collect(cfg: Config, st: Steps) -> list[dict[str, Any]]:
    if st.done(COLLECTED):
        return st.read(COLLECTED)
    sources = [cfg.data.sources] if isinstance(cfg.data.sources, str) else list(cfg.data.sources or [])
    rows, per_file = collect_step.merge_sources(sources)
    kept, dups = collect_step.dedup(rows, cfg.collect.near_threshold)
    kept = kept[:cfg.data.max_prompts]
    rewritten = 0
    if cfg.collect.rewrite.enabled:
        kept, rewritten = collect_step.rewrite_rows(kept, _rewriter(cfg))
    st.write("collect", COLLECTED, kept, {"read": len(rows), **dups, "kept": len(kept), "rewritten": rewritten,
                                          "files": per_file})
    return kept


def _rewriter(cfg: Config):
    path = cfg.collect.rewrite.model or cfg.model.path
    tok = load_tokenizer(path, cfg.model.trust_remote_code)

    def rewrite(texts: list[str]) -> list[str]:
        rows = [{"id": f"rw{i}", "prompt": cfg.collect.rewrite.template.format(prompt=t)} for i, t in enumerate(texts)]
        gen = make_generator(cfg, path)
        try:
            outs = gen.generate(encode_rows(tok, rows), SamplingSpec(n=1, temperature=0.0,
                                                                     max_tokens=cfg.collect.rewrite.max_tokens))
        finally:
            gen.close()
        return [o.text for o in outs]

    return rewrite


def step_generate(cfg: Config, st: Steps, rows: list[dict[str, Any]], generator=None) -> list[dict[str, Any]]:
    if st.done(PATHS):
        return st.read(PATHS)
    tok = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    gen = generator or make_generator(cfg, cfg.model.path)
    try:
        records = path_records(sample(gen, tok, rows, cfg.sampling))
    finally:
        if generator is None:
            gen.close()
    model = load_causal_lm(cfg.model.path, cfg.model.dtype, cfg.model.trust_remote_code)
    for r, h in zip(records, mean_entropies(model, tok, records, cfg.judge.entropy_batch)):
        r["entropy"] = h
    write_jsonl(st.run.path / UNFILTERED, [{"id": r["id"], **chat_row(r)} for r in records if r["completion"].strip()])
    st.write("generate", PATHS, records, {"prompts": len(rows), "paths": len(records), "k": cfg.sampling.k,
                                          "empty": sum(not r["completion"].strip() for r in records)})
    return records


def step_judge(cfg: Config, st: Steps, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if st.done(JUDGED):
        return st.read(JUDGED)
    judged = judge(records, cfg.judge.answer, cfg.judge.steps, cfg.judge.borderline_quantile)
    kept = [r for r in judged if r["tier"] != "C"]
    counts = tier_counts(judged)
    st.write("judge", JUDGED, kept, {**counts, "answer_correct": sum(r["answer_reward"] == 1 for r in judged)})
    # the report's confidence-vs-correctness plot needs the C paths too
    write_jsonl(st.run.path / "3_all_judged.jsonl", judged)
    return kept


def step_review(cfg: Config, st: Steps, judged: list[dict[str, Any]]) -> list[dict[str, Any]] | int:
    """The kept paths after review, or the number of samples still waiting for a human."""
    if st.done(REVIEWED_FILE) and cfg.review.mode == st.counts.get("review", {}).get("mode"):
        return st.read(REVIEWED_FILE)
    queue = [r for r in judged if r["tier"] == "B" or r.get("borderline")]
    if cfg.review.mode == "auto":
        kept = [dict(r, review="auto") for r in judged if r["tier"] == "A"]
        say(f"review.mode=auto: kept all {len(kept)} tier-A paths, dropped {sum(r['tier'] == 'B' for r in judged)} "
            f"tier-B paths without review ({len(queue)} would have gone to a human)")
        st.write("review", REVIEWED_FILE, kept, {"mode": "auto", "kept": len(kept), "queue": 0,
                                                  "dropped_B": sum(r["tier"] == "B" for r in judged)})
        return kept
    store = ReviewStore(st.run.path / REVIEW_DB)
    store.load_queue(queue)
    pending = store.pending()
    if pending:
        return pending
    decided = {r["id"]: r for r in store.reviewed()}
    kept = [dict(r, review="kept") for r in judged if r["tier"] == "A" and r["id"] not in decided]
    kept += [r for r in decided.values() if r["review"] in ("approve", "edit")]
    counts = {"mode": "human", "queue": len(queue), "kept": len(kept),
              **{d: sum(r["review"] == d for r in decided.values()) for d in ("approve", "edit", "reject")}}
    st.write("review", REVIEWED_FILE, kept, counts)
    return kept


def step_score(cfg: Config, st: Steps, kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if cfg.score.method == "judge":
        if cfg.score.judge is None:
            raise ConfigError("score.method=judge needs score.judge (a reward whose value in [0, 1] maps to 1-5)")
        scores = judge_scores(kept, cfg.score.judge)
    else:
        scores = rule_scores(kept)
    scored = [dict(r, score=s) for r, s in zip(kept, scores)]
    rows = sft_rows(scored, cfg.score.upsample_factor, cfg.score.upsample_min_score, cfg.score.seed)
    write_jsonl(st.run.path / SFT_FILE, rows)
    st.write("score", SCORED, scored, {"histogram": histogram(scores), "kept": len(scored), "sft_rows": len(rows),
                                       "upsampled": sum(s >= cfg.score.upsample_min_score for s in scores)})
    return scored


def run(cfg: Config, run_dir: Path, resume: bool = False, generator=None) -> dict[str, Any]:
    t0 = time.time()
    if not cfg.model.path:
        raise ConfigError("cot: field 'model.path' (the model that writes the reasoning paths) is required")
    run = RunDir(run_dir, "cot")
    run.write_config(cfg)
    st = Steps(run, resume)
    rows = step_collect(cfg, st)
    if not rows:
        raise DatasetError(f"cot: step collect kept no prompt from {cfg.data.sources}")
    judged = step_judge(cfg, st, step_generate(cfg, st, rows, generator))
    if not any(r["tier"] == "A" for r in judged) and cfg.review.mode == "auto":
        raise DatasetError(f"cot: tier A is empty ({st.counts['judge']}): no path passed both judge levels; "
                           f"raise sampling.k, use a stronger model.path, or review tier B (review.mode=human)")
    kept = step_review(cfg, st, judged)
    if isinstance(kept, int):
        msg = (f"{kept} samples await review: run `posttrain data review {run.path}`, then "
               f"`posttrain data cot --resume {run.path}` (or, in a pipeline, `posttrain pipeline --resume`)")
        say(msg)
        summary = {"phase": "cot", "interrupted": True, "steps": "review", "waiting_for_review": kept,
                   "message": msg, "counts": st.counts}
        run.write_summary(summary)
        return summary
    if not kept:
        raise DatasetError(f"cot: no path kept after review ({st.counts.get('review')}); nothing to score")
    scored = step_score(cfg, st, kept)
    report = write_cot_report(run.path, st.counts, run.path / "3_all_judged.jsonl", scored)
    summary = {"phase": "cot", "counts": st.counts, "sft_data": str(run.path / SFT_FILE),
               "unfiltered_sft_data": str(run.path / UNFILTERED), "report": str(report),
               "wall_seconds": round(time.time() - t0, 1)}
    run.write_summary(summary)
    return summary
