"""sd_notify against a real AF_UNIX datagram socket standing in for systemd.

Each test binds a socket, points NOTIFY_SOCKET at it and checks the exact bytes that arrive, as
systemd would read them.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intercom import systemd
from intercom.systemd import Notifier

WATCHDOG_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite itself may run under systemd (CI as a service): start from a known environment.
    for name in WATCHDOG_VARS:
        monkeypatch.delenv(name, raising=False)


def _listen(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    sock = _listen(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def _nothing_more(sock: socket.socket) -> None:
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)


# -- the messages, byte for byte ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.watchdog_ping(), b"WATCHDOG=1"),
        (lambda n: n.status("SIP registered, call idle"), b"STATUS=SIP registered, call idle"),
        (lambda n: n.notify("READY=1", "STATUS=up"), b"READY=1\nSTATUS=up"),
    ],
    ids=["ready", "stopping", "watchdog", "status", "notify"],
)
def test_exact_bytes(listener: socket.socket, call, expected: bytes) -> None:
    notifier = Notifier()
    call(notifier)
    assert _received(listener) == expected
    _nothing_more(listener)


def test_status_is_one_line(listener: socket.socket) -> None:
    Notifier().status("SIP failed:\n403 Forbidden\r\n  retry in 60 s\n")
    assert _received(listener) == b"STATUS=SIP failed: 403 Forbidden retry in 60 s"


def test_status_is_utf8(listener: socket.socket) -> None:
    Notifier().status("Tür offen")
    assert _received(listener) == "STATUS=Tür offen".encode()


def test_reloading_carries_monotonic_usec(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "_monotonic_usec", lambda: 123456789)
    Notifier().reloading()
    assert _received(listener) == b"RELOADING=1\nMONOTONIC_USEC=123456789"


def test_monotonic_usec_is_the_monotonic_clock(listener: socket.socket) -> None:
    # systemd compares the value with its own CLOCK_MONOTONIC.
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = _received(listener).split(b"\n")
    assert first == b"RELOADING=1"
    name, _, value = second.partition(b"=")
    assert name == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pi-intercom-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = _listen(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier()
        assert notifier.active
        notifier.ready()
        assert _received(sock) == b"READY=1"
    finally:
        sock.close()


# -- the environment ----------------------------------------------------------------------------
def test_notify_socket_is_removed_from_the_environment(listener: socket.socket) -> None:
    notifier = Notifier()
    assert "NOTIFY_SOCKET" not in os.environ
    assert notifier.active
    # A child started now sees nothing; systemd would otherwise take its messages for ours.
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('NOTIFY_SOCKET'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "None"
    # The notifier keeps the address it read.
    notifier.ready()
    assert _received(listener) == b"READY=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier()
    assert not notifier.active
    assert notifier.watchdog_period() is None
    notifier.ready()
    notifier.status("x")
    notifier.reloading()
    notifier.stopping()
    notifier.watchdog_ping()
    notifier.notify("X=1")
    notifier.close()


@pytest.mark.parametrize("value", ["relative/path", "@", "vsock:2:1234"])
def test_unusable_notify_socket_is_ignored(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    with caplog.at_level(logging.WARNING, logger="intercom.systemd"):
        notifier = Notifier()
    assert not notifier.active
    assert "NOTIFY_SOCKET" not in os.environ
    assert "notifications are off" in caplog.text
    notifier.ready()


# -- the watchdog period ------------------------------------------------------------------------
def test_watchdog_period_from_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert Notifier().watchdog_period() == 30.0
    assert "WATCHDOG_USEC" not in os.environ


def test_watchdog_period_for_our_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2500000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_period() == 2.5
    assert "WATCHDOG_PID" not in os.environ


def test_watchdog_of_another_pid_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_period() is None


@pytest.mark.parametrize(
    ("usec", "pid"), [("abc", None), ("0", None), ("-5", None), ("30000000", "me")]
)
def test_bad_watchdog_values_mean_no_watchdog(
    usec: str, pid: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert Notifier().watchdog_period() is None


def test_watchdog_ping_reaches_systemd(listener: socket.socket, monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = Notifier()
    assert notifier.watchdog_period() == 30.0
    notifier.watchdog_ping()
    assert _received(listener) == b"WATCHDOG=1"


# -- errors -------------------------------------------------------------------------------------
def test_send_errors_are_logged_once_and_never_raised(
    tmp_path: Path, listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier()
    listener.close()
    (tmp_path / "notify").unlink()  # systemd's socket is gone
    with caplog.at_level(logging.INFO, logger="intercom.systemd"):
        notifier.ready()
        notifier.watchdog_ping()
        notifier.status("still here")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot notify" in warnings[0].getMessage()

    # The socket comes back: messages arrive again, and the recovery is logged.
    again = _listen(str(tmp_path / "notify"))
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="intercom.systemd"):
            notifier.watchdog_ping()
        assert _received(again) == b"WATCHDOG=1"
        assert "getting through again" in caplog.text
    finally:
        again.close()


def test_malformed_fields_are_our_bug(listener: socket.socket) -> None:
    notifier = Notifier()
    with pytest.raises(ValueError):
        notifier.notify("READY")
    with pytest.raises(ValueError):
        notifier.notify("STATUS=a\nREADY=1")
    _nothing_more(listener)


def test_malformed_fields_raise_outside_systemd_too() -> None:
    with pytest.raises(ValueError):
        Notifier().notify("READY")


def test_close_is_idempotent(listener: socket.socket) -> None:
    notifier = Notifier()
    notifier.close()
    notifier.close()
    assert not notifier.active
    notifier.ready()
    _nothing_more(listener)
