"""A virtual-time timer queue for the sans-I/O core.

The core never reads a clock: whoever drives it passes ``now`` in, asks :meth:`Timers.next_deadline`
when to come back, and calls :meth:`Timers.run_due` then. Tests advance ``now`` by hand, so a
32-second SIP timer costs no wall time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

TimerCallback = Callable[[float], None]


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerCallback]] = []
        self._ids = itertools.count(1)
        self._cancelled: set[int] = set()

    def call_at(self, when: float, callback: TimerCallback) -> int:
        """Run ``callback(now)`` once ``run_due`` is given a ``now`` at or after ``when``."""
        handle = next(self._ids)
        heapq.heappush(self._heap, (when, handle, callback))
        return handle

    def cancel(self, handle: int | None) -> None:
        if handle is not None:
            self._cancelled.add(handle)

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._heap)[1])
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer due at ``now``, in deadline order; returns how many fired."""
        fired = 0
        while self._heap and self._heap[0][0] <= now:
            _, handle, callback = heapq.heappop(self._heap)
            if handle in self._cancelled:
                self._cancelled.discard(handle)
                continue
            fired += 1
            callback(now)
        return fired

    def __len__(self) -> int:
        return sum(1 for _, h, _ in self._heap if h not in self._cancelled)
