"""When to ping systemd's watchdog: only while the daemon really works.

Users of other door projects report daemons that look healthy and are dead inside: the process is
there, the PID file too, but the event loop is stuck or the SIP stack stopped answering. A
watchdog pinged from a timer of its own would keep such a daemon alive for ever. This policy
pings only while two things are seen to work:

* the event loop: a timer on the loop calls :meth:`WatchdogPolicy.loop_alive` (the heartbeat);
  if it stops being called, the loop is blocked;
* the SIP stack: :meth:`WatchdogPolicy.sip_ok` is called whenever a transaction of ours finished
  (a registration refresh or an OPTIONS check answered, or timed out as the stack noticed by
  itself). A PBX that answers 403 or not at all is not a hung daemon, and a restart would not
  bring it back; what counts is that the stack's timers and transport still run.

The decision must not be taken on the loop it judges: a coroutine that asks "did the loop turn?"
right after turning it always hears yes, and a blocked loop cannot log that it is blocked. So the
loop only reports (heartbeat, SIP results), and :class:`intercom.watchdog_thread.WatchdogThread`
asks :meth:`WatchdogPolicy.problem` from a thread of its own, sends ``WATCHDOG=1`` and logs
"event loop stalled for N s" while the loop cannot.

The policy is pure, like the SIP core: time is passed in (the same monotonic clock on both
sides), so tests run in virtual time and the policy never reads a clock. The wiring, in
:mod:`intercom.daemon`::

    policy = WatchdogPolicy(period, start=now, sip_required=config.sip.register,
                            sip_grace=sip_grace_for(period, refresh_interval))
    thread = WatchdogThread(policy, notifier)   # every policy.interval: problem(now) or ping
    # on the loop, every HEARTBEAT s: thread.beat(); on a finished SIP transaction: thread.sip_ok()
    # on a registration failure with retry_in: thread.sip_retry_in(retry_in)

Once pings stop, systemd kills the daemon after ``WatchdogSec=`` and ``Restart=on-failure``
starts a fresh one.
"""

from __future__ import annotations

#: The longest a SIP transaction of ours can take before the stack gives up on it (Timer F,
#: 64 * T1 = 32 s), plus a little slack for the loop.
TRANSACTION_SLACK = 35.0

#: How STATUS= spells each registration state; "off" is for a door that does not register.
_REGISTRATION_TEXT = {
    "registering": "SIP registering",
    "registered": "SIP registered",
    "unregistered": "SIP not registered",
    "failed": "SIP registration failed",
    "off": "SIP registration off",
}


def seconds(value: float) -> str:
    """A duration for a log line: whole seconds, or tenths below ten seconds."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def sip_grace_for(period: float, refresh_interval: float) -> float:
    """The SIP silence to tolerate: two watchdog periods, or one refresh and its time-out.

    Shorter than a refresh plus Timer F, a healthy door waiting for its next refresh would be
    killed; the two periods keep short refresh intervals from making the watchdog jumpy.
    """
    return max(2 * period, refresh_interval + TRANSACTION_SLACK)


class WatchdogPolicy:
    """Decides, from what the daemon reports, whether a watchdog ping is deserved.

    ``period`` is systemd's watchdog period in seconds (``Notifier.watchdog_period()``).
    ``start`` is the time the daemon starts; the loop and SIP count as fine at that moment, so a
    fresh daemon has a whole grace window to register. ``sip_required`` is False when the door
    does not register: then only the event loop matters. ``sip_grace`` is how long the SIP stack
    may stay silent (see :func:`sip_grace_for`); ``loop_grace`` how long the loop may go without
    a heartbeat (one period by default: the heartbeat comes far more often, see
    :data:`intercom.daemon.HEARTBEAT`).
    """

    def __init__(
        self,
        period: float,
        *,
        start: float,
        sip_required: bool = True,
        sip_grace: float | None = None,
        loop_grace: float | None = None,
    ) -> None:
        if period <= 0:
            raise ValueError(f"watchdog period must be positive, not {period}")
        if sip_required and sip_grace is None:
            raise ValueError("sip_grace is needed when sip_required is true (see sip_grace_for)")
        if sip_grace is not None and sip_grace <= 0:
            raise ValueError(f"sip_grace must be positive, not {sip_grace}")
        self.period = period
        self.sip_required = sip_required
        self.sip_grace = sip_grace if sip_grace is not None else 0.0
        self.loop_grace = loop_grace if loop_grace is not None else period
        self._last_loop = start
        self._last_sip = start
        self._retry_at = start

    @property
    def last_loop(self) -> float:
        """When the loop last reported a heartbeat (the start, before the first one)."""
        return self._last_loop

    @property
    def interval(self) -> float:
        """How often to ask and ping: half the period, the margin sd_watchdog_enabled(3) advises."""
        return self.period / 2

    # -- what the daemon reports --------------------------------------------------------------
    def loop_alive(self, now: float) -> None:
        """The event loop ran a timer callback at ``now``."""
        self._last_loop = max(self._last_loop, now)

    def sip_ok(self, now: float) -> None:
        """A SIP transaction of ours finished at ``now``: the stack is alive."""
        self._last_sip = max(self._last_sip, now)

    def sip_retry_at(self, when: float) -> None:
        """The stack backs off and stays silent until ``when`` on purpose (failure back-off).

        Without this, a back-off longer than the grace window (up to 15 minutes after repeated
        403s) would read as a dead stack, and restarts would hammer the PBX that asked us to
        back off.
        """
        self._retry_at = max(self._retry_at, when)

    # -- the decision -------------------------------------------------------------------------
    def problem(self, now: float) -> str | None:
        """Why a ping is not deserved at ``now``, in words for the log and STATUS=, or None."""
        stalled = now - self._last_loop
        if stalled > self.loop_grace:
            return (
                f"event loop stalled for {seconds(stalled)} s "
                f"(allowed {seconds(self.loop_grace)} s)"
            )
        if self.sip_required:
            silent = now - max(self._last_sip, self._retry_at)
            if silent > self.sip_grace:
                since = now - self._last_sip
                return (
                    f"SIP stack silent: no transaction finished for {since:.0f} s "
                    f"(allowed {self.sip_grace:.0f} s)"
                )
        return None

    def should_ping(self, now: float) -> bool:
        """True when the loop beat recently and, if required, the SIP stack did its work."""
        return self.problem(now) is None


def status_line(registration: str, call_state: str) -> str:
    """The STATUS= text, e.g. "SIP registered, call idle": one short line for systemctl status.

    ``registration`` is a registration state (or "off"), ``call_state`` a call state of
    :mod:`intercom.controller`; unknown words are shown as they are rather than hidden.
    """
    sip = _REGISTRATION_TEXT.get(registration, f"SIP {registration}")
    call = call_state.replace("_", " ")
    return " ".join(f"{sip}, call {call}".split())
