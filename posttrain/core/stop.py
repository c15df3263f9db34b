"""Stop handling: SIGTERM/SIGINT ask a training loop to checkpoint and exit after the current step."""

from __future__ import annotations

import signal
from typing import Any


class StopFlag:
    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old = {}
