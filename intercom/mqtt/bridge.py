"""The MQTT client's lifecycle, on paho-mqtt 2.x, owned by the asyncio event loop.

paho runs its own network thread (``loop_start``), which also reconnects with back-off. Every
callback it makes only hands its arguments to the event loop with ``call_soon_threadsafe``; all
state lives on the loop. The last will (``offline``, retained) is set before connecting; after every
(re)connect the door publishes ``online``, its discovery and every current state again, then the
events it had to queue while the broker was away (bounded: the oldest are dropped and counted),
with QoS 1 so that no ring is lost to a broker restart.

Safety: a retained message on a command topic is logged and ignored, so that a broker or Home
Assistant restart can never ring or open anything.

Bounds: anyone who can publish to the broker can flood the door, so what arrives is treated like
datagrams from the LAN. A payload over :data:`~intercom.mqtt.commands.MAX_PAYLOAD` is ignored and
counted; a malformed or refused command (:class:`~intercom.mqtt.commands.CommandError`) is
counted and logged once per :data:`LOG_WINDOW` per topic, without a traceback; at most
:data:`MAX_PENDING` messages wait for the loop (paho's thread drops and counts the rest); at
most one re-announcement is pending; paho queues at most ``queue_max`` times ten outgoing
messages. The states dict holds the door's fixed state topics only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from intercom.config import MqttConfig
from intercom.mqtt.commands import MAX_PAYLOAD, CommandError, CommandRefused
from intercom.mqtt.topics import Topics
from intercom.throttle import Throttle

log = logging.getLogger(__name__)

Message = tuple[str, str, bool]  # topic, payload, retain
HA_STATUS = "homeassistant/status"
#: Seconds: each kind of bad input (per topic) is logged at most once in this window.
LOG_WINDOW = 60.0
#: Messages handed from paho's thread that the loop has not taken yet; more are dropped.
MAX_PENDING = 256


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
        clock: Callable[[], float] = time.monotonic,
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
        self.oversized = 0  # command payloads over MAX_PAYLOAD, ignored
        self.malformed = 0  # commands that could not be parsed, or whose handler failed
        self.refused = 0  # well-formed commands that are not allowed
        self.overflowed = 0  # messages paho's thread dropped: MAX_PENDING were waiting
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._status_topic = f"{config.discovery_prefix}/status"
        self._tasks: set[asyncio.Task[None]] = set()
        self._reannounce_pending = False
        self._pending = 0  # messages handed to the loop and not taken yet
        self._pending_lock = threading.Lock()
        self._queue_max = queue_max
        self._warn = Throttle(LOG_WINDOW)  # keys: (kind, topic), a fixed few
        self._clock = clock

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
        # paho's own outgoing queue is unbounded by default; a broker that stalls must not grow
        # the door. Past the cap publish() fails, which _publish counts as dropped.
        client.max_queued_messages_set(self._queue_max * 10)
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
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
        return info

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
        # A flood must not pile up callbacks in the loop's queue faster than it takes them.
        with self._pending_lock:
            if self._pending >= MAX_PENDING:
                self.overflowed += 1
                return
            self._pending += 1
        self._hand(self._take, message.topic, bytes(message.payload), bool(message.retain))

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

    def _take(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._pending_lock:
            self._pending -= 1
        if self.overflowed:
            self._warn_once(
                "overflow", "",
                "MQTT messages arrive faster than the door takes them: %d dropped so far",
                self.overflowed,
            )  # fmt: skip
        self._on_message(topic, payload, retain)

    def _warn_once(
        self, kind: str, topic: str, message: str, *args: Any, exc_info: bool = False
    ) -> None:
        held = self._warn.report((kind, topic), self._clock())
        if held is None:
            return
        more = f" ({held} more like it not logged)" if held else ""
        log.warning(message + "%s", *args, more, exc_info=exc_info)

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic != self._status_topic and topic not in self.topics.commands:
            return
        if len(payload) > MAX_PAYLOAD:
            self.oversized += 1
            self._warn_once(
                "oversized", topic, "ignored %d bytes on %s: commands are at most %d bytes",
                len(payload), topic, MAX_PAYLOAD,
            )  # fmt: skip
            return
        if self.debug:
            log.info("mqtt < %s %r%s", topic, payload[:200], " (retained)" if retain else "")
        if topic == self._status_topic:
            if payload.strip().lower() == b"online" and self.connected:
                self._schedule_reannounce()
            return
        if retain:
            self.ignored_retained += 1
            self._warn_once(
                "retained", topic,
                "ignored a retained message on %s: commands must not be retained", topic,
            )  # fmt: skip
            return
        try:
            self.on_command(topic, payload)
        except CommandRefused as exc:
            self.refused += 1
            self._warn_once("refused", topic, "refused a command on %s: %s", topic, exc)
        except CommandError as exc:
            self.malformed += 1
            self._warn_once("malformed", topic, "ignored a malformed %s payload: %s", topic, exc)
        except Exception as exc:
            # A bug, not bad input: its traceback, but once per window, not per message.
            self.malformed += 1
            self._warn_once("failed", topic, "command on %s failed: %r", topic, exc, exc_info=True)

    def _schedule_reannounce(self) -> None:
        """Home Assistant restarted: announce again, after a short random delay so that a
        hundred devices do not all answer at once. One pending at a time, whatever arrives."""
        if self._reannounce_pending:
            return
        self._reannounce_pending = True
        task = asyncio.ensure_future(self._reannounce(random.uniform(*self.rediscovery_delay)))
        self._tasks.add(task)
        task.add_done_callback(self._reannounced)

    def _reannounced(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._reannounce_pending = False

    async def _reannounce(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.connected:
            self._announce()
