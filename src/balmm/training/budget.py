"""Wall-clock budgets of training stages (config key ``time_budget``, ``--time-budget``).

Every :class:`~balmm.training.loop.TrainLoop` run inside :func:`stage_budget` checks its
stage's budget at each epoch boundary and stops there once it is spent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar


class StageBudget:
    """A wall-clock budget per training stage (``stage1``, ``kd``, ``stage2``; the
    cross-fitting folds of a stage share it), counted from the stage's first loop. A loop
    whose stage has spent it stops at the end of the current epoch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: dict[str, float] = {}
        self.stopped: list[str] = []  # loops stopped by the budget, in order

    @staticmethod
    def stage(key: str) -> str:
        """``fold2/stage1:mrna`` -> ``stage1``."""
        return key.rsplit("/", 1)[-1].split(":", 1)[0]

    def start(self, key: str) -> None:
        self.started.setdefault(self.stage(key), time.monotonic())

    def spent(self, key: str) -> bool:
        t0 = self.started.setdefault(self.stage(key), time.monotonic())
        if time.monotonic() - t0 < self.seconds:
            return False
        self.stopped.append(key)
        return True


BUDGET: ContextVar[StageBudget | None] = ContextVar("balmm_stage_budget", default=None)


@contextlib.contextmanager
def stage_budget(seconds: float) -> Iterator[StageBudget | None]:
    """Every :class:`TrainLoop` run inside honours ``seconds`` per stage (0: no budget)."""
    if seconds <= 0:
        yield None
        return
    budget = StageBudget(seconds)
    token = BUDGET.set(budget)
    try:
        yield budget
    finally:
        BUDGET.reset(token)
