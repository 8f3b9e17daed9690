"""What leaves a run: the events a `Progress` receives, and the `TrainResult` it returns.

Imports no torch, so the CLI's progress displays can subclass `Progress` without loading it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Stop


class Progress:
    """Receives training events. This base class shows nothing: it is the quiet progress."""

    def start(self, info: dict) -> None: ...

    def step(self, stats: dict) -> None: ...

    def evaluated(self, record: dict) -> None: ...

    def message(self, text: str) -> None: ...

    def end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    """What a run produced and why it stopped."""

    checkpoint: Path
    step: int
    epoch: int
    elapsed: float
    stop_reason: Stop
    best: dict  # metrics of the saved (best) weights
    last: dict  # metrics of the last evaluation
    tokens_per_s: float

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == Stop.INTERRUPTED
