"""Typed configuration: pydantic models are the one source of truth.

YAML files only set values; `key.sub=value` arguments override them; validation
errors name the field and say the fix. Each phase defines its top-level model (with a
`phase` literal) from the shared sections below; the phase table (posttrain.phases) maps
phase names to those models.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

C = TypeVar("C", bound="Section")


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (field, problem, fix)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# ---------------------------------------------------------------------------- shared sections


class ModelConfig(Section):
    path: str | None = Field(None, description="HF model folder or hub id (hub needs network).")
    init: Literal["path", "tiny"] = Field(
        "path", description="'tiny' builds a tiny model whose tokenizer is trained on data.train."
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Trainer compute dtype; bfloat16 = bf16 autocast with fp32 master weights; auto = "
        "bfloat16 on CUDA and AMX CPUs, else float32 (docs/precision.md).")
    device: str = Field("cpu", description="torch device of the trainer: cpu, cuda, cuda:1, auto.")
    trust_remote_code: bool = False
    tiny_hidden: int = 128
    tiny_layers: int = 4
    tiny_heads: int = 4
    tiny_head_dim: int = 32
    tiny_vocab: int = 512
    tiny_kv_heads: int | None = Field(None, ge=1, description="Grouped-query attention: KV heads (default tiny_heads).")
    tiny_intermediate: int | None = Field(None, ge=1, description="MLP width (default 4 x tiny_hidden).")
    tiny_embedding_rows: int | None = Field(
        None, ge=1, description="Embedding rows (default the trained tokenizer's size); a real model's vocabulary "
        "size gives its real parameter count (configs/scale/), the tokenizer uses the first rows.")
    tiny_vision: bool = Field(False, description="With init: tiny, an image-text model (Idefics3) and its "
                                                 "processor instead of a Qwen2 LM (docs/multimodal.md).")


class DataConfig(Section):
    train: str | None = Field(None, description="JSONL of dataset rows (id, prompt, answer, hints).")
    eval: str | None = Field(None, description="Held-out JSONL for greedy evaluation.")
    shuffle: bool = True
    seed: int = 0
    max_eval_rows: int | None = None


class RayConfig(Section):
    address: str | None = Field(
        None, description="None starts a local cluster for the command; 'auto' joins a running one."
    )
    num_cpus: int | None = Field(None, description="CPUs of the local cluster (default: all).")
    namespace: str = "posttrain"
    worker_niceness: int = Field(
        0, ge=-20, le=19, description="Local cluster only: nice value of Ray's workers (engines, trainer workers). "
        "Ray's default, 15, makes them yield the CPU to every other process.")


class EngineConfig(Section):
    """One inference engine (vLLM) and where it runs."""

    num_actors: int = Field(1, ge=1)
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    tensor_parallel_size: int = 1
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Engine dtype; auto = bfloat16 on CUDA and AMX CPUs, else float32 (docs/precision.md).")
    enforce_eager: bool = True
    gpu_memory_utilization: float = 0.5
    kv_cache_gib: int = Field(1, description="VLLM_CPU_KVCACHE_SPACE on CPU engines.")
    cpu_threads: str | None = Field(
        "all", description="CPU engines: cores to bind OpenMP to ('all', '0-1', or null for vLLM's default)."
    )
    max_model_len: int = 512
    chunked_prefill: bool | None = Field(
        None, description="None: off on CPU (seeded sampling cannot rewind CPU generators), on for GPU.")
    max_num_batched_tokens: int | None = Field(None, description="Engine token budget per step (default 8192 on CPU).")
    max_num_seqs: int | None = Field(
        None, ge=1, description="Sequences decoded together (vLLM's default is 256 on CPU); set it to the "
        "rollout batch per engine so one step's samples decode in one wave.")
    placement: Literal["pack", "spread", "strict_spread"] = "pack"
    start_timeout_s: float = 300.0
    max_images_per_prompt: int = Field(
        0, ge=0, description="Image-text models: images one prompt may carry (video frames count as images); "
        "0 leaves vLLM's default.")


class OptimConfig(Section):
    lr: float = Field(1e-5, ge=0.0, allow_inf_nan=False, description="Learning rate (>= 0).")
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    scheduler: Literal["constant", "linear", "cosine"] = "constant"

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("Adam betas must each be in [0, 1), e.g. optim.betas=[0.9,0.999]")
        return v


# ---------------------------------------------------------------------------- loading

def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML scalars/lists."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return data


def _field_names(cls: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = cls.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        else:
            return []
    return list(cls.model_fields)


def format_validation_error(err: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            known = _field_names(cls, loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else (
                f"known fields here: {', '.join(known)}.")
            lines.append(f"  - field '{dotted}' is not a known field; {hint} Remove or rename it.")
        elif e["type"] == "missing":
            lines.append(f"  - field '{dotted}' is required; set it in the YAML or pass {dotted}=VALUE.")
        else:
            got = e.get("input")
            lines.append(f"  - field '{dotted}': {e['msg']} (got {got!r}); fix the value, e.g. {dotted}=VALUE.")
    return "\n".join(lines)


def build_config(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, source)) from None


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> C:
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides)
    source = f"{path}" if path else "command line"
    if overrides:
        source += " + overrides " + " ".join(overrides)
    return build_config(cls, data, source)


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
