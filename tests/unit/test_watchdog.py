"""The watchdog policy in virtual time: the daemon's life is replayed tick by tick.

``run`` plays a loop timer every ``policy.interval`` seconds, as the daemon does, and records at
which times a ping would go to systemd.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from intercom.watchdog import TRANSACTION_SLACK, WatchdogPolicy, sip_grace_for, status_line

PERIOD = 30.0  # WatchdogSec=30
REFRESH = 150.0  # expires 300, refreshed at half
GRACE = sip_grace_for(PERIOD, REFRESH)  # 185 s


def make(**kw) -> WatchdogPolicy:
    kw.setdefault("start", 0.0)
    kw.setdefault("sip_grace", GRACE)
    return WatchdogPolicy(PERIOD, **kw)


def run(
    policy: WatchdogPolicy,
    start: float,
    end: float,
    *,
    loop: Callable[[float], bool] = lambda t: True,
    sip_every: float | None = REFRESH,
    sip: Callable[[float], bool] = lambda t: True,
) -> list[float]:
    """Tick from ``start`` to ``end``; returns the times a ping was sent.

    ``loop(t)`` False means the loop is blocked at t (no tick, so no loop_alive); ``sip(t)``
    False means the refresh due at t never finishes.
    """
    pings = []
    t = start
    next_sip = start + sip_every if sip_every else None
    while t <= end:
        if next_sip is not None and t >= next_sip:
            if sip(t):
                policy.sip_ok(t)
            next_sip += sip_every
        if loop(t):
            policy.loop_alive(t)
        if policy.should_ping(t):
            pings.append(t)
        t += policy.interval
    return pings


def test_grace_window() -> None:
    assert sip_grace_for(30, 150) == 150 + TRANSACTION_SLACK
    assert sip_grace_for(30, 5) == 60  # short refreshes: two periods
    assert make().interval == 15.0


def test_pings_while_loop_and_sip_are_fine() -> None:
    policy = make()
    pings = run(policy, 0, 3600)
    assert len(pings) == 3600 / 15 + 1  # every tick, for an hour
    assert policy.problem(3600) is None


def test_a_fresh_daemon_has_the_whole_window_to_register() -> None:
    policy = make(start=1000.0)
    assert policy.should_ping(1000.0)
    policy.loop_alive(1000.0 + GRACE)
    assert policy.should_ping(1000.0 + GRACE)
    policy.loop_alive(1000.0 + GRACE + 1)
    assert not policy.should_ping(1000.0 + GRACE + 1)


def test_stops_when_the_loop_stalls() -> None:
    policy = make()
    # The loop is blocked from t=600 on; the SIP stack (other threads) still reports success.
    pings = run(policy, 0, 700, loop=lambda t: t < 600)
    assert max(pings) <= 600 + PERIOD
    assert not policy.should_ping(700)
    assert policy.problem(700) == "event loop stalled for 115 s (allowed 30 s)"
    assert policy.last_loop == 600 - policy.interval  # the last beat before the block


def test_short_stalls_are_told_in_tenths() -> None:
    policy = WatchdogPolicy(1.0, start=0.0, sip_required=False)
    assert policy.problem(2.54) == "event loop stalled for 2.5 s (allowed 1.0 s)"


def test_a_late_tick_within_one_period_is_tolerated() -> None:
    policy = make()
    policy.loop_alive(100.0)
    assert policy.should_ping(100.0 + PERIOD)
    assert not policy.should_ping(100.0 + PERIOD + 0.1)


def test_stops_when_sip_success_is_older_than_the_grace_window() -> None:
    policy = make()
    # Refreshes at 150, 300, 450 succeed; from 600 on they never finish.
    pings = run(policy, 0, 1000, sip=lambda t: t < 600)
    last_ok = 450.0
    assert max(pings) == pytest.approx(last_ok + GRACE, abs=policy.interval)
    assert all(p <= last_ok + GRACE for p in pings)
    problem = policy.problem(1000)
    assert problem is not None
    assert "SIP stack silent" in problem
    assert "550 s" in problem  # 1000 - 450


def test_resumes_after_sip_recovers() -> None:
    policy = make()
    run(policy, 0, 1000, sip=lambda t: t < 600)
    assert not policy.should_ping(1000)
    policy.sip_ok(1005)
    policy.loop_alive(1005)
    assert policy.should_ping(1005)
    assert policy.problem(1005) is None


def test_resumes_after_the_loop_recovers() -> None:
    policy = make()
    run(policy, 0, 700, loop=lambda t: t < 600)
    assert not policy.should_ping(700)
    policy.loop_alive(701)
    assert policy.should_ping(701)


def test_back_off_is_not_a_dead_stack() -> None:
    # 403s: the registration waits 900 s before trying again; restarting would hammer the PBX.
    policy = make()
    policy.sip_ok(100)
    policy.sip_retry_at(100 + 900)
    pings = run(policy, 100, 1000 + GRACE, sip_every=None)
    assert pings[-1] == pytest.approx(1000 + GRACE, abs=policy.interval)
    # The retry itself never finishes: then the stack is stuck after all.
    assert not policy.should_ping(1000 + GRACE + 1)


def test_an_older_retry_does_not_shorten_the_wait() -> None:
    policy = make()
    policy.sip_retry_at(900)
    policy.sip_retry_at(300)
    policy.loop_alive(900 + GRACE)
    assert policy.should_ping(900 + GRACE)


def test_sip_not_required_only_the_loop_matters() -> None:
    policy = WatchdogPolicy(PERIOD, start=0.0, sip_required=False)
    pings = run(policy, 0, 3600, sip_every=None)
    assert len(pings) == 3600 / 15 + 1
    pings = run(policy, 3600, 4000, sip_every=None, loop=lambda t: t < 3700)
    assert max(pings) <= 3700 + PERIOD
    assert not policy.should_ping(4000)


def test_time_going_backwards_does_not_undo_a_report() -> None:
    policy = make()
    policy.sip_ok(500)
    policy.sip_ok(400)
    policy.loop_alive(500 + GRACE)
    assert policy.should_ping(500 + GRACE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period": 0.0},
        {"period": -1.0},
        {"sip_grace": None},
        {"sip_grace": 0.0},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    args = {"period": PERIOD, "start": 0.0, "sip_grace": GRACE, **kwargs}
    period = args.pop("period")
    with pytest.raises(ValueError):
        WatchdogPolicy(period, **args)


@pytest.mark.parametrize(
    ("registration", "call", "line"),
    [
        ("registered", "idle", "SIP registered, call idle"),
        ("registering", "calling", "SIP registering, call calling"),
        ("failed", "in_call", "SIP registration failed, call in call"),
        ("unregistered", "ended", "SIP not registered, call ended"),
        ("off", "ringing", "SIP registration off, call ringing"),
        ("weird\nstate", "idle", "SIP weird state, call idle"),
    ],
)
def test_status_line(registration: str, call: str, line: str) -> None:
    assert status_line(registration, call) == line
