"""`posttrain rft`: rejection-sampling fine-tuning.

1. sample k responses per prompt from `model` through a rollout `Generator`; rows with images or
   video go to an image-text model's engines with their media (by path, rollouts/media.py);
2. keep a sample when the verifier accepts it (composite reward >= threshold), or,
   with `filter.reward_model` and no verifier, when the reward model scores it above
   the row's reference answer;
3. deduplicate (stripped text) and cap the kept samples per prompt;
4. write RUN_DIR/scored.jsonl (every sample with its reward: `posttrain data pairs` input),
   RUN_DIR/kept.jsonl (conversational prompt/completion rows, with the row's `images` / `video`),
   RUN_DIR/prompt_accuracy.jsonl (accepted fraction per prompt) and
   RUN_DIR/rl_prompts.jsonl (rows with 0 < accuracy < 1, for the next RL round);
5. SFT on the kept set from `sft_start` (default: the sampled model) in RUN_DIR/sft,
   whose final model becomes RUN_DIR/final.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from posttrain.core.config import ConfigError, EngineConfig, ModelConfig, OptimConfig, RayConfig, Section
from posttrain.core.data import DatasetError, load_rows, prompt_messages, write_jsonl
from posttrain.core.media import has_media
from posttrain.core.models import is_image_text_model, load_processor, load_tokenizer
from posttrain.core.run_dir import FINAL_DIR, KEPT_FILE, PROMPT_ACCURACY_FILE, RL_PROMPTS_FILE, SCORED_FILE, RunDir
from posttrain.phases import sft
from posttrain.phases.pair_eval import reward_scores
from posttrain.phases.sft import DataSource
from posttrain.phases.trl_common import EvalSection, LoraSection, TrainLoop
from rewards.config import RewardConfig, default_reward
from rewards.resolve import uses_services
from rewards.scorer import Scorer
from rollouts.cluster import ray_session
from rollouts.evaluate import encode_rows
from rollouts.factory import make_generator as make_rollout_generator
from rollouts.types import SamplingSpec


class RFTData(Section):
    prompts: str = Field(..., description="Rows (id, prompt, answer) to sample.")
    eval: str | None = Field(None, description="Held-out rows for greedy accuracy before/after.")
    max_prompts: int | None = None


class RFTSampling(Section):
    k: int = Field(8, ge=1, description="Samples per prompt.")
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 32
    seed: int = 0
    prompts_per_call: int = Field(64, ge=1, description="Prompts per generate() call.")
    video_token_budget: int | None = Field(
        None, ge=1, description="Image-text models: visual + marker tokens of one video under SlowFast encoding "
        "(as rollout.video_token_budget in RL); null keeps every frame at its native size.")


class RFTFilter(Section):
    reward: RewardConfig | None = Field(
        default_factory=default_reward, description="Verifier: a sample is kept when its composite reward >= "
        "reward.threshold; null: use reward_model.")
    reward_model: str | None = Field(None, description="RM folder used when reward is null: a sample is kept "
                                                       "when it scores above the row's reference answer.")
    max_per_prompt: int = Field(4, ge=1)
    dedup: bool = True


class RFTSFT(Section):
    start_model: str | None = Field(None, description="Model the kept set retrains (default: model.path).")
    kept_weight: float = Field(1.0, gt=0, description="Weight of the kept set in the mix with `extra`.")
    extra: list[DataSource] = Field(default_factory=list, description="Other SFT sources mixed in (e.g. the "
                                                                      "original SFT data), weighted.")
    mix_rows: int | None = Field(None, description="Rows of the mix (default: sum of the sources).")
    hinted_copies: int = Field(0, ge=0, le=5, description="Hinted copies of the rows with 'hints' (SFT's "
                                                          "data.hinted_copies), so retraining keeps hint reading.")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5))
    train: TrainLoop = Field(default_factory=TrainLoop)
    lora: LoraSection = Field(default_factory=LoraSection)


class SamplingPhase(Section):
    """What a phase that samples a model needs (rft, filter): the model, the generator and where it runs."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    generator: Literal["hf", "vllm"] = Field("hf", description="hf: in-process transformers; vllm: Ray + vLLM pool.")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    sampling: RFTSampling = Field(default_factory=RFTSampling)


class Config(SamplingPhase):
    phase: Literal["rft"] = "rft"
    data: RFTData
    filter: RFTFilter = Field(default_factory=RFTFilter)
    sft: RFTSFT = Field(default_factory=RFTSFT)
    eval: EvalSection = Field(default_factory=EvalSection)


def outputs(cfg: Config, stage_dir: Path) -> dict[str, str | None]:
    """The retrained model; the 0 < accuracy < 1 prompts and per-prompt accuracy (with the model they were
    measured on); every scored sample (pairs for MPO)."""
    return {"model": str(stage_dir / FINAL_DIR), "prompts": str(stage_dir / RL_PROMPTS_FILE),
            "accuracy": str(stage_dir / PROMPT_ACCURACY_FILE), "sampled_model": cfg.model.path,
            "pairs": str(stage_dir / SCORED_FILE)}


def make_generator(cfg: SamplingPhase, model_path: str):
    """The rollout Generator of a sampling phase (rft, filter): in-process HF, or the Ray + vLLM pool."""
    return make_rollout_generator(cfg.generator, model_path, cfg.engine, cfg.ray, device=cfg.model.device,
                                  seed=cfg.sampling.seed, trust_remote_code=cfg.model.trust_remote_code)


def sampling_ray(cfg: SamplingPhase, reward: RewardConfig | None, generator=None):
    """One Ray cluster, with the phase's `ray` settings, from the first rollout to the last reward
    (when the vLLM pool or a reward service needs it): nothing starts Ray with defaults."""
    needs = (generator is None and cfg.generator == "vllm") or uses_services(reward)
    return ray_session(cfg.ray, needs)


def media_processor(model: ModelConfig, rows: list[dict], where: str) -> Any:
    """The processor of an image-text `model` (None for a text model); rows with images or video
    need one, or their media would be dropped and the model would answer a prompt it cannot see."""
    if is_image_text_model(model.path):
        return load_processor(model.path, model.trust_remote_code)
    row = next((r for r in rows if has_media(r)), None)
    if row is not None:
        raise ConfigError(f"{where}: row {row['id']!r} has images or video, but model.path {model.path!r} is not "
                          "an image-text model (its config has no vision_config); sample it with a VLM folder")
    return None


def sample_with(cfg: SamplingPhase, rows: list[dict], generator=None, where: str = "data.prompts"
                ) -> list[tuple[dict, list[Any]]]:
    """`sample` with the phase's generator (built and closed here unless a test passes one)."""
    processor = media_processor(cfg.model, rows, where)
    gen = generator or make_generator(cfg, cfg.model.path)
    try:
        return sample(gen, load_tokenizer(cfg.model.path, cfg.model.trust_remote_code), rows, cfg.sampling,
                      processor)
    finally:
        if generator is None:
            gen.close()


def sample(generator, tokenizer, rows: list[dict], s: RFTSampling, processor: Any = None
           ) -> list[tuple[dict, list[Any]]]:
    """[(row, [Rollout x k])] in row order; with an image-text model's `processor`, media rows are
    sampled with their images (a video SlowFast-encoded within s.video_token_budget)."""
    spec = SamplingSpec(n=s.k, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed)
    out = []
    for i in range(0, len(rows), s.prompts_per_call):
        chunk = rows[i:i + s.prompts_per_call]
        rollouts = generator.generate(encode_rows(tokenizer, chunk, processor, s.video_token_budget), spec, step=0)
        out.extend((r, rollouts[j * s.k:(j + 1) * s.k]) for j, r in enumerate(chunk))
    return out


def _regroup(flat: list, groups) -> list[list]:
    out, i = [], 0
    for _, ros in groups:
        out.append(flat[i:i + len(ros)])
        i += len(ros)
    return out


def verifier_scores(groups, reward: RewardConfig) -> tuple[list[list[float | None]], list[list[bool]]]:
    """(rewards, accepted) per group; a failed reward (None) is never accepted."""
    texts = [ro.text for _, ros in groups for ro in ros]
    samples = [row for row, ros in groups for _ in ros]
    with Scorer.from_config(reward) as scorer:
        rewards = scorer.score(texts, samples).rewards
    return _regroup(rewards, groups), _regroup([r is not None and r >= reward.threshold for r in rewards], groups)


def reward_model_scores(groups, f: RFTFilter, device: str) -> tuple[list[list[float]], list[list[bool]]]:
    """(RM scores, accepted): a sample is accepted when it scores above the row's reference answer."""
    from transformers import AutoModelForSequenceClassification  # transformers: heavy, when a phase runs

    rm = AutoModelForSequenceClassification.from_pretrained(f.reward_model).to(device)
    tok = load_tokenizer(f.reward_model)
    rewards, accepted = [], []
    for row, ros in groups:
        if has_media(row):
            raise ConfigError(f"row {row['id']!r} has images or video: the reward-model filter scores text only; "
                              "set filter.reward (a verifier) for multimodal rows")
        if "answer" not in row:
            raise ConfigError(f"row {row['id']!r} has no 'answer': the reward-model filter compares to it")
        msgs = prompt_messages(row)
        sides = [[{"role": "assistant", "content": str(row["answer"])}]] + \
                [[{"role": "assistant", "content": ro.text}] for ro in ros]
        scores = reward_scores(rm, tok, [msgs] * len(sides), sides)
        rewards.append(scores[1:])
        accepted.append([s > scores[0] for s in scores[1:]])
    return rewards, accepted


def media_fields(row: dict) -> dict:
    """The row's `images` / `video` (absolute paths since load_rows), for rows written elsewhere."""
    return {k: row[k] for k in ("images", "video") if row.get(k) is not None}


def scored_rows(groups, rewards: list[list[float | None]]) -> list[dict]:
    """Every sample with its reward and its row's media: the input of `posttrain data pairs`."""
    return [{"prompt_id": row["id"], "sample_idx": ro.sample_idx, "prompt": row["prompt"], "completion": ro.text,
             "reward": r, **({"answer": row["answer"]} if "answer" in row else {}), **media_fields(row)}
            for (row, ros), rs in zip(groups, rewards) for ro, r in zip(ros, rs)]


def select(groups, accepted: list[list[bool]], f: RFTFilter) -> tuple[list[dict], list[dict]]:
    """(kept rows, per-prompt accuracy rows); dedup by stripped text, capped per prompt."""
    kept, acc = [], []
    for (row, ros), ok in zip(groups, accepted):
        seen: set[str] = set()
        n_kept = 0
        for ro, good in zip(ros, ok):
            text = ro.text.strip()
            if not good or not text or (f.dedup and text in seen) or n_kept >= f.max_per_prompt:
                continue
            seen.add(text)
            n_kept += 1
            kept.append({"id": f"{row['id']}-s{ro.sample_idx}", "prompt_id": row["id"],
                         "prompt": prompt_messages(row),
                         "completion": [{"role": "assistant", "content": ro.text}], **media_fields(row)})
        acc.append({"id": row["id"], "accuracy": sum(ok) / max(len(ok), 1), "n": len(ok), "kept": n_kept})
    return kept, acc


def sft_config(cfg: Config, kept_path: Path, start: str):
    train = [DataSource(path=str(kept_path), weight=cfg.sft.kept_weight), *cfg.sft.extra]
    return sft.Config(
        model=cfg.model.model_copy(update={"path": start, "init": "path"}),
        data=sft.SFTData(train=train, eval=cfg.data.eval, mix_rows=cfg.sft.mix_rows,
                         hinted_copies=cfg.sft.hinted_copies),
        optim=cfg.sft.optim, train=cfg.sft.train, lora=cfg.sft.lora, eval=cfg.eval)


def run(cfg: Config, run_dir: Path, resume: bool = False, generator=None) -> dict:
    """Sample, filter, write the kept set, SFT on it. `generator` overrides cfg.generator (tests)."""
    t0 = time.time()
    run = RunDir(run_dir, "rft")
    run.start(cfg, resume)
    if not cfg.model.path:
        raise ConfigError("field 'model.path' is required: the model to sample from (e.g. an SFT run's final/)")
    rows = load_rows(cfg.data.prompts)[:cfg.data.max_prompts]
    kept_path = run.path / KEPT_FILE
    if not (resume and kept_path.is_file()):
        if cfg.filter.reward is None and not cfg.filter.reward_model:
            raise ConfigError("set filter.reward (a verifier) or filter.reward_model (an RM folder)")
        with sampling_ray(cfg, cfg.filter.reward, generator):
            groups = sample_with(cfg, rows, generator, cfg.data.prompts)
            if cfg.filter.reward is not None:
                rewards, accepted = verifier_scores(groups, cfg.filter.reward)
            else:
                rewards, accepted = reward_model_scores(groups, cfg.filter, cfg.model.device)
        write_jsonl(run.path / SCORED_FILE, scored_rows(groups, rewards))
        kept, acc = select(groups, accepted, cfg.filter)
        write_jsonl(run.path / PROMPT_ACCURACY_FILE, acc)
        if not kept:
            raise DatasetError(f"{cfg.data.prompts}: no sample was accepted (see {run.path}/scored.jsonl); "
                               "raise sampling.k, start from a stronger model or check the verifier")
        by_id = {a["id"]: a["accuracy"] for a in acc}
        write_jsonl(run.path / RL_PROMPTS_FILE, [r for r in rows if 0 < by_id[r["id"]] < 1])
        write_jsonl(kept_path, kept)
        mean_acc = sum(by_id.values()) / len(by_id)
        run.log(0, {"rft/prompts": len(rows), "rft/kept": len(kept), "rft/sample_accuracy": mean_acc,
                    "rft/rl_prompts": sum(0 < a < 1 for a in by_id.values()), "rft/sample_seconds": time.time() - t0})
    s = sft.run(sft_config(cfg, kept_path, cfg.sft.start_model or cfg.model.path), run.path / "sft", resume)
    if s.get("preempted"):  # the retraining stopped at a checkpoint: no final/ here either
        run.write_summary({**s, "phase": "rft"})
        return {**s, "phase": "rft"}
    run.log(s["steps"], {"eval/accuracy_start": s["eval/accuracy_start"], "eval/accuracy": s["eval/accuracy"]})
    shutil.rmtree(run.final, ignore_errors=True)
    (run.path / "sft" / FINAL_DIR).rename(run.final)
    summary = {"phase": "rft", **{k: v for k, v in run.read_metrics()[0].items() if k.startswith("rft/")},
               "sft_steps": s["steps"], "eval/accuracy_start": s["eval/accuracy_start"],
               "eval/accuracy": s["eval/accuracy"], "wall_seconds": round(time.time() - t0, 1),
               "final": str(run.final)}
    run.write_summary(summary)
    return summary
