"""At the door, for real: the button rings once, the code opens the strike, the daemon obeys
systemd and its signals. GPIO is gpiozero's MockFactory; the peers are real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpiozero.pins.mock import MockFactory

from intercom.app import Intercom
from intercom.phone import PhoneOptions
from tests.integration.door import door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[2]


def _app(config: Any, factory: MockFactory) -> Intercom:
    options = PhoneOptions(local_host="127.0.0.1", any_rtp_port=True)
    return Intercom(config, phone_options=options, pin_factory=factory)


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_fifty_presses_in_two_seconds_ring_exactly_once(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    phone = handset("621", answer="manual")
    factory = MockFactory()
    config = door_config(
        kamailio, doorbell={"pin": 17, "min_press": 0.01, "bounce_time": 0, "cooldown": 10}
    )

    async def scenario() -> None:
        app = _app(config, factory)
        await app.start()
        try:
            await _until(lambda: app.phone.registered, 5, "registration")
            pin = factory.pin(17)
            for _ in range(50):
                pin.drive_low()  # pull-up: pressed is low
                await asyncio.sleep(0.02)
                pin.drive_high()
                await asyncio.sleep(0.02)
            await asyncio.to_thread(phone.wait_event, "CALL_INCOMING", 5)
            await asyncio.sleep(1.0)
            assert len(phone.find_events("CALL_INCOMING")) == 1
            counts = app.press_filter.counts
            assert (counts.presses, counts.rings) == (50, 1)
            assert counts.suppressed == 49
        finally:
            await app.stop()

    asyncio.run(scenario())


def test_the_code_keyed_on_the_phone_pulses_the_strike(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    phone = handset("621")
    factory = MockFactory()
    config = door_config(
        kamailio, door={"pin": 23, "pulse": 0.6, "dtmf_code": "1234", "max_attempts": 3}
    )

    async def scenario() -> None:
        app = _app(config, factory)
        await app.start()
        relay = factory.pin(23)
        try:
            assert relay.state is False  # off at start
            await _until(lambda: app.phone.registered, 5, "registration")
            app.ring(source="test")
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(phone.send_dtmf, "9999")  # a wrong code first
            await asyncio.sleep(0.3)
            assert relay.state is False
            await asyncio.to_thread(phone.send_dtmf, "1234")
            await _until(lambda: relay.state is True, 3, "the strike to open")
            await _until(lambda: relay.state is False, 2, "the strike to close")
        finally:
            await app.stop()
        assert relay.state is False  # off after close

    asyncio.run(scenario())


def test_wrong_codes_in_a_call_to_the_door_leave_the_doors_own_calls_alone(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    """Someone calls the door as 621 (an allowed caller) and keys a wrong code: that incoming
    caller is locked out. Then the doorbell rings 621, who opens with the right code: the calls
    the door places are counted apart. Before, one lockout for everything refused it."""
    phone = handset("621")
    factory = MockFactory()
    config = door_config(
        kamailio,
        door={"pin": 23, "pulse": 0.3, "dtmf_code": "1234", "max_attempts": 1},
        incoming={"allow": ["621"], "answer_after": 0},
    )

    async def scenario() -> None:
        app = _app(config, factory)
        await app.start()
        relay = factory.pin(23)
        try:
            await _until(lambda: app.phone.registered, 5, "registration")
            await asyncio.to_thread(phone.dial, kamailio.uri("door"))
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(phone.send_dtmf, "9999")
            rules = app.door_rules
            await _until(
                lambda: rules.locked_until(time.monotonic(), "621") is not None, 5, "the lockout"
            )
            await asyncio.to_thread(phone.hangup)
            await _until(lambda: app.call is None, 5, "the call to end")
            app.ring(source="test")
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(phone.send_dtmf, "1234")
            await _until(lambda: relay.state is True, 3, "the strike to open")
            assert rules.locked_until(time.monotonic(), "621") is not None  # still, incoming
        finally:
            await app.stop()

    asyncio.run(scenario())


def _write_config(tmp_path: Path, pbx: Kamailio, **extra: Any) -> Path:
    data = {
        "device_id": "frontdoor",
        "sip": {
            "server": pbx.host,
            "port": pbx.port,
            "username": "door",
            "password": "doorpass",
            "local_port": 0,
            "expires": 60,
        },
        "call": {"targets": ["621"], "ring_timeout": 10},
        "audio": {"input": "tone:1000", "output": "null"},
        "media": {"rtp_port_min": 40000, "rtp_port_max": 60000},
        **extra,
    }
    path = tmp_path / "intercom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    return sock


def _collect(sock: socket.socket, until: float) -> list[bytes]:
    out = []
    while time.monotonic() < until:
        try:
            out.append(sock.recv(4096))
        except TimeoutError:
            continue
    return out


def test_daemon_notifies_systemd_and_stops_on_sigterm_during_a_call(
    kamailio: Kamailio,
    handset: HandsetFactory,
    mosquitto: Any,
    mqtt_probe: Any,
    tmp_path: Path,
) -> None:
    phone = handset("621")
    probe = mqtt_probe(mosquitto)
    probe.subscribe("intercom/frontdoor/status")
    config = _write_config(
        tmp_path, kamailio, mqtt={"host": mosquitto.host, "port": mosquitto.port}
    )
    notify = _notify_socket(tmp_path)
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "intercom", "run", "-c", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = _collect(notify, time.monotonic() + 3)
        assert b"READY=1" in messages, messages
        assert any(m.startswith(b"STATUS=SIP") for m in messages), messages
        assert messages.count(b"WATCHDOG=1") >= 3  # every half period (0.5 s)
        probe.wait_payload("intercom/frontdoor/status", b"online", 5)
        probe.publish("intercom/frontdoor/call/ring", "PRESS")
        phone.wait_event("CALL_ESTABLISHED", 10)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=6) == 0
        assert time.monotonic() - started < 5
        closed = phone.wait_event("CALL_CLOSED", 5)
        assert "peer" in closed.get("param", "")  # the door said BYE
        probe.wait_payload("intercom/frontdoor/status", b"offline", 3)
        assert b"STOPPING=1" in _collect(notify, time.monotonic() + 0.5)
        assert not kamailio.registered("door")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)
        notify.close()


def test_sighup_refuses_a_bad_config_and_takes_a_good_one(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    config = _write_config(tmp_path, kamailio)
    proc = subprocess.Popen(
        [sys.executable, "-m", "intercom", "run", "-c", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        kamailio.wait_registered("door", 10)
        good = config.read_text()
        assert "expires: 60" in good
        config.write_text(good.replace("expires: 60", "expires: 5"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None  # still running on the old configuration
        assert kamailio.registered("door")
        config.write_text(good.replace("ring_timeout: 10", "ring_timeout: 20"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None
        kamailio.wait_registered("door", 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=6) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=5)
    assert "sip.expires" in err and "keeping the running configuration" in err
    assert "reloading" in err


@pytest.mark.parametrize("while_calling", ["ignore", "hangup_and_ring"])
def test_a_press_during_a_call(
    kamailio: Kamailio, handset: HandsetFactory, while_calling: str
) -> None:
    phone = handset("621", answer="manual")
    factory = MockFactory()
    config = door_config(
        kamailio,
        doorbell={"pin": 17, "min_press": 0.01, "cooldown": 0, "while_calling": while_calling},
    )

    async def press(pin: Any) -> None:
        pin.drive_low()
        await asyncio.sleep(0.05)
        pin.drive_high()

    async def scenario() -> None:
        app = _app(config, factory)
        await app.start()
        try:
            await _until(lambda: app.phone.registered, 5, "registration")
            pin = factory.pin(17)
            await press(pin)
            await asyncio.to_thread(phone.wait_event, "CALL_INCOMING", 5)
            first = app.call
            assert first is not None
            await press(pin)  # the handset is still ringing
            await asyncio.sleep(1.5)
            incoming = phone.find_events("CALL_INCOMING")
            if while_calling == "ignore":
                assert len(incoming) == 1 and app.call is first
            else:
                assert len(incoming) == 2, "cancelled, then rang again"
                assert app.call is not None and app.call.handle != first.handle
                assert phone.calls()[0].cancelled
            app.hangup()
            await _until(lambda: app.call is None, 5, "the call to end")
        finally:
            await app.stop()

    asyncio.run(scenario())
