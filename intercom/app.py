"""Wiring only: the phone, the call state, the door and MQTT, run together on one event loop.

Triggers (the GPIO button, an MQTT ``call/ring``) become calls; every call state, registration
change and event goes to MQTT as it happens. A ring while a call is up rings nothing; a
malformed or refused command is counted and logged once per window by the bridge
(:mod:`intercom.mqtt.commands` says what is refused). Door refusals other than a wrong code are
reported once per :data:`REFUSAL_WINDOW` per reason, with a count of the ones held back, so a
flood of ``door/open`` is a few lines and events, not one per message. While a door code is set,
no DTMF digit reaches a log line or MQTT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intercom import __version__
from intercom.config import Config
from intercom.controller import CallStateMachine, describe
from intercom.door import (
    DoorAction,
    DoorRules,
    LockedOut,
    OpenDoor,
    Reason,
    Refused,
    ScheduleHangup,
)
from intercom.doorbell import Decision, PressFilter
from intercom.mqtt.commands import ring_targets
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
from intercom.throttle import Throttle

log = logging.getLogger(__name__)

#: Seconds: a door refusal (other than a wrong code) is reported once per reason in this window.
REFUSAL_WINDOW = 10.0
#: What a busy relay (intercom.devices.OutputBusy.state) means as a refusal.
_BUSY_REASON: dict[str, Reason] = {"on": "already_open", "resting": "relay_resting"}

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
    #: May DTMF in this call open the door: a call to targets that are all in call.targets (also
    #: when named over MQTT), or from a caller in incoming.allow (the only ones answered). Not a
    #: call to any other target.
    allowed: bool = True
    #: The door placed this call (its wrong codes are counted apart from incoming calls').
    placed: bool = True
    #: Whom wrong codes count against: for an incoming call the incoming.allow entry that let it
    #: in (one allowed identity is one count, however its From is spelled); for a placed call
    #: None, i.e. who answered.
    identity: str | None = None


class Intercom:
    def __init__(
        self,
        config: Config,
        *,
        trace: bool = False,
        mqtt_debug: bool = False,
        phone_options: PhoneOptions | None = None,
        pin_factory: Any = None,
    ) -> None:
        self.config = config
        self.phone = Phone(config, phone_options or PhoneOptions(trace=trace))
        self.machine = CallStateMachine()
        self.call: _CallInfo | None = None
        self.bridge: Any = None
        self.mqtt_debug = mqtt_debug
        self._consumer: asyncio.Task[None] | None = None
        #: Called with everything the phone reports, after the intercom has handled it (the CLI
        #: prints it, the systemd status follows it).
        self.listeners: list[Callable[[Event], None]] = []
        self.pin_factory = pin_factory
        self.door_rules = DoorRules.from_config(config.door)
        self.press_filter = (
            PressFilter(config.doorbell.min_press, config.doorbell.cooldown)
            if config.doorbell is not None
            else None
        )
        self.button: Any = None
        self.relay: Any = None
        self.chime: Any = None
        self.led: Any = None
        self._ring_after_hangup = False
        self._refusals = Throttle(REFUSAL_WINDOW)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._start_devices()
        if self.config.mqtt is not None:
            self._start_mqtt()
        await self.phone.start()
        self._consumer = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        try:
            await self.phone.stop()
        finally:
            self._close_devices()  # the relay is off whatever happened above
        if self._consumer is not None:
            self._consumer.cancel()
        if self.bridge is not None:
            await self.bridge.stop()

    # ---------------------------------------------------------------- GPIO
    def _start_devices(self) -> None:
        cfg = self.config
        if not any((cfg.doorbell, cfg.chime, cfg.led, cfg.door)):
            return
        try:
            from intercom.devices import Chime, DoorbellButton, DoorRelay, Led

            factory = self.pin_factory
            if cfg.door is not None:
                self.relay = DoorRelay(cfg.door, pin_factory=factory)
            if cfg.chime is not None:
                self.chime = Chime(cfg.chime, pin_factory=factory)
            if cfg.led is not None:
                self.led = Led(cfg.led, pin_factory=factory)
            if cfg.doorbell is not None:
                self.button = DoorbellButton(
                    cfg.doorbell,
                    self._pressed,
                    self._released,
                    pin_factory=factory,
                    loop=asyncio.get_running_loop(),
                )
        except Exception as exc:
            # No GPIO here (a PC without GPIOZERO_PIN_FACTORY=mock): the phone still works.
            log.error("no GPIO: %s; the button, chime, LED and door opener are off", exc)
            self._close_devices()

    def _close_devices(self) -> None:
        for name in ("relay", "button", "chime", "led"):
            device = getattr(self, name)
            if device is not None:
                try:
                    device.close()
                except Exception:
                    log.exception("closing the %s failed", name)
                setattr(self, name, None)

    def _pressed(self, now: float) -> None:
        if self.press_filter is not None:
            self.press_filter.pressed(now)
            # Ring as soon as the press is long enough to be a finger, not at the release.
            asyncio.get_running_loop().call_later(self.press_filter.min_press, self._held)

    def _held(self) -> None:
        if self.press_filter is not None:
            decision = self.press_filter.held(time.monotonic())
            if decision is not None:
                self._press_decided(decision)

    def _released(self, now: float) -> None:
        if self.press_filter is None or self.config.doorbell is None:
            return
        decision = self.press_filter.released(now)
        if decision is not Decision.DECIDED:
            self._press_decided(decision)

    def _press_decided(self, decision: Decision) -> None:
        assert self.config.doorbell is not None
        if decision is not Decision.RING:
            log.info("doorbell press ignored (%s)", decision.name.lower())
            return
        if self.call is not None:
            if self.config.doorbell.while_calling == "hangup_and_ring":
                log.info("doorbell pressed during a call: hanging up to ring again")
                self._ring_after_hangup = True
                self.hangup()
            else:
                log.info("doorbell pressed during a call: ignored")
            return
        self.ring(source="button")

    def _door_actions(self, actions: list[DoorAction]) -> None:
        bridge = self.bridge
        opened = True
        for action in actions:
            if isinstance(action, OpenDoor):
                opened = self._open_door(action)
            elif isinstance(action, Refused):
                self._refused(action)
            elif isinstance(action, LockedOut):
                seconds = round(action.until - time.monotonic())
                log.warning(
                    "door: too many wrong codes from %s; DTMF locked out for them for %d s",
                    action.who, seconds,
                )  # fmt: skip
                if bridge is not None:
                    bridge.event("door_lockout", seconds=seconds, who=action.who)
            elif isinstance(action, ScheduleHangup) and opened:
                asyncio.get_running_loop().call_later(action.after, self.hangup)

    def _relay_busy(self) -> Reason | None:
        """The refusal the relay would give a pulse now, if any."""
        busy = self.relay.busy() if self.relay is not None else None
        return None if busy is None else _BUSY_REASON[busy]

    def _open_door(self, action: OpenDoor) -> bool:
        """Pulse the strike for ``action``; whether it opened (the relay may refuse)."""
        if self.relay is None:
            # GPIO failed at start, or there is no door section: saying "opened" would be a lie
            # that sends the resident away from the door.
            self._refused(Refused("no_relay", action.who), level=logging.ERROR)
            return False
        from intercom.devices import OutputBusy  # imported already: the relay is one

        try:
            seconds = self.relay.pulse()
        except OutputBusy as exc:
            self._refused(Refused(_BUSY_REASON[exc.state], action.who))
            return False
        log.warning("door opened by %s (%s) for %.1f s", action.how, action.who, seconds)
        if self.bridge is not None:
            self.bridge.event("door_opened", how=action.how, who=action.who)
        return True

    def _refused(self, action: Refused, level: int = logging.WARNING) -> None:
        """Log and publish a refusal. Wrong codes always (each is an attempt, and the rules
        bound them); the others once per reason per REFUSAL_WINDOW, with the count held back."""
        held: int | None = 0
        if action.reason != "wrong_code":
            held = self._refusals.report(action.reason, time.monotonic())
            if held is None:
                return
        more = f" ({held} more since the last report)" if held else ""
        log.log(level, "door not opened: %s (%s)%s", action.reason, action.who, more)
        if self.bridge is not None:
            extra = {"repeated": held} if held else {}
            self.bridge.event("door_refused", reason=action.reason, who=action.who, **extra)

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
            door_open_enabled=self.config.door is not None and self.config.door.mqtt_open,
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
        # The chime and the MQTT event go first: they work even when the PBX does not.
        if self.chime is not None:
            self.chime.ring()
        if self.bridge is not None:
            self.bridge.event("ring", source=source, targets=chosen)
        handle = self.phone.call(chosen)
        configured = set(self.config.call.targets)
        self.call = _CallInfo(
            handle, chosen, time.monotonic(), allowed=all(t in configured for t in chosen)
        )
        return handle

    def hangup(self) -> None:
        if self.call is not None:
            self.phone.hangup(self.call.handle)
        for handle in self.phone.agent.active_calls() if self.phone.agent else []:
            self.phone.hangup(handle)

    def _command(self, topic: str, payload: bytes) -> None:
        """An MQTT command. Raises :class:`~intercom.mqtt.commands.CommandError` for one that
        is malformed or refused; the bridge counts and logs it (rate-limited)."""
        assert self.bridge is not None
        topics = self.bridge.topics
        if topic == topics.call_ring:
            mqtt = self.config.mqtt
            targets = ring_targets(
                payload,
                configured=tuple(self.config.call.targets),
                any_target=mqtt is not None and mqtt.ring_any_target,
            )
            self.ring(targets)
        elif topic == topics.call_hangup:
            self.hangup()
        elif topic == topics.door_open:
            self._door_actions(
                self.door_rules.mqtt_open(
                    time.monotonic(), in_call=self.call is not None, relay_busy=self._relay_busy()
                )
            )

    # ---------------------------------------------------------------- events out
    async def _consume(self) -> None:
        while True:
            event = await self.phone.events.get()
            try:
                self._handle(event)
            except Exception:
                log.exception("handling %s failed", self._describe(event))
            for listener in list(self.listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed on %s", self._describe(event))

    def _describe(self, event: Event) -> str:
        """An event for a log line: its fields, the digit only while no door code is set (a
        DtmfReceived's repr names it, so no log line may use that)."""
        fields = describe(event, show_digits=not self.door_rules.dtmf_enabled)
        return " ".join(f"{k}={v}" for k, v in fields.items())

    def _handle(self, event: Event) -> None:
        state = self.machine.feed(event)
        log.info("%s (call state: %s)", self._describe(event), state)
        if isinstance(event, IncomingCall) and self.call is None:
            self.call = _CallInfo(
                event.call,
                [event.caller],
                time.monotonic(),
                placed=False,
                identity=event.entry,
            )
        if isinstance(event, CallAnswered) and self.call is not None:
            self.call.answered_at = time.monotonic()
            self.call.answered_by = event.target
        if isinstance(event, DtmfReceived) and self.call is not None:
            # Only calls the door placed to its targets, or callers in incoming.allow (the SIP
            # core refuses all others), may open it; caller ID alone never does. Wrong codes
            # count per caller, placed calls apart: a stranger locks out no one but themself.
            call = self.call
            who = call.answered_by or ",".join(call.targets)
            self._door_actions(
                self.door_rules.dtmf(
                    event.digit, time.monotonic(),
                    call_allowed=call.answered_at is not None and call.allowed,
                    caller=who, placed=call.placed, identity=call.identity,
                )
            )  # fmt: skip
        self._update_led(state)
        bridge = self.bridge
        if isinstance(event, CallEnded):
            self.door_rules.call_ended()
        if bridge is None:
            if isinstance(event, CallEnded):
                self.call = None
                self._after_call()
            return
        topics = bridge.topics
        if isinstance(event, RegistrationChanged):
            bridge.set_state(topics.sip_registered, "ON" if self.phone.registered else "OFF")
            return
        bridge.set_state(topics.call_state, state)
        if isinstance(event, CallAnswered):
            bridge.event("answered", target=event.target, incoming=event.incoming)
        elif isinstance(event, DtmfReceived):
            if self.door_rules.dtmf_enabled:
                # The digits would spell the door code into the broker and HA's history.
                bridge.event("dtmf", method=event.method)
            else:
                bridge.event("dtmf", digit=event.digit, method=event.method)
        elif isinstance(event, CallEnded):
            self._ended(event)
            self._after_call()
        elif isinstance(event, CallCalling):
            pass

    def _update_led(self, state: str) -> None:
        if self.led is None:
            return
        if state in ("calling", "ringing"):
            self.led.blink()
        elif state == "in_call":
            self.led.on()
        else:
            self.led.off()

    def _after_call(self) -> None:
        if self._ring_after_hangup:
            self._ring_after_hangup = False
            self.ring(source="button")

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
