"""A rich progress bar for step loops (plain lines when not on a terminal), and the process's
resident memory for the per-step metrics."""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StepProgress:
    def __init__(self, total: int, start: int = 0, label: str = "rl"):
        self.total, self.start, self.label = total, start, label
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "StepProgress":
        if sys.stderr.isatty():
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, reward: float | None, accuracy: float | None) -> None:
        info = f"reward {reward:.3f}" if reward is not None else ""
        if accuracy is not None:
            info += f"  eval acc {accuracy:.3f}"
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
        elif step == self.total or step % 10 == 0:
            print(f"[{self.label}] step {step}/{self.total} {info}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()


def rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux /proc; elsewhere the peak so far,
    which still shows growth). Logged every step as `mem/rss_mb` so a leak is visible."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)
