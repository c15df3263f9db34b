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
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import ConfigDict, Field

from posttrain.core.config import ConfigError, ModelConfig, Section, apply_overrides, build_config, read_yaml
from posttrain.core.data import read_jsonl
from posttrain.core.devices import DtypeChoice, resolve_dtype
from posttrain.core.run_dir import INIT_MODEL_DIR, PAIRS_FILE
from posttrain.phases import PHASES
from rollouts.factory import engine_dtype

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
KINDS = [name for name, ph in PHASES.items() if ph.in_pipeline]
Kind = Literal[tuple(KINDS)]  # type: ignore[valid-type]
# a slot's output comes from the slot of the same name, except `start_model`, which is a model
OUTPUT_OF = {"start_model": "model", "experts": "model", "dataset": "sft_data"}
LIST_SLOTS = {"experts"}  # slots that take several stages (`from: {experts: [a, b]}`)
RESERVED = {"data", INIT_MODEL_DIR, "tensorboard"}


class StageSpec(Section):
    model_config = ConfigDict(**Section.model_config, populate_by_name=True)

    kind: Kind
    config: str | None = Field(None, description="Phase YAML (relative to the working directory or the repo).")
    values: dict[str, Any] = Field(default_factory=dict, description="Inline values merged over the YAML.")
    overrides: list[str] = Field(default_factory=list, description="key.sub=value overrides, applied last.")
    from_: dict[str, str | list[str]] = Field(
        default_factory=dict, alias="from",
        description="slot -> earlier stage name (model, start_model, prompts, ...); `experts` takes a list.")

    def source_names(self) -> list[tuple[str, str]]:
        """(slot, stage) pairs, a list-valued slot (experts) giving one pair per stage."""
        return [(slot, s) for slot, v in self.from_.items() for s in ([v] if isinstance(v, str) else v)]


class PipelineData(Section):
    train: str | None = Field(None, description="Task rows (id, prompt, answer, hints?); default: the demo task.")
    eval: str | None = Field(None, description="Held-out rows for each stage's greedy accuracy.")
    demo_train_rows: int = Field(8000, ge=1, description="Demo task size when data.train is not given.")
    demo_eval_rows: int = Field(200, ge=1)
    demo_task: Literal["addition", "experts", "cot", "visual-quadrants"] = Field(
        "addition", description="The demo task written when data.train is not given: addition; experts "
        "(addition and digit reversal in one file, rows tagged by 'task', demo_train_rows of each); or cot "
        "(addition with reference reasoning paths, tasks/cot_addition.py); or visual-quadrants (images, "
        "tasks/visual.py; pair it with model.tiny_vision).")
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
        inputs = PHASES[st.kind].inputs
        for slot, src in st.source_names():
            if (slot in LIST_SLOTS) != isinstance(st.from_[slot], list) and slot in inputs:
                raise ConfigError(f"stage {name!r}: from.{slot} must be "
                                  f"{'a list of stage names' if slot in LIST_SLOTS else 'one stage name'}")
            if slot not in inputs:
                raise ConfigError(f"stage {name!r} ({st.kind}): from.{slot} is not an input of {st.kind}; "
                                  f"use one of {sorted(inputs)}")
            if src not in seen:
                raise ConfigError(f"stage {name!r}: from.{slot}={src!r} must name an earlier stage "
                                  f"(earlier: {list(seen) or 'none'})")
            out = OUTPUT_OF.get(slot, slot)
            if out not in PHASES[seen[src]].outputs:
                producers = sorted(k for k in KINDS if out in PHASES[k].outputs)
                raise ConfigError(f"stage {name!r}: from.{slot}={src!r} is a {seen[src]} stage, which has no "
                                  f"{out} output; use a {'/'.join(producers)} stage")
        seen[name] = st.kind


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


def _put(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def _inject_data(kind: str, raw: dict[str, Any], data: PipelineData) -> None:
    """The pipeline's own data.train / data.eval, into the fields the phase table names."""
    for key, dotted in PHASES[kind].data.items():
        value = getattr(data, key)
        if value:
            _put(raw, dotted, value)


def _wire(kind: str, raw: dict[str, Any], src: dict[str, Resolved], d: Path) -> None:
    """Point the phase config at its sources' outputs (`from:` wins over everything else); the phase
    table says which field each slot fills. Three slots carry more than a path: `accuracy` (the
    file and the model it was measured on), `sft_data` (a source appended to the mix) and `pairs`
    (a pairs file the pipeline builds from the source's scored samples)."""
    for slot, st in src.items():
        field_ = PHASES[kind].inputs[slot]
        if slot in LIST_SLOTS:  # experts: each stage's model, its held-out rows and its task filter
            _put(raw, field_, [{"name": e.name, "model": e.outputs["model"], "eval": _cfg_get(e.cfg, "data.eval"),
                                "task": _cfg_get(e.cfg, "data.task")} for e in st])
            continue
        value = st.outputs[OUTPUT_OF.get(slot, slot)]
        if slot == "accuracy":
            _put(raw, f"{field_}.accuracy", value)
            _put(raw, f"{field_}.model", st.outputs["sampled_model"])
        elif slot == "sft_data":
            if not value:
                raise ConfigError(f"from.sft_data={st.name!r}: that SFT stage has no single data.train file to "
                                  "mix in; list the sources under values.sft.extra instead")
            parent, _, leaf = field_.rpartition(".")
            raw.setdefault(parent, {}).setdefault(leaf, []).append({"path": value, "weight": 1.0})
        elif slot == "pairs":
            _put(raw, field_, str(d / PAIRS_FILE))
        elif slot == "hints" and not value:
            continue  # that rl stage ran without hints: nothing to carry over
        else:
            _put(raw, field_, value)
        if slot == "model":
            _put(raw, "model.init", "path")


def _cfg_get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


def rows_have_hints(path: str | None) -> bool:
    """Whether every answered row of the task file has hints (a file not written yet: the demo task, which has)."""
    if not path or not Path(path).is_file():
        return True
    return all(row.get("hints") for _, row in read_jsonl(path) if isinstance(row, dict) and "answer" in row)


def _hints_need_rows(raw: dict[str, Any]) -> bool:
    h = raw.get("hints") or {}
    return bool(h.get("enabled")) and h.get("source", "dataset") == "dataset"


def stage_hash(kind: str, cfg_json: dict[str, Any], upstream: list[str]) -> str:
    blob = json.dumps({"kind": kind, "config": cfg_json, "upstream": sorted(upstream)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_stage(pipe: Config, name: str, spec: StageSpec, run_dir: Path, done: dict[str, Resolved]) -> Resolved:
    raw = read_yaml(find_file(spec.config)) if spec.config else {}
    phase = PHASES[spec.kind]
    if raw.get("phase", spec.kind) != spec.kind:
        raise ConfigError(f"stage {name!r} is kind {spec.kind} but its config {spec.config} is phase {raw['phase']!r}")
    raw["phase"] = spec.kind
    _inject_data(spec.kind, raw, pipe.data)
    tiny = False
    if "model" not in spec.from_:
        raw["model"] = deep_merge(raw.get("model", {}), pipe.model.model_dump(mode="json", exclude_unset=True))
        if raw["model"].get("init") == "tiny":  # built once by the pipeline, for any kind
            raw["model"].update(init="path", path=str(run_dir / INIT_MODEL_DIR))
            tiny = True
    raw = deep_merge(raw, pipe.defaults.get(spec.kind, {}))
    raw = deep_merge(raw, spec.values)
    apply_overrides(raw, spec.overrides)
    if spec.kind in ("rl", "align") and _hints_need_rows(raw) and not rows_have_hints(pipe.data.train):
        log.warning("stage %s: %s has rows without 'hints'; dataset hints disabled for this stage "
                    "(add 5 hints per row, or set hints.source=teacher)", name, pipe.data.train)
        raw["hints"]["enabled"] = False
    d = run_dir / name
    src = {slot: [done[s] for s in v] if isinstance(v, list) else done[v] for slot, v in spec.from_.items()}
    _wire(spec.kind, raw, src, d)
    cfg = build_config(phase.config_class(), raw, f"stage {name!r} ({spec.config or 'inline'})")
    h = stage_hash(spec.kind, cfg.model_dump(mode="json"), [done[s].hash for _, s in spec.source_names()])
    sources = {slot: v for slot, v in spec.from_.items() if isinstance(v, str)}
    return Resolved(name, spec.kind, d, cfg, h, phase.load().outputs(cfg, d), sources, tiny)


# Kinds whose stage trains the model in `model.dtype` (filter only samples; merge averages weights).
TRAINING_KINDS = ("sft", "rl", "rft", "mpo", "rm", "align")
TRL_KINDS = ("sft", "rft", "mpo", "rm")  # trained by TRL (bf16 = transformers' autocast): `auto` differs on CPU


def stage_precision(kind: str, cfg: Any, cpu_flags: Iterable[str] | None = None) -> dict[str, DtypeChoice]:
    """What a stage computes in: {"trainer": ..., "engine": ...} (the roles it has), `auto` decided as
    the phases decide it, for this machine or for a CPU with `cpu_flags`."""
    out: dict[str, DtypeChoice] = {}
    model = getattr(cfg, "model", None)
    device = getattr(model, "device", "cpu")
    if kind in TRAINING_KINDS and model is not None:
        out["trainer"] = resolve_dtype(model.dtype, device, cpu_flags, autocast_trainer=kind in TRL_KINDS)
    engine = getattr(cfg, "engine", None)
    if engine is not None:
        backend = cfg.rollout.backend if hasattr(cfg, "rollout") else getattr(cfg, "generator", "hf")
        out["engine"] = engine_dtype(backend, engine, device, cpu_flags)
    return out


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
