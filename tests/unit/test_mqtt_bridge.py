"""The MQTT bridge's bounds, without a broker: what a flood of messages costs the door.

The loop-side handlers are called as paho's thread would have them called; the broker-facing
behaviour (connect, publish, reconnect) is tested against a real mosquitto in
tests/integration/test_mqtt.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from intercom.config import MqttConfig
from intercom.mqtt.bridge import LOG_WINDOW, MAX_PENDING, MqttBridge
from intercom.mqtt.commands import MAX_PAYLOAD, CommandError, CommandRefused
from intercom.mqtt.topics import Topics

TOPICS = Topics("intercom/frontdoor")
RING = TOPICS.call_ring


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bridge(on_command: Any = None, clock: Any = None) -> MqttBridge:
    return MqttBridge(
        MqttConfig(host="127.0.0.1"),
        TOPICS,
        client_id="test",
        discovery=list,
        on_command=on_command or (lambda _t, _p: None),
        rediscovery_delay=(30.0, 30.0),
        clock=clock or Clock(),
    )


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "intercom.mqtt.bridge"]


def test_an_oversized_command_is_ignored_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[bytes] = []
    b = bridge(lambda _t, p: seen.append(p))
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            b._on_message(RING, b"x" * (MAX_PAYLOAD + 1), False)
        b._on_message(TOPICS.door_open, b"PRESS" + b" " * MAX_PAYLOAD, False)
        b._on_message(RING, b"x" * MAX_PAYLOAD, False)  # at the cap: handed on
    assert b.oversized == 101 and seen == [b"x" * MAX_PAYLOAD]
    assert len(messages(caplog)) == 2  # once per topic in the window


def test_malformed_commands_are_counted_and_logged_once_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()

    def bad(_topic: str, _payload: bytes) -> None:
        raise CommandError("not PRESS and not JSON: '{'")

    b = bridge(bad, clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            b._on_message(RING, b"{", False)
        clock.now += LOG_WINDOW
        b._on_message(RING, b"{", False)
    assert b.malformed == 1001
    lines = messages(caplog)
    assert len(lines) == 2, lines
    assert lines[1].endswith("(999 more like it not logged)")
    assert not any(r.exc_info for r in caplog.records)


def test_refused_commands_are_counted_apart(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(_topic: str, _payload: bytes) -> None:
        raise CommandRefused("target '0900' is not in call.targets")

    b = bridge(refuse)
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            b._on_message(RING, b'{"targets": ["0900"]}', False)
    assert (b.refused, b.malformed) == (50, 0)
    assert messages(caplog) == [
        f"refused a command on {RING}: target '0900' is not in call.targets"
    ]


def test_a_handler_bug_gets_one_traceback_per_window_not_one_per_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_topic: str, _payload: bytes) -> None:
        raise KeyError("oops")

    b = bridge(broken)
    with caplog.at_level(logging.WARNING):
        for _ in range(200):
            b._on_message(TOPICS.call_hangup, b"PRESS", False)
    records = [r for r in caplog.records if r.name == "intercom.mqtt.bridge"]
    assert b.malformed == 200 and len(records) == 1 and records[0].exc_info


def test_retained_commands_are_logged_once_per_window(caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []
    b = bridge(lambda t, _p: called.append(t))
    with caplog.at_level(logging.WARNING):
        for _ in range(300):
            b._on_message(TOPICS.door_open, b"PRESS", True)
    assert b.ignored_retained == 300 and called == []
    assert len(messages(caplog)) == 1


def test_messages_waiting_for_the_loop_are_bounded() -> None:
    """paho's thread hands each message over; if the loop falls behind a flood, at most
    MAX_PENDING wait and the rest are dropped and counted, not queued without end."""
    taken: list[bytes] = []

    async def main() -> None:
        b = bridge(lambda _t, p: taken.append(p))
        b._loop = asyncio.get_running_loop()
        for n in range(1000):  # the loop runs nothing until we yield: it has "fallen behind"
            message = mqtt.MQTTMessage(topic=RING.encode())
            message.payload = b"%d" % n
            b._paho_message(None, None, message)
        assert b._pending == MAX_PENDING and b.overflowed == 1000 - MAX_PENDING
        for _ in range(5):
            await asyncio.sleep(0)
        assert b._pending == 0
        assert len(taken) == MAX_PENDING and taken[0] == b"0"

    asyncio.run(main())


async def cancel(b: MqttBridge) -> None:
    tasks = list(b._tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)  # the done callbacks


def test_a_flood_of_home_assistant_online_schedules_one_reannouncement() -> None:
    async def main() -> None:
        b = bridge()
        b.connected = True
        for _ in range(500):
            b._on_message("homeassistant/status", b"online", False)
        assert len(b._tasks) == 1
        await cancel(b)
        assert not b._reannounce_pending
        b._on_message("homeassistant/status", b"online", False)
        assert len(b._tasks) == 1  # the next one after it is done may schedule again
        await cancel(b)

    asyncio.run(main())


def test_messages_on_other_topics_cost_nothing(caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []
    b = bridge(lambda t, _p: called.append(t))
    with caplog.at_level(logging.DEBUG):
        for n in range(100):
            b._on_message(f"intercom/frontdoor/x{n}", b"y" * 10_000, False)
    assert called == [] and b.oversized == 0 and messages(caplog) == []
