"""A virtual-time timer queue for the sans-I/O core.

The core never reads a clock: whoever drives it passes ``now`` in, asks :meth:`Timers.next_deadline`
when to come back, and calls :meth:`Timers.run_due` then. Tests advance ``now`` by hand, so a
32-second SIP timer costs no wall time.

A door runs for months, and every transaction arms and cancels a handful of timers, so the queue
must not keep what it no longer needs: a handle is forgotten when its timer fires or is
cancelled, cancelling a handle that already fired (or an unknown one) costs nothing and keeps
nothing, and the heap is rebuilt when cancelled entries outnumber the live ones. Its size is
therefore bounded by the timers that are really armed.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

TimerCallback = Callable[[float], None]

#: Rebuild the heap once this many cancelled entries sit in it and they outnumber the live ones.
_COMPACT_AT = 64


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, TimerCallback] = {}
        self._ids = itertools.count(1)

    def call_at(self, when: float, callback: TimerCallback) -> int:
        """Run ``callback(now)`` once ``run_due`` is given a ``now`` at or after ``when``."""
        handle = next(self._ids)
        self._live[handle] = callback
        heapq.heappush(self._heap, (when, handle))
        return handle

    def cancel(self, handle: int | None) -> None:
        """Forget a timer; a handle that fired already, was cancelled or is None is ignored."""
        if handle is None or self._live.pop(handle, None) is None:
            return
        dead = len(self._heap) - len(self._live)
        if dead >= _COMPACT_AT and dead > len(self._live):
            self._heap = [entry for entry in self._heap if entry[1] in self._live]
            heapq.heapify(self._heap)

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][1] not in self._live:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float, on_error: Callable[[Exception], None] | None = None) -> int:
        """Fire every timer due at ``now``, in deadline order; returns how many fired.

        With ``on_error``, a callback that raises is reported there and the others still fire
        (a bug in one call's timer must not stop every other call's); without, it propagates.
        """
        fired = 0
        while self._heap and self._heap[0][0] <= now:
            _, handle = heapq.heappop(self._heap)
            callback = self._live.pop(handle, None)
            if callback is None:
                continue  # cancelled
            fired += 1
            if on_error is None:
                callback(now)
                continue
            try:
                callback(now)
            except Exception as exc:
                on_error(exc)
        return fired

    def __len__(self) -> int:
        """The timers armed and not yet fired or cancelled."""
        return len(self._live)

    @property
    def footprint(self) -> int:
        """Entries held in all (live and cancelled-not-yet-dropped): what memory it costs."""
        return len(self._heap) + len(self._live)
