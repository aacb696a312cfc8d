"""Log lines that a flood cannot multiply: one per kind of problem per interval.

A stranger can send the door thousands of bad datagrams a second. Each must be counted and
dropped, but a log line per datagram would fill the journal (and the SD card) and cost more CPU
than the datagram itself. :class:`LogLimiter` writes the first line of each kind, holds back the
rest for ``interval`` seconds, and adds to the next line how many it held back, so nothing is
hidden and nothing is repeated. The counting is :class:`~intercom.throttle.Throttle`'s; the time
is passed in, like everywhere in the sans-I/O core.
"""

from __future__ import annotations

import logging

from intercom.throttle import Throttle

__all__ = ["LogLimiter"]


class LogLimiter:
    """Rate-limits the lines of ``logger`` by a key naming the kind of problem (bounded)."""

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, *, max_keys: int = 64
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._throttle = Throttle(interval, max_keys=max_keys)

    @property
    def held_back(self) -> int:
        """Lines not written since the start, over all kinds."""
        return self._throttle.held_back

    def log(self, level: int, key: str, now: float, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line of ``key`` went out less than ``interval`` ago.

        Returns whether the line was written.
        """
        held = self._throttle.report(key, now)
        if held is None:
            return False
        if held:
            msg = f"{msg} (and {held} more like it in the last {self.interval:.0f} s)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: str, now: float, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, now, msg, *args)

    def info(self, key: str, now: float, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, now, msg, *args)
