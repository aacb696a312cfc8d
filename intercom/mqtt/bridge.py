"""The MQTT client's lifecycle, on paho-mqtt 2.x, owned by the asyncio event loop.

paho runs its own network thread (``loop_start``), which also reconnects with back-off. Every
callback it makes only hands its arguments to the event loop with ``call_soon_threadsafe``; all
state lives on the loop. The last will (``offline``, retained) is set before connecting; after every
(re)connect the door publishes ``online``, its discovery and every current state again, then the
events it had to queue while the broker was away (bounded: the oldest are dropped and counted),
with QoS 1 so that no ring is lost to a broker restart.

Safety: a retained message on a command topic is logged and ignored, so that a broker or Home
Assistant restart can never ring or open anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from intercom.config import MqttConfig
from intercom.mqtt.topics import Topics

log = logging.getLogger(__name__)

Message = tuple[str, str, bool]  # topic, payload, retain
HA_STATUS = "homeassistant/status"


class MqttBridge:
    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        *,
        client_id: str,
        discovery: Callable[[], list[Message]],
        on_command: Callable[[str, bytes], None],
        debug: bool = False,
        queue_max: int = 100,
        rediscovery_delay: tuple[float, float] = (0.5, 3.0),
    ) -> None:
        self.config = config
        self.topics = topics
        self.client_id = client_id
        self.discovery = discovery
        self.on_command = on_command
        self.debug = debug
        self.rediscovery_delay = rediscovery_delay
        self.connected = False
        self.states: dict[str, str] = {}  # retained state topics and their current payloads
        self.queue: deque[str] = deque(maxlen=queue_max)  # events waiting for the broker
        self.dropped = 0  # queued events pushed out by newer ones while the broker was away
        self.ignored_retained = 0
        self.malformed = 0
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._status_topic = f"{config.discovery_prefix}/status"
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def broker(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect in the background: a broker that is down delays nothing else."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.secret())
        tls = self.config.tls
        if tls is not None:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED,
            )
            if tls.insecure:
                client.tls_insecure_set(True)
        # Back-off, but capped low: the broker is on the LAN, and the door must be back online
        # within seconds of it.
        client.reconnect_delay_set(min_delay=1, max_delay=4)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        self._client = client
        client.connect_async(self.config.host, self.config.port, keepalive=30)
        client.loop_start()

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish ``offline`` ourselves (a clean exit sends no last will), then disconnect."""
        client = self._client
        if client is None:
            return
        if self.connected:
            info = self._publish(self.topics.status, "offline", retain=True)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(info.wait_for_publish, timeout)
        self.connected = False  # a disconnect we asked for is not "lost"
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        for task in list(self._tasks):
            task.cancel()
        self._client = None
        self.connected = False

    # ---------------------------------------------------------------- publishing
    def set_state(self, topic: str, payload: str) -> None:
        """A retained state: published now if connected, and again after every reconnect.

        The same value again is not re-sent: it is retained already, and each copy would wake
        every Home Assistant automation that listens to the topic."""
        if self.states.get(topic) == payload and self.connected:
            return
        self.states[topic] = payload
        if self.connected:
            self._publish(topic, payload, retain=True)

    def event(self, event_type: str, **attributes: Any) -> None:
        """A doorbell event, never retained; queued while the broker is away."""
        payload = json.dumps({"event_type": event_type, **attributes}, sort_keys=True)
        if self.connected:
            self._publish(self.topics.event, payload, retain=False)
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(payload)

    def _publish(self, topic: str, payload: str, *, retain: bool) -> mqtt.MQTTMessageInfo:
        assert self._client is not None
        if self.debug:
            log.info("mqtt > %s %s%s", topic, payload, " (retained)" if retain else "")
        return self._client.publish(topic, payload, qos=1, retain=retain)

    # ---------------------------------------------------------------- paho's thread
    def _hand(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed under us at exit
                loop.call_soon_threadsafe(fn, *args)

    def _paho_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._hand(self._on_connect, bool(reason.is_failure), str(reason))

    def _paho_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._hand(self._on_disconnect, str(reason))

    def _paho_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._hand(self._on_message, message.topic, bytes(message.payload), bool(message.retain))

    # ---------------------------------------------------------------- on the loop
    def _on_connect(self, failed: bool, reason: str) -> None:
        if failed:
            error = f"MQTT broker {self.broker} refused the connection: {reason}"
            refused = "user name or password" in reason.lower() or "authori" in reason.lower()
            if error != self.last_error:
                hint = " (check mqtt.username and the MQTT password)" if refused else ""
                log.error("%s%s; retrying", error, hint)
            self.last_error = error
            if refused and self._client is not None:
                # Wrong credentials do not fix themselves: knock rarely, not every few seconds.
                self._client.reconnect_delay_set(min_delay=30, max_delay=120)
            return
        if self._client is not None:
            self._client.reconnect_delay_set(min_delay=1, max_delay=4)
        self.last_error = None
        self.connected = True
        log.info("MQTT connected to %s", self.broker)
        assert self._client is not None
        for topic in (*self.topics.commands, self._status_topic):
            self._client.subscribe(topic, qos=1)
        self._announce()
        while self.queue:
            self._publish(self.topics.event, self.queue.popleft(), retain=False)

    def _announce(self) -> None:
        """``online``, discovery and every state: what Home Assistant needs after any restart."""
        self._publish(self.topics.status, "online", retain=True)
        for topic, payload, retain in self.discovery():
            self._publish(topic, payload, retain=retain)
        for topic, payload in self.states.items():
            self._publish(topic, payload, retain=True)

    def _on_disconnect(self, reason: str) -> None:
        if self.connected:
            log.warning("MQTT connection to %s lost (%s); reconnecting", self.broker, reason)
        self.connected = False

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        if self.debug:
            log.info("mqtt < %s %r%s", topic, payload[:200], " (retained)" if retain else "")
        if topic == self._status_topic:
            if payload.strip().lower() == b"online" and self.connected:
                # Home Assistant restarted: announce again, after a short random delay so that
                # a hundred devices do not all answer at once.
                delay = random.uniform(*self.rediscovery_delay)
                task = asyncio.ensure_future(self._reannounce(delay))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        if topic not in self.topics.commands:
            return
        if retain:
            self.ignored_retained += 1
            log.warning("ignored a retained message on %s: commands must not be retained", topic)
            return
        try:
            self.on_command(topic, payload)
        except Exception:
            self.malformed += 1
            log.exception("command on %s failed", topic)

    async def _reannounce(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.connected:
            self._announce()
