"""The budget rule's forecast, checked against the run it planned.

`--size auto` plans with a speed timed in a few steps before the run (lm/training/speed.py). A
busy machine, a warmer one, or evaluations heavier than planned make the run go at another
speed, and then the plan (how many epochs, and the dropout for that many) was made for a run
that is not happening. So once, after the first tenth of the budget or its first minute,
whichever comes first, the loop compares the speed so far with the forecast. When they differ by
more than MARGIN it re-plans the epochs and the dropout for the speed measured, and says so in
one line. The learning-rate schedule needs no re-plan: with a time budget it already follows
the clock (RunLength.fraction_done). The size, the window and the optimizer stay: changing them
mid-run would throw away what the run has learned.
"""
from __future__ import annotations

from dataclasses import dataclass

from .presets import Plan

MARGIN = 0.2  # a forecast within 20 % of the measured speed stands
CHECK_AFTER_S = 60.0  # check after the first minute…
CHECK_AFTER_SHARE = 0.1  # …or the first tenth of the budget, whichever comes first


@dataclass
class Forecast:
    """The plan a timed run started with, and the one check of it."""

    plan: Plan
    max_time: float  # seconds
    preset_dropout: float | None  # the size's own dropout; None when --dropout was given
    checked: bool = False

    @property
    def check_at(self) -> float:
        """Seconds into the run when the forecast is checked."""
        return min(CHECK_AFTER_S, CHECK_AFTER_SHARE * self.max_time)

    def check(self, elapsed: float, tokens: int) -> Plan | None:
        """The plan re-made for the speed so far, when it is time to check and the forecast is off
        by more than MARGIN; else None. Checks once."""
        if self.checked or elapsed < self.check_at or elapsed <= 0:
            return None
        self.checked = True
        measured = tokens / elapsed
        if abs(measured / self.plan.tokens_per_s - 1) <= MARGIN:
            return None
        return self.plan.at_speed(measured, self.max_time)

    def dropout(self, plan: Plan, current: float) -> float:
        """The dropout the re-made plan calls for (the current one when --dropout was given)."""
        return current if self.preset_dropout is None else plan.dropout(self.preset_dropout)
