"""Stop handling: SIGTERM/SIGINT ask a training loop to checkpoint and exit after the
current step (a second signal stops at once).

A run stopped by a signal is *preempted*: it leaves a checkpoint and `summary.json` with
`"preempted": true`, writes no `final/`, and the CLI exits with EXIT_PREEMPTED so a
scheduler never counts it as a success; `--resume RUN_DIR` continues it.
"""

from __future__ import annotations

import signal
from typing import Any

EXIT_PREEMPTED = 3  # the documented exit code of a run stopped by SIGTERM/SIGINT after its checkpoint


class StopFlag:
    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None  # the signal that asked to stop; None for a stop asked in code
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # asked twice: do not wait for the step to end
            self.restore()
            raise KeyboardInterrupt(f"signal {signum} received twice")
        self.requested, self.signal = True, signum

    @property
    def preempted(self) -> bool:
        return self.signal is not None

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old = {}
