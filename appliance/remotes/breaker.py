"""A circuit breaker per remote: after repeated failures stop sending it requests, then let one probe
through after a cooldown that doubles each time the probe fails (as LiteLLM's cooldowns do)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Breaker:
    threshold: int = 3  # consecutive failures that open it
    base_cooldown_s: float = 5.0
    max_cooldown_s: float = 300.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    on_open: Callable[[], None] | None = field(default=None, repr=False)  # called each time it opens
    failures: int = 0
    opened_at: float | None = None
    cooldown_s: float = 0.0

    def _now(self) -> float:
        return self.clock()

    @property
    def state(self) -> str:
        """closed (in use), open (cooling down) or half_open (the next request or probe decides)."""
        if self.opened_at is None:
            return "closed"
        return "half_open" if self._now() - self.opened_at >= self.cooldown_s else "open"

    def allows(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        self.failures, self.opened_at, self.cooldown_s = 0, None, 0.0

    def failure(self) -> None:
        self.failures += 1
        if self.state == "open":
            # Still cooling down: a failure now (a probe, a request that was already under way) says
            # nothing new. Only the half-open try failing makes the wait longer; else a remote probed
            # every few seconds would back off to the maximum after one short outage.
            return
        if self.opened_at is not None:  # the half-open try failed: wait longer
            self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
            self.opened_at = self._now()
        elif self.failures >= self.threshold:
            self.cooldown_s = self.base_cooldown_s
            self.opened_at = self._now()
        else:
            return
        if self.on_open is not None:
            self.on_open()

    def retry_in_s(self) -> float | None:
        if self.opened_at is None:
            return None
        return max(0.0, self.opened_at + self.cooldown_s - self._now())
