"""Say it once per window: rate-limited reporting, pure code with the time passed in.

A flood (a thousand ``door/open`` commands, a stream of malformed payloads) must not become a
thousand log lines or MQTT events: the journal would rotate away what matters, and Home
Assistant's history would fill. So the first occurrence of each kind is reported at once, the
rest of its window only counted, and the next report says how many were held back. Nothing is
scheduled: a window ends when the next occurrence arrives after it.

The table of kinds is bounded (``max_keys``); callers use a small fixed set of keys (a refusal
reason, a topic), and should one ever pass more, the oldest quiet kinds are forgotten first.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

__all__ = ["Throttle"]


class Throttle:
    """At most one report per key per ``window`` seconds; the others are counted."""

    __slots__ = ("_seen", "held_back", "max_keys", "window")

    def __init__(self, window: float, *, max_keys: int = 64) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a finite number > 0, not {window!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.window = window
        self.max_keys = max_keys
        #: key -> [start of its window, occurrences held back in it], oldest window first.
        self._seen: dict[Hashable, list[float]] = {}
        self.held_back = 0
        """Occurrences held back since the start, over all keys."""

    def __len__(self) -> int:
        return len(self._seen)

    def report(self, key: Hashable, now: float) -> int | None:
        """None: hold this occurrence back (it is counted). Otherwise report it; the number is
        how many of ``key`` were held back since its last report."""
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            self.held_back += 1
            return None
        held = 0 if entry is None else int(entry[1])
        self._seen.pop(key, None)
        if len(self._seen) >= self.max_keys:
            self._forget(now)
        self._seen[key] = [now, 0]
        return held

    def _forget(self, now: float) -> None:
        """Make room: first the kinds whose window has passed, else the oldest."""
        for key in [k for k, (start, _h) in self._seen.items() if now - start >= self.window]:
            del self._seen[key]
        while len(self._seen) >= self.max_keys:
            del self._seen[next(iter(self._seen))]
