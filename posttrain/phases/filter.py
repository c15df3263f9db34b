"""`posttrain filter`: keep the RL prompts the current model sometimes solves.

Between rounds of the Keye-VL 1.5 schedule the RL prompt set is filtered to prompts
whose accuracy under the current model is strictly between 0 and 1: always-right
prompts give no GSPO signal (uniform groups), always-wrong ones give none either
(unless hints rescue them). Accuracy per prompt comes from sampling k responses
through a rollout `Generator` (rows with images or video with their media, on an image-text
model) and scoring them with the verifier rewards, or is
reused from an earlier stage's `prompt_accuracy.jsonl` when that file was computed
with the same model (`reuse.model == model.path`); otherwise the reuse is ignored
and the prompts are sampled.

Outputs: RUN_DIR/prompt_accuracy.jsonl ({"id", "accuracy", "n"}), RUN_DIR/rl_prompts.jsonl
(the kept rows, in input order, media paths absolute), RUN_DIR/summary.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from posttrain.core.config import ConfigError, Section
from posttrain.core.data import DatasetError, load_rows, read_jsonl, write_jsonl
from posttrain.core.run_dir import PROMPT_ACCURACY_FILE, RL_PROMPTS_FILE, RunDir
from posttrain.phases.rft import SamplingPhase, sample_with, sampling_ray, verifier_scores
from rewards.config import RewardConfig, default_reward


class FilterData(Section):
    prompts: str = Field(..., description="Rows (id, prompt, answer) to filter.")
    max_prompts: int | None = None


class ReuseAccuracy(Section):
    accuracy: str | None = Field(None, description="prompt_accuracy.jsonl of an earlier stage (rft, filter).")
    model: str | None = Field(None, description="The model that file was computed with; reused only if it "
                                                "equals model.path.")


class Config(SamplingPhase):
    phase: Literal["filter"] = "filter"
    data: FilterData
    reward: RewardConfig = Field(default_factory=default_reward,
                                 description="Verifier: a sample is correct when its reward >= reward.threshold.")
    low: float = Field(0.0, ge=0.0, le=1.0, description="Keep prompts with accuracy > low ...")
    high: float = Field(1.0, ge=0.0, le=1.0, description="... and accuracy < high.")
    reuse: ReuseAccuracy = Field(default_factory=ReuseAccuracy)


def outputs(cfg: Config, stage_dir: Path) -> dict[str, str | None]:
    """The filter trains nothing: its model is its input model."""
    return {"model": cfg.model.path, "prompts": str(stage_dir / RL_PROMPTS_FILE),
            "accuracy": str(stage_dir / PROMPT_ACCURACY_FILE), "sampled_model": cfg.model.path}


def keep_between(rows: list[dict[str, Any]], accuracy: dict[str, float], low: float = 0.0,
                 high: float = 1.0) -> list[dict[str, Any]]:
    """Rows whose accuracy is strictly between low and high; rows without a measurement are dropped.

    >>> rows = [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}]
    >>> [r["id"] for r in keep_between(rows, {"a": 0.0, "b": 0.5, "c": 1.0})]
    ['b']
    """
    return [r for r in rows if r["id"] in accuracy and low < accuracy[r["id"]] < high]


def read_accuracy(path: str | Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line, obj in read_jsonl(path):
        if not isinstance(obj, dict) or "id" not in obj or not isinstance(obj.get("accuracy"), (int, float)):
            raise DatasetError(f"{path}:{line}: expected {{\"id\", \"accuracy\"}} (a prompt_accuracy.jsonl row)")
        out[str(obj["id"])] = float(obj["accuracy"])
    return out


def sample_accuracy(cfg: Config, rows: list[dict[str, Any]], generator=None) -> list[dict[str, Any]]:
    """[{"id", "accuracy", "n"}] from k samples per prompt scored by the verifier."""
    with sampling_ray(cfg, cfg.reward, generator):
        groups = sample_with(cfg, rows, generator, cfg.data.prompts)
        _, accepted = verifier_scores(groups, cfg.reward)
    return [{"id": row["id"], "accuracy": sum(ok) / max(len(ok), 1), "n": len(ok)}
            for (row, _), ok in zip(groups, accepted)]


def reusable(cfg: Config) -> bool:
    r = cfg.reuse
    return bool(r.accuracy and r.model and Path(r.accuracy).is_file()
                and Path(r.model).resolve() == Path(cfg.model.path or "").resolve())


def run(cfg: Config, run_dir: Path, resume: bool = False, generator=None) -> dict[str, Any]:
    t0 = time.time()
    run = RunDir(run_dir, "filter")
    run.start(cfg, resume)
    if not cfg.model.path and not reusable(cfg):
        raise ConfigError("field 'model.path' is required: the model whose accuracy decides the filter")
    rows = load_rows(cfg.data.prompts)[:cfg.data.max_prompts]
    acc_path = run.path / PROMPT_ACCURACY_FILE
    if resume and acc_path.is_file():
        source = "resumed"
        accuracy = read_accuracy(acc_path)
    elif reusable(cfg):
        source = "reused"
        accuracy = read_accuracy(cfg.reuse.accuracy)
        write_jsonl(acc_path, [{"id": r["id"], "accuracy": accuracy[r["id"]]} for r in rows if r["id"] in accuracy])
    else:
        source = "sampled"
        measured = sample_accuracy(cfg, rows, generator)
        write_jsonl(acc_path, measured)
        accuracy = {m["id"]: m["accuracy"] for m in measured}
    kept = keep_between(rows, accuracy, cfg.low, cfg.high)
    if not kept:
        raise DatasetError(f"{cfg.data.prompts}: no prompt has {cfg.low} < accuracy < {cfg.high} under "
                           f"{cfg.model.path} (see {acc_path}); raise sampling.k or filter a harder/larger set")
    write_jsonl(run.path / RL_PROMPTS_FILE, kept)
    measured_acc = [accuracy[r["id"]] for r in rows if r["id"] in accuracy]
    counts = {"filter/prompts": len(rows), "filter/kept": len(kept),
              "filter/all_right": sum(a >= cfg.high for a in measured_acc),
              "filter/all_wrong": sum(a <= cfg.low for a in measured_acc),
              "filter/mean_accuracy": sum(measured_acc) / max(len(measured_acc), 1)}
    run.log(0, counts)
    summary = {"phase": "filter", "source": source, **counts, "model": cfg.model.path,
               "prompts": str(run.path / RL_PROMPTS_FILE), "wall_seconds": round(time.time() - t0, 1)}
    run.write_summary(summary)
    return summary
