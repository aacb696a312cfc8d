"""Log lines that a flood cannot multiply: one per kind of problem per interval.

A stranger can send the door thousands of bad datagrams a second. Each must be counted and
dropped, but a log line per datagram would fill the journal (and the SD card) and cost more CPU
than the datagram itself. :class:`LogLimiter` lets the first line of each kind through, holds back
the rest for ``interval`` seconds, and adds to the next line how many it held back, so nothing is
hidden and nothing is repeated. The time is passed in, like everywhere in the sans-I/O core.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

__all__ = ["LogLimiter"]


class LogLimiter:
    """Rate-limits the lines of ``logger`` by a key naming the kind of problem.

    The table of keys is bounded (``max_keys``; the oldest kind is forgotten first), so even
    keys made from hostile input cannot grow it.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, *, max_keys: int = 64
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        # key -> (time of the last line let through, lines held back since)
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def log(self, level: int, key: str, now: float, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line of ``key`` went out less than ``interval`` ago.

        Returns whether the line was written.
        """
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            self._seen[key] = (entry[0], entry[1] + 1)
            return False
        held = entry[1] if entry is not None else 0
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        if held:
            msg = f"{msg} (and {held} more like it in the last {self.interval:.0f} s)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: str, now: float, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, now, msg, *args)

    def info(self, key: str, now: float, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, now, msg, *args)
