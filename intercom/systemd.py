"""Talking to systemd: readiness, status, reload, stop and the watchdog (``sd_notify(3)``).

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``NOTIFY_SOCKET``; writing it here takes twenty lines and spares the Pi a libsystemd binding.

The environment is read once, when the :class:`Notifier` is built, and ``NOTIFY_SOCKET``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are then removed from it: a child process (a hook script,
``aplay``) must not inherit them, or systemd would take its messages for ours and, with
``NotifyAccess=main``, log a complaint for each one.

Outside systemd (a terminal, the tests, a container) there is no ``NOTIFY_SOCKET`` and every
method does nothing, so callers never need to ask whether they run under systemd. A notification
that cannot be sent is logged once and dropped: the intercom must keep ringing doors even when
systemd's socket has gone away.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

_ENV_SOCKET = "NOTIFY_SOCKET"
_ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
_ENV_WATCHDOG_PID = "WATCHDOG_PID"


def _monotonic_usec() -> int:
    # CLOCK_MONOTONIC is what systemd compares MONOTONIC_USEC= against; Python's monotonic clock
    # is the same clock on Linux.
    return time.monotonic_ns() // 1000


def _address(value: str) -> str | bytes | None:
    """The socket address for a ``NOTIFY_SOCKET`` value, or None when we cannot use it."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # Abstract namespace: the name starts with a NUL byte instead of the '@'.
        return b"\0" + value[1:].encode()
    # vsock: addresses (systemd 254+, for VMs) and garbage: nothing a Pi's systemd hands out.
    return None


def _watchdog_period(usec: str | None, pid: str | None) -> float | None:
    if usec is None:
        return None
    try:
        micros = int(usec)
    except ValueError:
        log.warning("systemd: ignoring %s=%r, not an integer", _ENV_WATCHDOG_USEC, usec)
        return None
    if micros <= 0:
        return None
    if pid is not None:
        try:
            owner = int(pid)
        except ValueError:
            log.warning(
                "systemd: ignoring the watchdog, %s=%r is not a pid", _ENV_WATCHDOG_PID, pid
            )
            return None
        if owner != os.getpid():
            # The watchdog belongs to another process (we were started by the service's main
            # process, e.g. a wrapper): pinging for it would hide that process hanging.
            return None
    return micros / 1_000_000


class Notifier:
    """sd_notify for one process: build it once, early, and keep it for the process's life.

    ``active`` says whether systemd listens; every method is safe to call either way.
    """

    def __init__(self) -> None:
        value = os.environ.pop(_ENV_SOCKET, None)
        usec = os.environ.pop(_ENV_WATCHDOG_USEC, None)
        pid = os.environ.pop(_ENV_WATCHDOG_PID, None)
        self._watchdog_period = _watchdog_period(usec, pid)
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        self._failing = False  # a send failed and was logged; quiet until one succeeds again
        if not value:
            return
        self._address = _address(value)
        if self._address is None:
            log.warning("systemd: cannot use %s=%r; notifications are off", _ENV_SOCKET, value)
            return
        # Non-blocking: if systemd's queue is full we drop a message rather than stall the
        # event loop that rings the door (a missed ping is made up by the next one).
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )

    @property
    def active(self) -> bool:
        """True when a notification socket was handed to us, i.e. we run under systemd."""
        return self._sock is not None

    # -- the messages ---------------------------------------------------------------------------
    def ready(self) -> None:
        """Start-up is done: with ``Type=notify``, ``systemctl start`` returns only now."""
        self.notify("READY=1")

    def status(self, text: str) -> None:
        """Set the line ``systemctl status`` shows; line breaks become spaces."""
        self.notify("STATUS=" + " ".join(text.split()))

    def stopping(self) -> None:
        """We are shutting down on purpose, so systemd does not count the exit as a crash."""
        self.notify("STOPPING=1")

    def reloading(self) -> None:
        """A reload (SIGHUP) starts; send :meth:`ready` when the new configuration is in force.

        systemd 253 and later drop a RELOADING=1 that lacks MONOTONIC_USEC=, so it is always
        sent; older versions ignore the extra field.
        """
        self.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}")

    def watchdog_ping(self) -> None:
        """Tell systemd we are alive; needed at least once per :meth:`watchdog_period`."""
        self.notify("WATCHDOG=1")

    def watchdog_period(self) -> float | None:
        """Seconds within which systemd wants a ping (``WatchdogSec=``), or None without one.

        Pinging at half this period is the usual margin.
        """
        return self._watchdog_period

    def notify(self, *fields: str) -> None:
        """Send ``KEY=VALUE`` fields in one datagram.

        A field without ``=`` or with a line break is a bug on our side (it would forge another
        assignment) and raises ValueError, even outside systemd so that tests catch it.
        """
        for field in fields:
            if "=" not in field or "\n" in field:
                raise ValueError(f"not a single KEY=VALUE notification field: {field!r}")
        if self._sock is None or self._address is None or not fields:
            return
        data = "\n".join(fields).encode()
        try:
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("systemd: cannot notify (%s); further failures are not logged", exc)
                self._failing = True
            return
        if self._failing:
            log.info("systemd: notifications are getting through again")
            self._failing = False

    def close(self) -> None:
        """Close the socket; later calls do nothing. Safe to call twice."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
