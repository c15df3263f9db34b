"""The run-directory contract shared by every phase.

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

from posttrain.config import dump_config


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
        self.checkpoints = self.path / "checkpoints"
        self.final = self.path / "final"

    def write_config(self, cfg: BaseModel) -> None:
        atomic_write_text(self.path / "config.yaml", dump_config(cfg))

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"phase": self.phase, "step": step, "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with (self.path / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json",
                          json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a kill
                continue
        return out
