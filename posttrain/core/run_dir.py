"""The run-directory contract shared by every phase, and every file name a stage leaves
for another (defined here once).

RUN_DIR/metrics.jsonl (one JSON object per line with "phase" and "step"),
RUN_DIR/config.yaml (resolved config), RUN_DIR/summary.json (final figures),
RUN_DIR/checkpoints/ (atomic checkpoints), RUN_DIR/final/ (HF model folder).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from posttrain.core.config import dump_config

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.yaml", "metrics.jsonl", "summary.json"
CHECKPOINTS_DIR, FINAL_DIR, INIT_MODEL_DIR = "checkpoints", "final", "init_model"
# Stage outputs that later stages (and rounds) read.
HINTS_STATE_FILE = "hints_state.json"  # rl: the hint scheduler's state (hints.init_state of a later round)
PROMPT_ACCURACY_FILE = "prompt_accuracy.jsonl"  # rft, filter: {"id", "accuracy", "n"} per prompt
RL_PROMPTS_FILE = "rl_prompts.jsonl"  # rft, filter: rows with 0 < accuracy < 1
SCORED_FILE = "scored.jsonl"  # rft: every sample with its reward (input of `posttrain data pairs`)
KEPT_FILE = "kept.jsonl"  # rft: verified samples as SFT rows
PAIRS_FILE = "pairs.jsonl"  # mpo in a pipeline: pairs built from an rft stage's scored samples


def final_output(cfg: Any, stage_dir: Path) -> dict[str, str | None]:
    """`outputs()` of a phase whose only output is its trained model (RUN_DIR/final)."""
    return {"model": str(Path(stage_dir) / FINAL_DIR)}


def default_run_dir(phase: str) -> Path:
    return Path("runs") / f"{phase}-{time.strftime('%Y%m%d-%H%M%S')}"


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
        atomic_write_text(self.path / CONFIG_FILE, dump_config(cfg))

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"phase": self.phase, "step": step, "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with (self.path / METRICS_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def write_summary(self, summary: dict[str, Any]) -> None:
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
