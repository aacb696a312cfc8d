"""A small synchronous MQTT client for tests: it watches topics and publishes like Home Assistant.

The intercom's MQTT code is tested against a real broker, and something has to stand on the other
side: see what the intercom publishes (retained or not, in which order, how soon) and press its
buttons. paho-mqtt's own API is callback-driven; tests want "wait until this arrives" with a
timeout, so `MqttProbe` runs paho's network thread (`loop_start()`) and collects everything under a
condition variable. It reconnects by itself (paho's automatic reconnect) and subscribes again
from its on_connect callback, as a well-behaved client must after a broker restart.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: What `wait_for` accepts: a topic filter (MQTT wildcards allowed) or a predicate on a message.
Match = str | Callable[["Msg"], bool]


@dataclass(frozen=True)
class Msg:
    """One message as the probe received it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    #: time.monotonic() when paho handed it over; compare with other probes' times or your own.
    time: float

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (MQTT payloads of the intercom are text or JSON)."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload parsed as JSON (discovery payloads, doorbell events)."""
        return json.loads(self.payload)


class MqttError(RuntimeError):
    """paho refused a request (not connected, queue full, ...) or the broker rejected it."""


class MqttConnectError(ConnectionError):
    """The broker answered CONNECT with a failure; `reason_code` is paho's ReasonCode.

    paho 2.x turns MQTT 3.1.1 CONNACK return codes into MQTT 5 reason codes, so a refused login
    has `reason_code.value == 135` and `str(reason_code) == "Not authorized"`, never the 5 of the
    3.1.1 wire format.
    """

    def __init__(self, reason_code: ReasonCode) -> None:
        super().__init__(f"broker refused the connection: {reason_code}")
        self.reason_code = reason_code


def _matches(match: Match, msg: Msg) -> bool:
    if isinstance(match, str):
        return mqtt.topic_matches_sub(match, msg.topic)
    return match(msg)


class MqttProbe:
    """A synchronous MQTT test client on paho-mqtt 2.x with its own network thread.

    `connect()` returns once the broker accepted the CONNECT (or raises); `subscribe()` once the
    SUBACK is in; `publish()` once QoS 1 is acknowledged. Every message is kept (until `clear()`)
    with its retain flag and arrival time. After a lost connection paho reconnects on its own
    (delays from `reconnect_delay`) and the probe subscribes to all its filters again.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | str | None = None,
        client_cert: Path | str | None = None,
        client_key: Path | str | None = None,
        client_id: str | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        keepalive: int = 30,
        reconnect_delay: tuple[float, float] = (0.1, 1.0),
    ) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.client_id = client_id or f"probe-{uuid.uuid4().hex[:8]}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca_file is not None or client_cert is not None:
            self._client.tls_set(
                ca_certs=str(ca_file) if ca_file is not None else None,
                certfile=str(client_cert) if client_cert is not None else None,
                keyfile=str(client_key) if client_key is not None else None,
            )
        # paho annotates the delays as int, but sleeps float seconds; sub-second delays keep a
        # broker-restart test short.
        self._client.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

        self._cond = threading.Condition()
        self._messages: list[Msg] = []
        self._subscriptions: dict[str, int] = {}  # filter -> QoS, subscribed again on reconnect
        self._subacks: dict[int, list[ReasonCode]] = {}  # mid -> codes, for subscribe() waiters
        self._resubscribing: set[int] = set()  # mids of on_connect subscriptions not acked yet
        self._resubscribe_failures: list[str] = []
        self._connacks = 0
        self._connects = 0
        self._disconnects = 0
        self._connected = False
        self._loop_running = False
        self._closed = False
        self.last_connect_reason: ReasonCode | None = None
        self.last_disconnect_reason: ReasonCode | None = None

    # -- connection --------------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and wait for a successful CONNACK.

        TCP and TLS errors come straight from paho's blocking connect (ConnectionRefusedError,
        ssl.SSLCertVerificationError "certificate verify failed", ...); a CONNACK with a failure
        raises MqttConnectError. In both cases the probe stops its thread, so that paho does not
        keep retrying in the background.
        """
        if self._closed:
            raise MqttError("this probe is closed")
        with self._cond:
            seen = self._connacks
        self._client.connect(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()
        self._loop_running = True
        with self._cond:
            got = self._cond.wait_for(lambda: self._connacks > seen, timeout)
            reason = self.last_connect_reason
        if not got:
            self._stop_loop()
            raise TimeoutError(f"no CONNACK from {self.host}:{self.port} within {timeout} s")
        if reason is not None and reason.is_failure:
            self._stop_loop()
            raise MqttConnectError(reason)

    def wait_connected(self, timeout: float = 5.0, *, count: int = 1) -> None:
        """Wait until connected at least `count` times, with every filter subscribed again.

        After a broker restart `wait_connected(count=2)` returns only once the SUBACKs of the
        on_connect subscriptions are in, so a message published next is sure to arrive.
        """
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._connected and self._connects >= count and not self._resubscribing,
                timeout,
            )
            if self._resubscribe_failures:
                raise MqttError(f"subscribing again failed: {self._resubscribe_failures}")
            if not ok:
                raise TimeoutError(
                    f"{self.client_id}: not connected (for the {count}. time, subscribed again) "
                    f"within {timeout} s; connects={self._connects}, connected={self._connected}, "
                    f"last reason={self.last_connect_reason}"
                )

    def wait_disconnected(self, timeout: float = 5.0) -> None:
        """Wait until paho has noticed that the connection is gone."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._connected, timeout):
                raise TimeoutError(f"{self.client_id}: still connected after {timeout} s")

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of the connection."""
        with self._cond:
            return self._connected

    @property
    def connect_count(self) -> int:
        """How many times the broker accepted this probe (1 + the reconnects)."""
        with self._cond:
            return self._connects

    @property
    def disconnect_count(self) -> int:
        """How many times the connection was lost or closed."""
        with self._cond:
            return self._disconnects

    @property
    def client(self) -> mqtt.Client:
        """The paho client itself, for what the probe does not wrap (wills, MQTT 5 properties)."""
        return self._client

    # -- subscribe and publish -------------------------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 5.0) -> None:
        """Subscribe and wait for the SUBACK; the filter is subscribed again after reconnects."""
        with self._cond:
            self._subscriptions[topic_filter] = qos
        result, mid = self._client.subscribe(topic_filter, qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe {topic_filter!r}: {mqtt.error_string(result)}")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout):
                raise TimeoutError(f"no SUBACK for {topic_filter!r} within {timeout} s")
            codes = self._subacks.pop(mid)
        failed = [code for code in codes if code.is_failure]
        if failed:
            raise MqttError(f"broker refused the subscription to {topic_filter!r}: {failed}")

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        retain: bool = False,
        qos: int = 1,
        timeout: float = 5.0,
    ) -> None:
        """Publish and wait until it is acknowledged (QoS 1/2) or written to the socket (QoS 0)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic!r}: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic!r} not acknowledged within {timeout} s")

    # -- received messages ---------------------------------------------------------------------

    def messages(self, topic_filter: str | None = None) -> list[Msg]:
        """The messages received so far (since `clear()`), oldest first, optionally filtered."""
        with self._cond:
            found = list(self._messages)
        if topic_filter is None:
            return found
        return [msg for msg in found if mqtt.topic_matches_sub(topic_filter, msg.topic)]

    def wait_for(self, match: Match, timeout: float = 5.0) -> Msg:
        """The first message (received already or later) on a topic filter or matching a predicate.

        Messages received before the call count too; call `clear()` first to wait for a new one.
        """
        return self._wait(match, timeout, repr(match))

    def wait_payload(self, topic: str, payload: str | bytes, timeout: float = 5.0) -> Msg:
        """The first message on `topic` (a filter) whose payload is exactly `payload`."""
        expected = payload.encode() if isinstance(payload, str) else payload
        return self._wait(
            lambda msg: msg.payload == expected and mqtt.topic_matches_sub(topic, msg.topic),
            timeout,
            f"{topic!r} with payload {expected[:60]!r}",
        )

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._cond:
            self._messages.clear()

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect cleanly (no last will) and stop the network thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop_loop()

    def __enter__(self) -> MqttProbe:
        if not self.connected:
            try:
                self.connect()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MqttProbe {self.client_id} {self.host}:{self.port} connected={self.connected}>"

    # -- internals (paho callbacks run in paho's network thread) ----------------------------------

    def _wait(self, match: Match, timeout: float, description: str) -> Msg:
        found: list[Msg] = []

        def find() -> bool:
            found[:] = [msg for msg in self._messages if _matches(match, msg)][:1]
            return bool(found)

        with self._cond:
            if not self._cond.wait_for(find, timeout):
                seen = [(msg.topic, msg.payload[:60]) for msg in self._messages[-20:]]
                raise TimeoutError(
                    f"{self.client_id}: no message {description} within {timeout} s; "
                    f"last received: {seen}"
                )
        return found[0]

    def _stop_loop(self) -> None:
        # disconnect() first: it puts paho in the "disconnecting" state, which ends loop_forever
        # instead of reconnecting; loop_stop() then joins the thread.
        self._client.disconnect()
        if self._loop_running:
            self._client.loop_stop()
            self._loop_running = False
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connacks += 1
            self.last_connect_reason = reason_code
            if reason_code.is_failure:
                self._cond.notify_all()
                return
            filters = dict(self._subscriptions)
            self._resubscribing.clear()
        # Subscribing here, not once after connect(), is what brings subscriptions back after a
        # broker restart (clean session: the broker has forgotten them). The SUBACKs are handled
        # by this same thread after this callback returns, so the mids are recorded in time.
        mids = set()
        for topic_filter, qos in filters.items():
            result, mid = client.subscribe(topic_filter, qos)
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                mids.add(mid)
        with self._cond:
            self._resubscribing = mids
            self._connects += 1
            self._connected = True
            self._cond.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = False
            self._resubscribing.clear()  # their SUBACKs will never come on this connection
            self._disconnects += 1
            self.last_disconnect_reason = reason_code
            self._cond.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if mid in self._resubscribing:
                self._resubscribing.discard(mid)
                failed = [str(code) for code in reason_codes if code.is_failure]
                self._resubscribe_failures.extend(failed)
            else:
                self._subacks[mid] = reason_codes
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        msg = Msg(
            topic=message.topic,
            payload=bytes(message.payload),
            retain=bool(message.retain),
            qos=int(message.qos),
            time=time.monotonic(),
        )
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()
