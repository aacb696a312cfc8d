"""Smoke tests of the MQTT test peers: mosquitto and MqttProbe behave as the intercom's MQTT
acceptance tests assume (retained messages, refused logins, TLS with a private CA, a crash and a
restart on the same port that loses everything retained)."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from tests.peers.fixtures import ProbeFactory
from tests.peers.mosquitto import Mosquitto, make_certificates
from tests.peers.mqtt_client import MqttConnectError, MqttProbe

pytestmark = pytest.mark.peers


def first_after_subscribe(probe: MqttProbe, publisher: MqttProbe, topic: str) -> bytes:
    """Subscribe `probe` to `topic` and return the payload of the first message it gets there.

    A non-retained marker is published after the SUBACK; the broker sends retained messages right
    after the SUBACK, so the marker comes first exactly when nothing is retained on `topic`.
    """
    probe.subscribe(topic)
    publisher.publish(topic, b"marker")
    return probe.wait_for(topic, timeout=2).payload


def test_round_trip_and_retained(mosquitto: Mosquitto, mqtt_probe: ProbeFactory) -> None:
    subscriber = mqtt_probe(mosquitto)
    publisher = mqtt_probe(mosquitto)
    subscriber.subscribe("intercom/test/#")

    before = time.monotonic()
    publisher.publish("intercom/test/event", '{"event_type": "ring"}')
    event = subscriber.wait_for("intercom/test/event", timeout=2)
    assert event.json() == {"event_type": "ring"}
    assert (event.retain, event.qos) == (False, 1)
    assert before <= event.time <= time.monotonic()

    publisher.publish("intercom/test/status", "online", retain=True)
    live = subscriber.wait_payload("intercom/test/status", "online", timeout=2)
    # A subscriber that was already there gets a retained message with the retain flag cleared.
    assert live.retain is False

    late = mqtt_probe(mosquitto)
    late.subscribe("intercom/test/#")
    replayed = late.wait_for("intercom/test/status", timeout=2)
    assert (replayed.payload, replayed.retain) == (b"online", True)
    assert late.messages("intercom/test/event") == []  # never retained, so never replayed

    # An empty retained payload deletes the retained message (how discovery removes an entity).
    publisher.publish("intercom/test/status", b"", retain=True)
    assert first_after_subscribe(mqtt_probe(mosquitto), publisher, "intercom/test/status") == (
        b"marker"
    )
    assert mosquitto.log_lines(r"mosquitto version 2\.\S+ running")


def test_auth_refuses_wrong_password(mosquitto_auth: Mosquitto, mqtt_probe: ProbeFactory) -> None:
    with pytest.raises(MqttConnectError) as refused:
        mqtt_probe(mosquitto_auth, username="intercom", password="wrong")
    # paho 2.x reports MQTT 5 reason codes even for 3.1.1: mosquitto's CONNACK 5 arrives as 135.
    assert refused.value.reason_code.is_failure
    assert str(refused.value.reason_code) in ("Not authorized", "Bad user name or password")
    with pytest.raises(MqttConnectError, match=r"Not authorized|Bad user name"):
        mqtt_probe(mosquitto_auth)  # anonymous
    assert mosquitto_auth.log_lines(r"not authori[sz]ed")

    intercom = mqtt_probe(mosquitto_auth, username="intercom")
    ha = mqtt_probe(mosquitto_auth, username="ha", password="hapass")
    assert intercom.connected and ha.connected
    ha.subscribe("intercom/#")
    intercom.publish("intercom/frontdoor/status", "online")
    ha.wait_payload("intercom/frontdoor/status", "online", timeout=2)


def test_tls_verifies_the_broker(
    mosquitto_tls: Mosquitto, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    trusting = mqtt_probe(mosquitto_tls)  # trusts mosquitto_tls.ca_file
    with_cert = mqtt_probe(
        mosquitto_tls, client_cert=mosquitto_tls.client_cert, client_key=mosquitto_tls.client_key
    )
    trusting.subscribe("tls/#")
    with_cert.publish("tls/hello", "over TLS")
    trusting.wait_payload("tls/hello", "over TLS", timeout=2)

    # The server certificate names localhost too, so verifying by host name works.
    with MqttProbe("localhost", mosquitto_tls.port, ca_file=mosquitto_tls.ca_file) as named:
        assert named.connected

    other_ca = make_certificates(tmp_path / "other-ca").ca_file
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        mqtt_probe(mosquitto_tls, ca_file=other_ca)

    # A client that does not speak TLS gets no CONNACK at all: the listener is TLS only.
    plain = MqttProbe(mosquitto_tls.host, mosquitto_tls.port)
    try:
        with pytest.raises(TimeoutError, match="no CONNACK"):
            plain.connect(timeout=1)
    finally:
        plain.close()


def test_kill_and_restart_on_the_same_port(mosquitto: Mosquitto, mqtt_probe: ProbeFactory) -> None:
    watcher = mqtt_probe(mosquitto, reconnect_delay=(0.1, 1.0))
    publisher = mqtt_probe(mosquitto, reconnect_delay=(0.1, 1.0))
    watcher.subscribe("intercom/+/door/open")
    publisher.publish("intercom/frontdoor/status", "online", retain=True)
    port = mosquitto.port

    mosquitto.kill()
    watcher.wait_disconnected(timeout=2)
    assert not mosquitto.running
    time.sleep(0.5)  # let paho fail a reconnect or two against the closed port
    mosquitto.restart()
    restarted = time.monotonic()
    assert mosquitto.port == port

    watcher.wait_connected(count=2, timeout=5)  # also waits for the on_connect SUBACK
    publisher.wait_connected(count=2, timeout=5)
    assert time.monotonic() - restarted < 5
    publisher.publish("intercom/frontdoor/door/open", "PRESS")
    command = watcher.wait_payload("intercom/frontdoor/door/open", "PRESS", timeout=2)
    assert command.retain is False

    # persistence false: the retained status did not survive the crash.
    late = mqtt_probe(mosquitto)
    assert first_after_subscribe(late, publisher, "intercom/frontdoor/status") == b"marker"
    assert len(mosquitto.log_lines(r"mosquitto version 2\.\S+ running")) == 2
