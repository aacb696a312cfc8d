"""Wiring only: the phone, the call state and MQTT, run together on one event loop.

Triggers (an MQTT ``call/ring`` today, the GPIO button next) become calls; every call state,
registration change and event goes to MQTT as it happens. A ring while a call is up rings
nothing; a malformed command is logged and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intercom import __version__
from intercom.config import Config
from intercom.controller import CallStateMachine, describe
from intercom.mqtt.discovery import last_call_result
from intercom.phone import Phone, PhoneOptions
from intercom.sip.events import (
    CallAnswered,
    CallCalling,
    CallEnded,
    DtmfReceived,
    Event,
    IncomingCall,
    RegistrationChanged,
)

log = logging.getLogger(__name__)

#: End reasons as Home Assistant doorbell event types (see intercom.mqtt.discovery).
_EVENT_FOR_REASON = {
    "no_answer": "no_answer",
    "busy": "busy",
    "rejected": "rejected",
    "not_found": "rejected",
    "unavailable": "rejected",
}


@dataclass
class _CallInfo:
    handle: int
    targets: list[str]
    started: float
    answered_at: float | None = None
    answered_by: str | None = None


class Intercom:
    def __init__(
        self,
        config: Config,
        *,
        trace: bool = False,
        mqtt_debug: bool = False,
        phone_options: PhoneOptions | None = None,
    ) -> None:
        self.config = config
        self.phone = Phone(config, phone_options or PhoneOptions(trace=trace))
        self.machine = CallStateMachine()
        self.call: _CallInfo | None = None
        self.bridge: Any = None
        self.mqtt_debug = mqtt_debug
        self._consumer: asyncio.Task[None] | None = None
        #: Everything the phone reports, after the intercom has handled it (the CLI prints it).
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.config.mqtt is not None:
            self._start_mqtt()
        await self.phone.start()
        self._consumer = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        await self.phone.stop()
        if self._consumer is not None:
            self._consumer.cancel()
        if self.bridge is not None:
            await self.bridge.stop()

    def _start_mqtt(self) -> None:
        from intercom.mqtt.bridge import MqttBridge
        from intercom.mqtt.discovery import DiscoveryInfo, discovery_messages
        from intercom.mqtt.topics import Topics

        mqtt = self.config.mqtt
        assert mqtt is not None
        topics = Topics(self.config.mqtt_base_topic)
        info = DiscoveryInfo(
            device_id=self.config.device_id,
            name=f"Door intercom {self.config.device_id}",
            topics=topics,
            prefix=mqtt.discovery_prefix,
            sw_version=__version__,
            door_open_enabled=False,
        )
        self.bridge = MqttBridge(
            mqtt,
            topics,
            client_id=mqtt.client_id or f"pi-intercom-{self.config.device_id}",
            discovery=lambda: discovery_messages(info, mqtt.discovery),
            on_command=self._command,
            debug=self.mqtt_debug,
        )
        self.bridge.set_state(topics.call_state, self.machine.state)
        self.bridge.set_state(topics.sip_registered, "OFF")
        self.bridge.start()

    # ---------------------------------------------------------------- triggers
    def ring(self, targets: list[str] | None = None, source: str = "mqtt") -> int | None:
        """Ring the configured targets (or ``targets``); None when a call is already up."""
        if self.call is not None:
            log.info("ring from %s ignored: a call is already up", source)
            return None
        chosen = list(targets or self.config.call.targets)
        if self.bridge is not None:
            self.bridge.event("ring", source=source, targets=chosen)
        handle = self.phone.call(chosen)
        self.call = _CallInfo(handle, chosen, time.monotonic())
        return handle

    def hangup(self) -> None:
        if self.call is not None:
            self.phone.hangup(self.call.handle)
        for handle in self.phone.agent.active_calls() if self.phone.agent else []:
            self.phone.hangup(handle)

    def _command(self, topic: str, payload: bytes) -> None:
        assert self.bridge is not None
        topics = self.bridge.topics
        text = payload.decode("utf-8", "replace").strip()
        if topic == topics.call_ring:
            targets: list[str] | None = None
            if text and text.upper() != "PRESS":
                try:
                    data = json.loads(text)
                    raw = data["targets"]
                    if (
                        not isinstance(raw, list)
                        or not raw
                        or not all(isinstance(t, str | int) and str(t).strip() for t in raw)
                    ):
                        raise ValueError("targets must be a non-empty list")
                    targets = [str(t).strip() for t in raw]
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignored a malformed %s payload %r: %s", topic, text[:100], exc)
                    return
            self.ring(targets)
        elif topic == topics.call_hangup:
            self.hangup()
        elif topic == topics.door_open:
            log.warning("door/open ignored: no door opener is configured")

    # ---------------------------------------------------------------- events out
    async def _consume(self) -> None:
        while True:
            event = await self.phone.events.get()
            try:
                self._handle(event)
            except Exception:
                log.exception("handling %r failed", event)
            self.events.put_nowait(event)

    def _handle(self, event: Event) -> None:
        state = self.machine.feed(event)
        fields = describe(event)
        log.info("%s (call state: %s)", " ".join(f"{k}={v}" for k, v in fields.items()), state)
        if isinstance(event, IncomingCall) and self.call is None:
            self.call = _CallInfo(event.call, [event.caller], time.monotonic())
        if isinstance(event, CallAnswered) and self.call is not None:
            self.call.answered_at = time.monotonic()
            self.call.answered_by = event.target
        bridge = self.bridge
        if bridge is None:
            if isinstance(event, CallEnded):
                self.call = None
            return
        topics = bridge.topics
        if isinstance(event, RegistrationChanged):
            bridge.set_state(topics.sip_registered, "ON" if self.phone.registered else "OFF")
            return
        bridge.set_state(topics.call_state, state)
        if isinstance(event, CallAnswered):
            bridge.event("answered", target=event.target, incoming=event.incoming)
        elif isinstance(event, DtmfReceived):
            bridge.event("dtmf", digit=event.digit, method=event.method)
        elif isinstance(event, CallEnded):
            self._ended(event)
        elif isinstance(event, CallCalling):
            pass

    def _ended(self, event: CallEnded) -> None:
        bridge = self.bridge
        call, self.call = self.call, None
        answered = call is not None and call.answered_at is not None
        now = time.monotonic()
        duration = round(now - call.answered_at, 1) if call and call.answered_at else 0.0
        result = last_call_result(event.reason, answered=answered)
        bridge.set_state(
            bridge.topics.call_last,
            json.dumps(
                {
                    "result": result,
                    "reason": event.reason,
                    "code": event.code,
                    "target": event.target,
                    "answered_by": call.answered_by if call else None,
                    "duration": duration,
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                sort_keys=True,
            ),
        )
        if answered:
            bridge.event("ended", reason=event.reason, duration=duration)
        else:
            kind = _EVENT_FOR_REASON.get(event.reason, "failed")
            bridge.event(kind, reason=event.reason, code=event.code, target=event.target)
