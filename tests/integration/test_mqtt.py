"""Home Assistant over MQTT: the daemon against a real mosquitto, Kamailio and baresip."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from intercom.app import Intercom
from intercom.config import Config
from intercom.phone import PhoneOptions
from tests.integration.door import door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers

BASE = "intercom/frontdoor"


def _config(pbx: Kamailio, broker: Any, **mqtt: Any) -> Config:
    return door_config(pbx, mqtt={"host": broker.host, "port": broker.port, **mqtt})


def _app(config: Config) -> Intercom:
    return Intercom(
        config,
        mqtt_debug=True,
        phone_options=PhoneOptions(local_host="127.0.0.1", any_rtp_port=True),
    )


async def _until(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _payloads(probe: Any, topic: str) -> list[str]:
    return [m.payload.decode() for m in probe.messages(topic)]


def test_online_discovery_and_states_on_connect(
    kamailio: Kamailio, mosquitto: Any, mqtt_probe: Any
) -> None:
    probe = mqtt_probe(mosquitto)
    probe.subscribe("homeassistant/#")
    probe.subscribe(f"{BASE}/#")

    async def scenario() -> None:
        app = _app(_config(kamailio, mosquitto))
        await app.start()
        try:
            await _until(lambda: "ON" in _payloads(probe, f"{BASE}/sip/registered"), 10, "ON")
            assert _payloads(probe, f"{BASE}/status")[-1] == "online"
            assert _payloads(probe, f"{BASE}/call/state")[-1] == "idle"
            # A late subscriber sees what is retained: discovery, status and states.
            late = await asyncio.to_thread(mqtt_probe, mosquitto)
            late.subscribe("homeassistant/#")
            late.subscribe(f"{BASE}/#")
            # Retained messages follow the SUBACK: wait for them rather than race them.
            await asyncio.to_thread(late.wait_for, f"{BASE}/call/state", 3)
            await asyncio.to_thread(late.wait_for, f"{BASE}/status", 3)
            await asyncio.sleep(0.2)
            configs = [m for m in late.messages("homeassistant/#") if m.topic.endswith("/config")]
            assert len(configs) >= 6 and all(m.retain and m.payload for m in configs)
            assert all(m.retain for m in late.messages(f"{BASE}/status"))
            assert [m.payload for m in late.messages(f"{BASE}/call/state")] == [b"idle"]
            doorbell = next(m for m in configs if "/event/" in m.topic)
            body = json.loads(doorbell.payload)
            assert body["device_class"] == "doorbell" and "ring" in body["event_types"]
            assert body["availability"][0]["topic"] == f"{BASE}/status"
        finally:
            await app.stop()
        await asyncio.to_thread(probe.wait_payload, f"{BASE}/status", b"offline", 3)

    asyncio.run(scenario())


def test_ring_command_makes_a_real_call_and_states_follow_in_order(
    kamailio: Kamailio, handset: HandsetFactory, mosquitto: Any, mqtt_probe: Any
) -> None:
    phone = handset("621", answer_delay=0.5)
    probe = mqtt_probe(mosquitto)
    probe.subscribe(f"{BASE}/#")

    async def scenario() -> None:
        app = _app(_config(kamailio, mosquitto))
        await app.start()
        try:
            await _until(lambda: "ON" in _payloads(probe, f"{BASE}/sip/registered"), 10, "ON")
            probe.publish(f"{BASE}/call/ring", "PRESS")
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await _until(lambda: "in_call" in _payloads(probe, f"{BASE}/call/state"), 5, "in_call")
            await asyncio.sleep(0.5)
            probe.publish(f"{BASE}/call/hangup", "PRESS")
            await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5)
            await _until(lambda: "ended" in _payloads(probe, f"{BASE}/call/state"), 5, "ended")
            states = _payloads(probe, f"{BASE}/call/state")
            assert states[-4:] == ["calling", "ringing", "in_call", "ended"], states
            events = [json.loads(p)["event_type"] for p in _payloads(probe, f"{BASE}/event")]
            assert events == ["ring", "answered", "ended"], events
            assert not any(m.retain for m in probe.messages(f"{BASE}/event"))
            last = json.loads(_payloads(probe, f"{BASE}/call/last")[-1])
            assert last["result"] == "answered" and "621" in last["answered_by"]
            assert last["duration"] > 0
        finally:
            await app.stop()

    asyncio.run(scenario())


def test_broker_restart_the_ring_during_the_outage_arrives(
    kamailio: Kamailio, mosquitto: Any, mqtt_probe: Any
) -> None:
    async def scenario() -> None:
        app = _app(
            _config(
                kamailio,
                mosquitto,
            )
        )
        await app.start()
        try:
            await _until(lambda: app.bridge.connected, 5, "connected")
            await asyncio.to_thread(mosquitto.kill)
            await _until(lambda: not app.bridge.connected, 5, "disconnect noticed")
            app.ring(["622"], source="test")  # nobody is registered as 622: 480, no answer
            await asyncio.sleep(1.0)
            await asyncio.to_thread(mosquitto.restart)
            probe = await asyncio.to_thread(mqtt_probe, mosquitto)
            probe.subscribe("homeassistant/#")
            probe.subscribe(f"{BASE}/#")
            loop = asyncio.get_running_loop()
            back = loop.time()
            await _until(lambda: "online" in _payloads(probe, f"{BASE}/status"), 5, "online")
            assert loop.time() - back < 5
            await _until(lambda: probe.messages(f"{BASE}/event"), 5, "the queued ring")
            events = [json.loads(p)["event_type"] for p in _payloads(probe, f"{BASE}/event")]
            assert events[0] == "ring"
            assert probe.messages("homeassistant/#"), "discovery is sent again"
            assert _payloads(probe, f"{BASE}/sip/registered")[-1] == "ON"
        finally:
            await app.stop()

    asyncio.run(scenario())


def test_retained_commands_left_on_the_broker_do_nothing(
    kamailio: Kamailio, mosquitto: Any, mqtt_probe: Any
) -> None:
    probe = mqtt_probe(mosquitto)
    probe.publish(f"{BASE}/call/ring", "PRESS", retain=True)
    probe.publish(f"{BASE}/door/open", "PRESS", retain=True)

    async def scenario() -> None:
        app = _app(_config(kamailio, mosquitto))
        await app.start()
        try:
            await _until(lambda: app.bridge.ignored_retained >= 2, 5, "retained seen")
            await asyncio.sleep(0.5)
            assert app.call is None and app.machine.state == "idle"
            assert not app.phone.agent.calls
        finally:
            await app.stop()

    asyncio.run(scenario())


def test_malformed_ring_payload_is_ignored(
    kamailio: Kamailio, mosquitto: Any, mqtt_probe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    probe = mqtt_probe(mosquitto)

    async def scenario() -> None:
        app = _app(_config(kamailio, mosquitto))
        await app.start()
        try:
            await _until(lambda: app.bridge.connected, 5, "connected")
            probe.publish(f"{BASE}/call/ring", '{"targets": "not a list"}')
            probe.publish(f"{BASE}/call/ring", b"\xff\xfe{")
            await _until(lambda: app.bridge.malformed == 2, 5, "both counted")
            assert app.call is None
        finally:
            await app.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    # Counted both, logged once: the second came within the same window.
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 1
    assert not any(r.exc_info for r in caplog.records)


def test_ring_targets_are_checked_and_foreign_ones_ring_nothing(
    kamailio: Kamailio, handset: HandsetFactory, mosquitto: Any, mqtt_probe: Any
) -> None:
    """CR/LF in a target would write SIP headers of its own into the INVITE; a target outside
    call.targets would dial any number with the door's account. Both ring nothing; a listed
    target still rings."""
    foreign = handset("622", answer="manual")
    listed = handset("621", answer="manual")
    probe = mqtt_probe(mosquitto)

    async def scenario() -> None:
        app = Intercom(
            _config(kamailio, mosquitto),
            phone_options=PhoneOptions(local_host="127.0.0.1", any_rtp_port=True, capture=True),
        )
        await app.start()
        try:
            await _until(lambda: app.bridge.connected and app.phone.registered, 10, "ready")
            probe.publish(f"{BASE}/call/ring", '{"targets": ["622\\r\\nX-Injected: 1"]}')
            probe.publish(f"{BASE}/call/ring", '{"targets": ["622"]}')
            probe.publish(f"{BASE}/call/ring", '{"targets": ["sip:622@127.0.0.1"]}')
            # Commands are taken in order: once 621 rings, the three before it were dealt with
            # (and had one of them rung, a call would be up and 621's ring ignored).
            probe.publish(f"{BASE}/call/ring", '{"targets": ["621"]}')
            await asyncio.to_thread(listed.wait_event, "CALL_INCOMING", 10)
            assert app.call is not None and app.call.targets == ["621"] and app.call.allowed
            invites = [m for d, _t, m in app.phone.wire if d == "sent" and m.startswith(b"INVITE")]
            assert invites and all(m.startswith(b"INVITE sip:621@") for m in invites)
            assert (app.bridge.malformed, app.bridge.refused) == (1, 2)
            app.hangup()
            await _until(lambda: app.call is None, 5, "the call to end")
        finally:
            await app.stop()
        assert not any(b"X-Injected" in m for _d, _t, m in app.phone.wire)
        assert not foreign.find_events("CALL_INCOMING")

    asyncio.run(scenario())


def test_ring_any_target_rings_a_foreign_target_that_cannot_open_the_door(
    kamailio: Kamailio, handset: HandsetFactory, mosquitto: Any, mqtt_probe: Any
) -> None:
    foreign = handset("622", answer="manual")
    probe = mqtt_probe(mosquitto)

    async def scenario() -> None:
        app = _app(_config(kamailio, mosquitto, ring_any_target=True))
        await app.start()
        try:
            await _until(lambda: app.bridge.connected and app.phone.registered, 10, "ready")
            probe.publish(f"{BASE}/call/ring", '{"targets": ["622\\r\\nX: 1"]}')  # still checked
            probe.publish(f"{BASE}/call/ring", '{"targets": ["622"]}')
            await asyncio.to_thread(foreign.wait_event, "CALL_INCOMING", 10)
            assert app.bridge.malformed == 1
            assert app.call is not None and app.call.targets == ["622"]
            assert not app.call.allowed  # DTMF in this call never opens the door
            app.hangup()
            await _until(lambda: app.call is None, 5, "the call to end")
        finally:
            await app.stop()

    asyncio.run(scenario())


def test_wrong_broker_password_is_a_clear_error_and_sip_keeps_serving(
    kamailio: Kamailio, mosquitto_auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        config = _config(kamailio, mosquitto_auth, username="intercom", password="wrong")
        app = _app(config)
        await app.start()
        try:
            await asyncio.sleep(2.0)
            assert not app.bridge.connected
            assert kamailio.registered("door")
        finally:
            await app.stop()

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    broker = f"{mosquitto_auth.host}:{mosquitto_auth.port}"
    assert any(broker in e and "refused" in e for e in errors), errors
    assert not any("wrong" in e for e in errors)  # the password never reaches a log


def test_password_and_tls_brokers(
    kamailio: Kamailio, mosquitto_auth: Any, mosquitto_tls: Any, mqtt_probe: Any
) -> None:
    async def scenario(config: Config) -> None:
        app = _app(config)
        await app.start()
        try:
            await _until(lambda: app.bridge.connected, 5, "connected")
        finally:
            await app.stop()

    asyncio.run(
        scenario(_config(kamailio, mosquitto_auth, username="intercom", password="mqttpass"))
    )
    asyncio.run(
        scenario(_config(kamailio, mosquitto_tls, tls={"ca_file": str(mosquitto_tls.ca_file)}))
    )


def test_home_assistant_restart_gets_discovery_again(
    kamailio: Kamailio, mosquitto: Any, mqtt_probe: Any
) -> None:
    probe = mqtt_probe(mosquitto)

    async def scenario() -> None:
        app = _app(_config(kamailio, mosquitto))
        app_bridge_delay = (0.1, 0.2)
        await app.start()
        app.bridge.rediscovery_delay = app_bridge_delay
        try:
            await _until(lambda: app.bridge.connected, 5, "connected")
            probe.subscribe("homeassistant/+/+/+/config")
            await asyncio.sleep(0.3)
            probe.clear()
            probe.publish("homeassistant/status", "online")
            await _until(lambda: probe.messages("homeassistant/+/+/+/config"), 3, "rediscovery")
        finally:
            await app.stop()

    asyncio.run(scenario())


def test_broker_down_at_start_delays_nothing_else(
    kamailio: Kamailio, handset: HandsetFactory, mosquitto: Any
) -> None:
    phone = handset("621")

    async def scenario() -> None:
        app = _app(_config(kamailio, mosquitto))
        await asyncio.to_thread(mosquitto.stop)  # the broker is down when the door starts
        await app.start()
        try:
            await _until(lambda: app.phone.registered, 5, "SIP registration")
            handle = app.ring(source="test")
            assert handle is not None
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            assert not app.bridge.connected and list(app.bridge.queue)  # the ring is queued
            app.hangup()
            await _until(lambda: app.call is None, 5, "the call to end")
            assert app.ring(source="test") is not None  # and the next press rings again
            app.hangup()
            await _until(lambda: app.call is None, 5, "the call to end")
        finally:
            await app.stop()

    asyncio.run(scenario())
