"""The trigger behind a deferred :class:`~evaljobs.sensors.leaderboard.LeaderboardSensor`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class LeaderboardTrigger(BaseTrigger):
    """Re-checks a promotion gate every ``poll_interval`` seconds until it releases, refuses complete results
    (with ``refuse_fast``) or ``timeout`` passes.

    The store is read in a worker thread, so the triggerer's event loop never blocks.
    """

    def __init__(
        self,
        gate: dict[str, Any],
        results_home: str,
        poll_interval: float = 60.0,
        timeout: float = 3600.0,
        refuse_fast: bool = False,
    ):
        super().__init__()
        self.gate, self.results_home = gate, results_home
        self.poll_interval, self.timeout, self.refuse_fast = poll_interval, timeout, refuse_fast

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "gate": self.gate,
                "results_home": self.results_home,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "refuse_fast": self.refuse_fast,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from evaljobs.engine.gate import Gate, evaluate

        gate = Gate(**{**self.gate, "benchmarks": tuple(self.gate.get("benchmarks", ()))})
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                verdict = await asyncio.to_thread(evaluate, gate, self.results_home)
            except Exception as exc:  # report any failure as an event instead of crashing the triggerer
                yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                return
            if verdict.released:
                yield TriggerEvent({"status": "success", "verdict": asdict(verdict)})
                return
            if self.refuse_fast and verdict.decided:
                yield TriggerEvent({"status": "refused", "verdict": asdict(verdict)})
                return
            if time.monotonic() >= deadline:
                yield TriggerEvent({"status": "timeout", "message": f"gate not released: {verdict.reason}"})
                return
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
