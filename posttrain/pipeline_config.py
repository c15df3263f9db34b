"""The pipeline's typed config and how each stage's phase config is resolved.

A recipe is an ordered mapping of stages (`stages: {name: {kind, config, values,
overrides, from}}`). A stage's phase config is built from, in order (later wins):
its phase YAML (`config`), the pipeline's data (and, for a stage with no `from.model`,
the pipeline's `model` fields that are set), `defaults[kind]`, the stage's `values`
and `overrides`, and last the `from:` wiring, which names earlier stages' outputs:

    from: {model: rl1, start_model: sft, sft_data: sft, prompts: filter, hints: rl1, accuracy: rft, pairs: rft}

Outputs are paths inside RUN_DIR/<stage> known before the stage runs, so every
stage's resolved config (and its hash) is known up front. A stage's hash covers its
kind, its resolved config and the hashes of the stages it takes inputs from, so a
changed upstream stage changes every stage downstream of it.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field

from posttrain.config import PHASE_CONFIGS, ConfigError, ModelConfig, Section, apply_overrides, build_config, read_yaml

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
KIND_MODULES = {"sft": "posttrain.sft", "mpo": "posttrain.mpo", "rl": "posttrain.rl", "rft": "posttrain.rft",
                "align": "posttrain.align", "filter": "posttrain.filter"}
# the `from:` slots each kind accepts
SLOTS = {"sft": {"model"}, "mpo": {"model", "pairs"}, "rl": {"model", "prompts", "hints"},
         "rft": {"model", "start_model", "prompts", "sft_data"}, "align": {"model", "prompts"},
         "filter": {"model", "prompts", "accuracy"}}
# what a slot needs from its source stage: the kinds that produce it
PRODUCERS = {"model": set(KIND_MODULES), "start_model": set(KIND_MODULES), "prompts": {"rft", "filter"},
             "hints": {"rl"}, "accuracy": {"rft", "filter"}, "pairs": {"rft"}, "sft_data": {"sft"}}
RESERVED = {"data", "init_model", "tensorboard"}
Kind = Literal["sft", "mpo", "rl", "rft", "align", "filter"]


class StageSpec(Section):
    model_config = ConfigDict(**Section.model_config, populate_by_name=True)

    kind: Kind
    config: str | None = Field(None, description="Phase YAML (relative to the working directory or the repo).")
    values: dict[str, Any] = Field(default_factory=dict, description="Inline values merged over the YAML.")
    overrides: list[str] = Field(default_factory=list, description="key.sub=value overrides, applied last.")
    from_: dict[str, str] = Field(default_factory=dict, alias="from",
                                  description="slot -> earlier stage name (model, start_model, prompts, ...).")


class PipelineData(Section):
    train: str | None = Field(None, description="Task rows (id, prompt, answer, hints?); default: the demo task.")
    eval: str | None = Field(None, description="Held-out rows for each stage's greedy accuracy.")
    demo_train_rows: int = Field(8000, ge=1, description="Demo task size when data.train is not given.")
    demo_eval_rows: int = Field(200, ge=1)
    seed: int = 0


class Config(Section):
    phase: Literal["pipeline"] = "pipeline"
    model: ModelConfig = Field(default_factory=ModelConfig, description="Start model of stages with no from.model.")
    data: PipelineData = Field(default_factory=PipelineData)
    defaults: dict[Kind, dict[str, Any]] = Field(default_factory=dict, description="kind -> values for every "
                                                                                   "stage of that kind.")
    stages: dict[str, StageSpec]
    report: bool = Field(True, description="Write RUN_DIR/report.html and TensorBoard events at the end.")


def check_stages(pipe: Config) -> None:
    """Stage names, `from:` slots and sources; errors name the stage and the fix."""
    if not pipe.stages:
        raise ConfigError("no stages; add at least one under 'stages'")
    seen: dict[str, str] = {}
    for name, st in pipe.stages.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in RESERVED:
            raise ConfigError(f"stage name {name!r} must be letters, digits, '-' or '_' and not one of "
                              f"{sorted(RESERVED)}; rename it")
        for slot, src in st.from_.items():
            if slot not in SLOTS[st.kind]:
                raise ConfigError(f"stage {name!r} ({st.kind}): from.{slot} is not an input of {st.kind}; "
                                  f"use one of {sorted(SLOTS[st.kind])}")
            if src not in seen:
                raise ConfigError(f"stage {name!r}: from.{slot}={src!r} must name an earlier stage "
                                  f"(earlier: {list(seen) or 'none'})")
            if seen[src] not in PRODUCERS[slot]:
                raise ConfigError(f"stage {name!r}: from.{slot}={src!r} is a {seen[src]} stage, which has no "
                                  f"{slot} output; use a {'/'.join(sorted(PRODUCERS[slot]))} stage")
        seen[name] = st.kind


PHASE_CONFIGS.add("pipeline", Config)


# ---------------------------------------------------------------------------- resolution


@dataclass
class Resolved:
    name: str
    kind: str
    dir: Path
    cfg: Any  # the phase's typed Config
    hash: str
    outputs: dict[str, str | None]
    sources: dict[str, str] = field(default_factory=dict)
    tiny_init: bool = False  # the pipeline builds RUN_DIR/init_model before this stage

    def config_json(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json")


def find_file(path: str) -> Path:
    """A config path as given, or relative to the repo (works from any working directory)."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    return ROOT / p if (ROOT / p).is_file() else p


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def phase_config_class(kind: str):
    try:
        importlib.import_module(KIND_MODULES[kind])
    except ImportError as e:
        raise ConfigError(f"stage kind {kind!r} needs {KIND_MODULES[kind]}, which cannot be imported ({e})") from None
    return PHASE_CONFIGS.get(kind)


def outputs(kind: str, d: Path, cfg: Any) -> dict[str, str | None]:
    """Paths a stage leaves behind, by slot name."""
    out: dict[str, str | None] = {"model": str(d / "final")}
    if kind == "filter":  # the filter trains nothing: its model is its input model
        out.update(model=cfg.model.path, prompts=str(d / "rl_prompts.jsonl"),
                   accuracy=str(d / "prompt_accuracy.jsonl"), sampled_model=cfg.model.path)
    elif kind == "rft":
        out.update(prompts=str(d / "rl_prompts.jsonl"), accuracy=str(d / "prompt_accuracy.jsonl"),
                   sampled_model=cfg.model.path, pairs=str(d / "scored.jsonl"))
    elif kind == "sft":  # a single training file can be mixed into an RFT stage's retraining
        out["sft_data"] = cfg.data.train if isinstance(cfg.data.train, str) else None
    elif kind == "rl":
        out["hints"] = str(d / "hints_state.json") if cfg.hints.enabled else None
    return out


def _inject_data(kind: str, raw: dict[str, Any], data: PipelineData) -> None:
    d = raw.setdefault("data", {})
    if kind in ("sft", "rl"):
        d.update({k: v for k, v in (("train", data.train), ("eval", data.eval)) if v})
    elif kind == "rft":
        d.update({k: v for k, v in (("prompts", data.train), ("eval", data.eval)) if v})
    elif kind == "filter":
        if data.train:
            d["prompts"] = data.train
    elif kind == "mpo" and data.eval:
        d["eval_rows"] = data.eval
    if not d:
        raw.pop("data")


def _wire(kind: str, raw: dict[str, Any], src: dict[str, Resolved], d: Path) -> None:
    """Point the phase config at its sources' outputs (`from:` wins over everything else)."""
    def put(dotted: str, value: Any) -> None:
        node = raw
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    if "model" in src:
        put("model.path", src["model"].outputs["model"])
        put("model.init", "path")
    if "start_model" in src:
        put("sft.start_model", src["start_model"].outputs["model"])
    if "prompts" in src:
        put({"rl": "data.train", "rft": "data.prompts", "filter": "data.prompts",
             "align": "data.train"}[kind], src["prompts"].outputs["prompts"])
    if "hints" in src and src["hints"].outputs.get("hints"):
        put("hints.init_state", src["hints"].outputs["hints"])
    if "accuracy" in src:
        put("reuse.accuracy", src["accuracy"].outputs["accuracy"])
        put("reuse.model", src["accuracy"].outputs["sampled_model"])
    if "sft_data" in src:  # RFT retrains on its kept set mixed with that SFT stage's data
        path = src["sft_data"].outputs.get("sft_data")
        if not path:
            raise ConfigError(f"from.sft_data={src['sft_data'].name!r}: that SFT stage has no single data.train "
                              "file to mix in; list the sources under values.sft.extra instead")
        raw.setdefault("sft", {}).setdefault("extra", []).append({"path": path, "weight": 1.0})
    if "pairs" in src:
        put("data.train", str(d / "pairs.jsonl"))


def rows_have_hints(path: str | None) -> bool:
    """Whether every answered row of the task file has hints (a file not written yet: the demo task, which has)."""
    if not path or not Path(path).is_file():
        return True
    from posttrain.data import read_jsonl

    return all(row.get("hints") for _, row in read_jsonl(path) if isinstance(row, dict) and "answer" in row)


def _hints_need_rows(raw: dict[str, Any]) -> bool:
    h = raw.get("hints") or {}
    return bool(h.get("enabled")) and h.get("source", "dataset") == "dataset"


def stage_hash(kind: str, cfg_json: dict[str, Any], upstream: list[str]) -> str:
    blob = json.dumps({"kind": kind, "config": cfg_json, "upstream": sorted(upstream)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_stage(pipe: Config, name: str, spec: StageSpec, run_dir: Path, done: dict[str, Resolved]) -> Resolved:
    raw = read_yaml(find_file(spec.config)) if spec.config else {}
    if raw.get("phase", spec.kind) != spec.kind:
        raise ConfigError(f"stage {name!r} is kind {spec.kind} but its config {spec.config} is phase {raw['phase']!r}")
    raw["phase"] = spec.kind
    _inject_data(spec.kind, raw, pipe.data)
    tiny = False
    if "model" not in spec.from_:
        raw["model"] = deep_merge(raw.get("model", {}), pipe.model.model_dump(mode="json", exclude_unset=True))
        if raw["model"].get("init") == "tiny":  # built once by the pipeline, for any kind
            raw["model"].update(init="path", path=str(run_dir / "init_model"))
            tiny = True
    raw = deep_merge(raw, pipe.defaults.get(spec.kind, {}))
    raw = deep_merge(raw, spec.values)
    apply_overrides(raw, spec.overrides)
    if spec.kind in ("rl", "align") and _hints_need_rows(raw) and not rows_have_hints(pipe.data.train):
        log.warning("stage %s: %s has rows without 'hints'; dataset hints disabled for this stage "
                    "(add 5 hints per row, or set hints.source=teacher)", name, pipe.data.train)
        raw["hints"]["enabled"] = False
    d = run_dir / name
    src = {slot: done[s] for slot, s in spec.from_.items()}
    _wire(spec.kind, raw, src, d)
    cfg = build_config(phase_config_class(spec.kind), raw, f"stage {name!r} ({spec.config or 'inline'})")
    h = stage_hash(spec.kind, cfg.model_dump(mode="json"), [s.hash for s in src.values()])
    return Resolved(name, spec.kind, d, cfg, h, outputs(spec.kind, d, cfg), dict(spec.from_), tiny)


def resolve(pipe: Config, run_dir: Path) -> list[Resolved]:
    """Every stage's phase config, in run order (pure: nothing is written)."""
    check_stages(pipe)
    done: dict[str, Resolved] = {}
    for name, spec in pipe.stages.items():
        done[name] = resolve_stage(pipe, name, spec, run_dir, done)
    return list(done.values())


def with_data_defaults(pipe: Config, run_dir: Path) -> Config:
    """The demo task under RUN_DIR/data when data.train is not given."""
    if pipe.data.train:
        return pipe
    data = pipe.data.model_copy(update={"train": str(run_dir / "data" / "train.jsonl"),
                                        "eval": pipe.data.eval or str(run_dir / "data" / "eval.jsonl")})
    return pipe.model_copy(update={"data": data})


def load_pipeline_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The recipe YAML (default: the shipped Keye recipe) plus key=value overrides."""
    path = find_file(str(path)) if path else ROOT / "configs" / "recipes" / "keye.yaml"
    raw = apply_overrides(read_yaml(path), list(overrides))
    source = str(path) + (" + overrides " + " ".join(overrides) if overrides else "")
    cfg = build_config(Config, raw, source)
    check_stages(cfg)
    return cfg


def dump_pipeline_config(pipe: Config) -> str:
    return yaml.safe_dump(pipe.model_dump(mode="json", exclude_unset=True, by_alias=True), sort_keys=False)
