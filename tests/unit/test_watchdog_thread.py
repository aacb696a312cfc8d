"""The watchdog thread against a real AF_UNIX socket standing in for systemd.

First the thread's rounds one by one, in virtual time (a clock the test moves); then the daemon
itself, with its event loop blocked for longer than the grace: the pings must stop while it is
blocked, and the stall must be logged by the thread, which the blocked loop could never do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intercom.config import parse_config
from intercom.daemon import Daemon
from intercom.systemd import Notifier
from intercom.watchdog import WatchdogPolicy
from intercom.watchdog_thread import WatchdogThread

PERIOD = 30.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out
    finally:
        sock.setblocking(True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the rounds, in virtual time ----------------------------------------------------------------
def test_pings_while_the_loop_beats_and_stops_once_it_does_not(
    systemd_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    policy = WatchdogPolicy(PERIOD, start=clock.now, sip_required=False)
    recovered = []
    thread = WatchdogThread(
        policy, Notifier(), clock=clock, on_recovered=lambda: recovered.append(clock.now)
    )
    for _ in range(4):  # a healthy minute: the loop beats, every round pings
        clock.now += policy.interval
        thread.beat()
        thread.check()
    assert drain(systemd_socket) == [b"WATCHDOG=1"] * 4

    # The loop blocks after its last beat; the thread's rounds go on.
    blocked_at = clock.now
    with caplog.at_level(logging.INFO, logger="intercom.watchdog"):
        for _ in range(6):
            clock.now += policy.interval
            thread.check()
    got = drain(systemd_socket)
    # Pings for the first period (the grace), then none; the stall is said once, in STATUS= too.
    assert got[:2] == [b"WATCHDOG=1"] * 2
    assert b"WATCHDOG=1" not in got[2:]
    assert got[2] == b"STATUS=unhealthy: event loop stalled for 45 s (allowed 30 s)"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["watchdog: not pinging systemd: event loop stalled for 45 s (allowed 30 s)"]

    # It turns again: pings resume, the length of the stall and the recovery are logged.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="intercom.watchdog"):
        thread.beat()
        thread.check()
    assert drain(systemd_socket) == [b"WATCHDOG=1"]
    assert f"after a stall of about {clock.now - blocked_at:.0f} s" in caplog.text
    assert "healthy again" in caplog.text
    assert recovered == [clock.now]


def test_sip_silence_is_judged_by_the_thread_too(systemd_socket: socket.socket) -> None:
    clock = Clock()
    policy = WatchdogPolicy(PERIOD, start=clock.now, sip_grace=60.0)
    thread = WatchdogThread(policy, Notifier(), clock=clock)
    thread.sip_retry_in(100.0)  # a back-off: silence until start + 100 is on purpose
    clock.now += 150.0
    thread.beat()
    thread.check()
    assert drain(systemd_socket) == [b"WATCHDOG=1"]
    clock.now += 11.0
    thread.beat()
    thread.check()
    assert drain(systemd_socket) == [
        b"STATUS=unhealthy: SIP stack silent: no transaction finished for 161 s (allowed 60 s)"
    ]
    thread.sip_ok()
    thread.check()
    assert drain(systemd_socket) == [b"WATCHDOG=1"]


def test_replace_starts_a_fresh_grace(systemd_socket: socket.socket) -> None:
    clock = Clock()
    thread = WatchdogThread(
        WatchdogPolicy(PERIOD, start=clock.now, sip_grace=60.0), Notifier(), clock=clock
    )
    clock.now += 100.0
    thread.beat()
    thread.check()
    assert b"WATCHDOG=1" not in drain(systemd_socket)  # SIP silent for 100 s
    thread.replace(WatchdogPolicy(PERIOD, start=clock.now, sip_grace=60.0))
    thread.check()
    assert drain(systemd_socket) == [b"WATCHDOG=1"]


def test_a_failing_check_ends_the_pings(
    systemd_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(WatchdogPolicy):
        def problem(self, now: float) -> str | None:
            raise RuntimeError("bug")

    thread = WatchdogThread(Broken(0.02, start=time.monotonic(), sip_required=False), Notifier())
    with caplog.at_level(logging.ERROR, logger="intercom.watchdog"):
        thread.start()
        assert thread._thread is not None
        thread._thread.join(5)
        assert not thread._thread.is_alive()
    assert "the check failed; no more pings" in caplog.text
    assert drain(systemd_socket) == []
    thread.stop()
    thread.stop()


# -- the daemon, with its loop really blocked ---------------------------------------------------
class Listener(threading.Thread):
    """systemd's side: every datagram with the time it arrived, read in a thread of its own."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, bytes]] = []
        self.ready = threading.Event()
        self.pinged = threading.Event()
        self.done = False

    def run(self) -> None:
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data))
            if data == b"READY=1":
                self.ready.set()
            if data == b"WATCHDOG=1" and self.ready.is_set():
                self.pinged.set()

    def pings(self, start: float, end: float) -> list[float]:
        return [t for t, data in self.got if data == b"WATCHDOG=1" and start <= t <= end]


WATCHDOG_SEC = 1.0  # the grace for the loop is one period
STALL = 2.5


def test_daemon_stops_pinging_and_says_so_while_its_loop_is_blocked(
    systemd_socket: socket.socket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_SEC * 1_000_000)))
    config = parse_config(
        {
            "sip": {
                "server": "127.0.0.1",
                "port": 9,
                "username": "door",
                "register": False,
                "local_port": 0,
            },
            "audio": {"input": "silence", "output": "null"},
        },
        base_dir=tmp_path,
        env={},
    )
    listener = Listener(systemd_socket)
    listener.start()

    async def scenario() -> tuple[int, float, float]:
        daemon = asyncio.create_task(Daemon(config, None, trace=False, mqtt_debug=False).run())
        assert await asyncio.to_thread(listener.pinged.wait, 10), listener.got
        blocked = time.monotonic()
        time.sleep(STALL)  # the loop is stuck here, as in a blocking DNS lookup
        resumed = time.monotonic()
        await asyncio.sleep(3 * WATCHDOG_SEC)  # the loop turns again: pings come back
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own stop path
        return await daemon, blocked, resumed

    try:
        with caplog.at_level(logging.INFO):
            code, blocked, resumed = asyncio.run(scenario())
    finally:
        listener.done = True
        listener.join(5)
    assert code == 0
    # Within the grace a ping may still go out; after it, none until the loop turns again.
    assert listener.pings(blocked + WATCHDOG_SEC + 0.3, resumed) == []
    assert listener.pings(resumed, resumed + 10)  # and they resume
    stalls = [r for r in caplog.records if "not pinging systemd: event loop stalled" in r.message]
    assert len(stalls) == 1, caplog.text
    assert stalls[0].threadName == "watchdog"  # said while the loop could not speak
    statuses = [data for _, data in listener.got if data.startswith(b"STATUS=unhealthy")]
    assert statuses and b"event loop stalled for" in statuses[0]
    assert "turns again after a stall of about" in caplog.text
