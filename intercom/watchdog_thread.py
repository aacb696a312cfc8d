"""The thread that pings systemd's watchdog, apart from the event loop it watches.

A check that runs on the event loop cannot see the loop stall: while the loop is blocked the
check does not run either, and once the loop turns again the check sees it turning. So the loop
only reports, through the cheap thread-safe calls :meth:`WatchdogThread.beat` (the heartbeat, from
a loop timer), :meth:`~WatchdogThread.sip_ok` and :meth:`~WatchdogThread.sip_retry_in`; this
thread wakes every ``policy.interval`` seconds, asks the pure
:class:`~intercom.watchdog.WatchdogPolicy`, and either sends ``WATCHDOG=1`` or, once per
episode, logs why not ("watchdog: not pinging systemd: event loop stalled for 31 s") and sets
``STATUS=``. It reads two timestamps and sends one datagram; it never touches the loop's state, so
it cannot race the call, the SIP stack or the door.

One lock guards the policy; each side holds it for a few attribute updates, never while sending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from intercom.systemd import Notifier
from intercom.watchdog import WatchdogPolicy, seconds

log = logging.getLogger("intercom.watchdog")


class WatchdogThread:
    """Pings ``notifier``'s watchdog while ``policy`` says the daemon works.

    ``clock`` must be the clock the policy was started with (monotonic seconds); tests pass their
    own. ``on_recovered`` runs in this thread when pings resume after a problem (the daemon uses
    it to hand a fresh ``STATUS=`` line to the loop with ``call_soon_threadsafe``).
    """

    def __init__(
        self,
        policy: WatchdogPolicy,
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        self._policy = policy
        self._notifier = notifier
        self._clock = clock
        self._on_recovered = on_recovered
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._problem: str | None = None  # the problem logged, until pings resume
        self._stalled_since: float | None = None  # last heartbeat before a logged loop stall

    # -- what the loop reports (thread-safe, cheap) ---------------------------------------------
    def beat(self) -> None:
        """The event loop ran its heartbeat timer just now."""
        now = self._clock()
        with self._lock:
            self._policy.loop_alive(now)

    def sip_ok(self) -> None:
        """A SIP transaction of ours finished just now."""
        now = self._clock()
        with self._lock:
            self._policy.sip_ok(now)

    def sip_retry_in(self, delay: float) -> None:
        """The SIP stack backs off on purpose and stays silent for ``delay`` seconds."""
        now = self._clock()
        with self._lock:
            self._policy.sip_retry_at(now + delay)

    def replace(self, policy: WatchdogPolicy) -> None:
        """Judge by ``policy`` from now on (after a reload: new SIP settings, fresh grace)."""
        with self._lock:
            self._policy = policy

    # -- the thread ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging and wait for the thread; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def check(self) -> None:
        """One round: ping, or report the problem once. The thread calls it every interval."""
        now = self._clock()
        with self._lock:
            problem = self._policy.problem(now)
            last_loop = self._policy.last_loop
        if problem is None:
            self._notifier.watchdog_ping()
            if self._problem is not None:
                self._recovered(last_loop)
            return
        if self._problem is None:
            log.error("watchdog: not pinging systemd: %s", problem)
            self._notifier.status(f"unhealthy: {problem}")
            self._problem = problem
            if problem.startswith("event loop"):
                self._stalled_since = last_loop

    def _recovered(self, last_loop: float) -> None:
        if self._stalled_since is not None:
            stall = seconds(last_loop - self._stalled_since)
            log.warning("watchdog: the event loop turns again after a stall of about %s s", stall)
        log.warning("watchdog: healthy again (was: %s); pinging systemd", self._problem)
        self._problem = None
        self._stalled_since = None
        if self._on_recovered is not None:
            self._on_recovered()

    def _run(self) -> None:
        while True:
            with self._lock:
                interval = self._policy.interval
            if self._stop.wait(interval):
                return
            try:
                self.check()
            except Exception:
                # A judge that cannot judge must not go on pinging: systemd restarts us.
                log.exception("watchdog: the check failed; no more pings")
                return
