"""The run-directory contract shared by every phase, and every file name a stage leaves
for another (defined here once).

RUN_DIR/metrics.jsonl (one JSON object per line with "phase" and "step"),
RUN_DIR/config.yaml (resolved config), RUN_DIR/summary.json (final figures),
RUN_DIR/checkpoints/ (atomic checkpoints), RUN_DIR/final/ (HF model folder),
RUN_DIR/inputs.json (sha256 of every input file the config names).

A run directory holds one run: the CLI refuses a non-empty one unless `--resume` (continue
it) or `--force` (replace it); a resume refuses a changed config or changed input files,
so the record of what the first steps trained on stays true.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from posttrain.core.config import ConfigError, dump_config
from posttrain.core.data import DatasetError
from posttrain.core.distributed import is_main

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.yaml", "metrics.jsonl", "summary.json"
CHECKPOINTS_DIR, FINAL_DIR, INIT_MODEL_DIR = "checkpoints", "final", "init_model"
# Stage outputs that later stages (and rounds) read.
HINTS_STATE_FILE = "hints_state.json"  # rl: the hint scheduler's state (hints.init_state of a later round)
TEACHER_CACHE_FILE = "hint_cache.jsonl"  # rl with hints.source=teacher: the teacher's hints (default cache)
PROMPT_ACCURACY_FILE = "prompt_accuracy.jsonl"  # rft, filter: {"id", "accuracy", "n"} per prompt
RL_PROMPTS_FILE = "rl_prompts.jsonl"  # rft, filter: rows with 0 < accuracy < 1
SCORED_FILE = "scored.jsonl"  # rft: every sample with its reward (input of `posttrain data pairs`)
KEPT_FILE = "kept.jsonl"  # rft: verified samples as SFT rows
PAIRS_FILE = "pairs.jsonl"  # mpo in a pipeline: pairs built from an rft stage's scored samples
INPUTS_FILE = "inputs.json"  # {config field: {"path", "sha256"}} of the input files a run started with
# Fields a resume may change: how long to run and how to run, never what is trained on or how.
RESUME_MAY_CHANGE = ("train.steps", "train.max_steps", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.save_steps", "train.save_total_limit", "train.logging_steps", "eval.every",
                     "ray.", "rollout.timeout_s", "rollout.sync_timeout_s", "rollout.max_restarts",
                     "engine.start_timeout_s", "trainer.num_workers", "trainer.num_cpus_per_worker",
                     "trainer.num_gpus_per_worker", "trainer.backend", "trainer.timeout_s", "trainer.placement")
# What a start that failed before its first step leaves (bad data, a missing model): no run to lose.
NOT_A_RUN_YET = {CONFIG_FILE, INPUTS_FILE, INIT_MODEL_DIR}
RUN_MARKERS = (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE, "pipeline.yaml")  # a folder holding one is a posttrain run


class RunDirError(ConfigError):
    """A run directory that cannot be used as asked (holds a run, is not writable, ...)."""


def final_output(cfg: Any, stage_dir: Path) -> dict[str, str | None]:
    """`outputs()` of a phase whose only output is its trained model (RUN_DIR/final)."""
    return {"model": str(Path(stage_dir) / FINAL_DIR)}


def default_run_dir(phase: str) -> Path:
    return Path("runs") / f"{phase}-{time.strftime('%Y%m%d-%H%M%S')}"


def writable_dir(path: str | Path, flag: str = "--run-dir") -> Path:
    """Create `path` (and parents) or say in one line why it cannot be: a file in the way,
    no permission, no space."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{flag} {path} is a file, not a directory; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunDirError(f"{flag} {path}: a parent of it is a file, not a directory; choose another {flag}") from None
    except OSError as e:
        raise RunDirError(f"{flag} {path} cannot be created ({e.strerror}); choose a writable {flag}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"{flag} {path} is not writable; choose a writable {flag} or fix its permissions")
    return path


def claim_run_dir(path: str | Path, resume: bool = False, force: bool = False, flag: str = "--run-dir") -> Path:
    """The directory a command may write its run into. A non-empty one is refused unless
    the run is resumed, or `force` replaces it (only a posttrain run directory is deleted)."""
    path = Path(path)
    if path.is_dir() and {p.name for p in path.iterdir()} - NOT_A_RUN_YET and not resume:
        if not force:
            raise RunDirError(f"{flag} {path} is not empty (it holds an earlier run); pass --resume {path} to "
                              f"continue it, --force to replace it, or choose another {flag}")
        if not any((path / m).is_file() for m in RUN_MARKERS):
            raise RunDirError(f"{flag} {path} is not empty and is not a posttrain run directory (no "
                              f"{CONFIG_FILE}); --force deletes only run directories: choose another {flag}")
        shutil.rmtree(path)
    return writable_dir(path, flag)


def refuse_existing(path: str | Path, force: bool, flag: str) -> Path:
    """An output file or folder a command is about to write: refused if it exists, unless `force`."""
    path = Path(path)
    if path.exists() and not force and not (path.is_dir() and not any(path.iterdir())):
        raise RunDirError(f"{flag} {path} already exists; pass --force to replace it, or choose another {flag}")
    if path.is_dir() and not path.is_symlink() and force and any(path.iterdir()):
        shutil.rmtree(path)
    writable_dir(path.parent, flag)
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def flat_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} of a dumped config; a list of sections becomes "a.0.b", ..."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        items = enumerate(data)
    else:
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flat_config(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def input_files(flat: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The config's values that name existing files (datasets, hint states, ...) with their sha256."""
    return {k: {"path": v, "sha256": file_sha256(v)} for k, v in flat.items()
            if isinstance(v, str) and v and Path(v).is_file()}


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if hasattr(value, "item"):  # torch / numpy scalars
        return _jsonable(value.item())
    return value


class RunDir:
    def __init__(self, path: str | Path, phase: str):
        self.path = Path(path)
        self.phase = phase
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / CHECKPOINTS_DIR
        self.final = self.path / FINAL_DIR

    def write_config(self, cfg: BaseModel) -> None:
        if not is_main():  # under torchrun only rank 0 writes the run directory
            return
        atomic_write_text(self.path / CONFIG_FILE, dump_config(cfg))

    def start(self, cfg: BaseModel, resume: bool = False) -> None:
        """Record the config and input files of a new run; on resume, refuse a changed
        config (outside RESUME_MAY_CHANGE) or changed input files instead of overwriting
        the record. config.yaml is rewritten on resume only to record an allowed change."""
        if not is_main():
            return
        new = flat_config(cfg.model_dump(mode="json"))
        saved_path = self.path / CONFIG_FILE
        if not (resume and saved_path.is_file()):
            shutil.rmtree(self.path / INIT_MODEL_DIR, ignore_errors=True)  # never reuse another start's tiny model
            self.write_config(cfg)
            atomic_write_text(self.path / INPUTS_FILE, json.dumps(input_files(new), indent=2) + "\n")
            return
        saved = flat_config(yaml.safe_load(saved_path.read_text()) or {})
        inputs_path = self.path / INPUTS_FILE
        inputs = json.loads(inputs_path.read_text()) if inputs_path.is_file() else {}
        for key, rec in inputs.items():
            now = new.get(key)
            if not (isinstance(now, str) and Path(now).is_file()):
                raise DatasetError(f"refusing to resume {self.path}: {key}={now!r} is not a file; the run started on "
                                   f"{rec['path']} (sha256 {rec['sha256'][:12]}); pass that file")
            digest = file_sha256(now)
            if digest != rec["sha256"]:
                raise DatasetError(f"refusing to resume {self.path}: the dataset changed since the run started "
                                   f"({key}: {rec['path']} sha256 {rec['sha256'][:12]} -> {now} {digest[:12]}); "
                                   "restore the file or start a new run (another --run-dir)")
        changed = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k) and k not in inputs)
        refused = [k for k in changed if not k.startswith(RESUME_MAY_CHANGE)]
        if refused:
            diff = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in refused[:6])
            raise RunDirError(f"refusing to resume {self.path}: the config changed since the run started ({diff}); "
                              f"a resume may change only {', '.join(RESUME_MAY_CHANGE)}; undo the change or "
                              "start a new run (another --run-dir)")
        if changed:
            self.write_config(cfg)

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"phase": self.phase, "step": step, "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        if not is_main():
            return record
        with (self.path / METRICS_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def write_summary(self, summary: dict[str, Any]) -> None:
        if not is_main():
            return
        atomic_write_text(self.path / SUMMARY_FILE,
                          json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS_FILE
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a kill
                continue
        return out
