"""``intercom demo``: the whole product, working on any Linux PC, in under a minute.

A newcomer sees what a Pi at the door would do before buying one. Everything is the project's own
code on 127.0.0.1 and free ports: the door is the real :class:`~intercom.app.Intercom` (the daemon's
wiring) with gpiozero's mock pins in place of the GPIO header; the handset is a second
:class:`~intercom.phone.Phone` that answers, plays the resident's voice and keys the door code;
the MQTT broker is the machine's mosquitto or one in the process (:mod:`intercom.demo_broker`).
The door calls the handset directly, so the handset stands in for the PBX too.

The story: the button is pressed, the handset rings and answers, the visitor's and the resident's
voices (WAV files shipped in ``intercom/data``) cross both ways, the handset keys the code, the
strike pulses, the door hangs up. Each step is printed as it happens (SIP ladder, call state, MQTT
messages, audio levels) and checked: ``--once`` exits 1 naming the first step that did not happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from intercom import demo_view as view
from intercom.app import Intercom
from intercom.config import Config, parse_config
from intercom.demo_broker import Broker, BrokerKind, BrokerUnavailable, start_broker
from intercom.media.audio import read_wav
from intercom.media.compare import similarity
from intercom.phone import Phone, PhoneOptions
from intercom.sip.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    DtmfReceived,
    Event,
    IncomingCall,
)

LOOPBACK = "127.0.0.1"
DATA = Path(__file__).resolve().parent / "data"
VISITOR_WAV = DATA / "visitor.wav"
RESIDENT_WAV = DATA / "resident.wav"
BUTTON_PIN = 17
STRIKE_PIN = 23
#: One story must end well within a minute; this bounds a run that hangs.
STORY_TIMEOUT = 40.0


@dataclass(frozen=True)
class DemoOptions:
    once: bool = False
    #: Seconds the resident listens before keying the code.
    talk: float = 3.0
    broker: BrokerKind | Literal["none"] = "auto"
    code: str = "1234"
    #: What the handset keys; None keys ``code`` (the tests key a wrong one).
    keyed: str | None = None


def _config(data: dict[str, Any]) -> Config:
    return parse_config(data, base_dir=Path.cwd(), env={})


def handset_config(heard: Path) -> Config:
    return _config(
        {
            "device_id": "handset",
            # Never used: the handset neither registers nor calls out.
            "sip": {
                "server": LOOPBACK,
                "port": 9,
                "username": "handset",
                "register": False,
                "local_port": 0,
            },
            "incoming": {"allow": ["door"], "answer_after": 1},
            "audio": {"input": f"file:{RESIDENT_WAV}", "output": f"file:{heard}"},
        }
    )


def door_config(handset_port: int, broker: Broker | None, code: str, heard: Path) -> Config:
    data: dict[str, Any] = {
        "device_id": "demo_door",
        "sip": {
            "server": LOOPBACK,
            "port": handset_port,
            "username": "door",
            "register": False,
            "local_port": 0,
        },
        "call": {"targets": ["handset"], "ring_timeout": 20, "max_duration": 60},
        "audio": {"input": f"file:{VISITOR_WAV}", "output": f"file:{heard}"},
        "doorbell": {"pin": BUTTON_PIN, "min_press": 0.1, "cooldown": 1},
        "door": {"pin": STRIKE_PIN, "pulse": 1.5, "dtmf_code": code, "hangup_after_open": 2},
    }
    if broker is not None:
        data["mqtt"] = {"host": broker.host, "port": broker.port, "client_id": "demo-door"}
    return _config(data)


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.progress = view.Progress()
        self.t0 = time.monotonic()
        self.broker: Broker | None = None
        self.door: Intercom | None = None
        self.handset: Phone | None = None
        self.factory: Any = None
        self.monitor: Any = None
        self.call_over = asyncio.Event()
        self._state = "idle"
        self._digits = 0
        self._strike_on_at: float | None = None
        self._discovery = 0
        self._tasks: list[asyncio.Task[None]] = []
        #: What each end heard, recorded, so the voices are checked for what they are.
        self._dir = tempfile.TemporaryDirectory(prefix="intercom-demo-")
        self.heard_by_handset = Path(self._dir.name) / "heard-by-handset.wav"
        self.heard_at_door = Path(self._dir.name) / "heard-at-door.wav"
        self._online = asyncio.Event()
        self._quiet = False

    # ---------------------------------------------------------------- output
    def say(self, who: str, text: str) -> None:
        self.print(view.line(time.monotonic() - self.t0, who, text))

    def print(self, text: str) -> None:
        if self._quiet:
            return
        try:
            print(text, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):
            self._quiet = True  # `intercom demo | head`: the story goes on, unseen

    def step(self, key: str) -> None:
        self.progress.mark(key)

    # ---------------------------------------------------------------- set-up
    async def start(self) -> None:
        if self.options.broker != "none":
            try:
                self.broker = await start_broker(self.options.broker)
            except BrokerUnavailable as exc:
                self.print(f"no MQTT: {exc}")
        self.handset = Phone(
            handset_config(self.heard_by_handset),
            PhoneOptions(local_host=LOOPBACK, any_rtp_port=True),
        )
        await self.handset.start()
        from gpiozero.pins.mock import MockFactory

        self.factory = MockFactory()
        config = door_config(
            self.handset.local_addr[1], self.broker, self.options.code, self.heard_at_door
        )
        if self.broker is not None:
            await self._start_monitor(config)
        self.door = Intercom(
            config,
            phone_options=PhoneOptions(local_host=LOOPBACK, any_rtp_port=True),
            pin_factory=self.factory,
        )
        await self.door.start()
        endpoint = self.door.phone.endpoint
        assert endpoint is not None
        endpoint.on_sent = lambda data, _addr: self._sip(data, sent=True)
        endpoint.on_received = lambda data, _addr: self._sip(data, sent=False)
        self.door.listeners.append(self._door_event)
        self._tasks = [
            asyncio.create_task(self._handset_events()),
            asyncio.create_task(self._watch()),
        ]
        self._intro(config)
        if self.broker is not None:
            # The first press should show on MQTT too: let the door's client connect first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._online.wait(), 5)
            await asyncio.sleep(0.2)  # its discovery and retained states, before the story

    def _intro(self, config: Config) -> None:
        assert self.door is not None and self.handset is not None
        p = self.print
        p("pi-intercom demo: a door station and a handset on this machine, talking on 127.0.0.1")
        p(f"  door     SIP {self.door.phone.local_addr[1]}, mock GPIO: button on GPIO{BUTTON_PIN}, "
          f"strike relay on GPIO{STRIKE_PIN}, door code {self.options.code}")  # fmt: skip
        p(f"  handset  SIP {self.handset.local_addr[1]}, answers after 1 s and keys the code")
        if self.broker is not None:
            where = f"{self.broker.host}:{self.broker.port}"
            watch = f"mosquitto_sub -p {self.broker.port} -t '{config.mqtt_base_topic}/#' -v"
            if shutil.which("mosquitto_sub") is None:
                watch += " (from: sudo apt-get install mosquitto-clients)"
            p(f"  MQTT     {self.broker.kind} on {where}; watch: {watch}")
        p("")

    async def _start_monitor(self, config: Config) -> None:
        """A plain MQTT client that prints what Home Assistant would receive."""
        import paho.mqtt.client as mqtt

        assert self.broker is not None and config.mqtt is not None
        loop = asyncio.get_running_loop()
        base, prefix = config.mqtt_base_topic, config.mqtt.discovery_prefix
        subscribed = asyncio.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-watcher")

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            loop.call_soon_threadsafe(self._mqtt, msg.topic, bytes(msg.payload), base, prefix)

        def on_subscribe(*_a: Any) -> None:
            loop.call_soon_threadsafe(subscribed.set)

        client.on_message = on_message
        client.on_subscribe = on_subscribe
        client.on_connect = lambda c, *_a: c.subscribe([(f"{base}/#", 1), (f"{prefix}/#", 1)])
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        client.loop_start()
        self.monitor = client
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(subscribed.wait(), 5)

    # ---------------------------------------------------------------- what happens
    def _sip(self, data: bytes, *, sent: bool) -> None:
        label = view.summarize(data)
        if label is not None:
            self.say("SIP", view.arrow(label, sent))

    def _door_event(self, event: Event) -> None:
        assert self.door is not None
        state = self.door.machine.state
        if state != self._state:
            self._state = state
            self.say("state", f"door: {state}")
        if isinstance(event, CallRinging):
            self.step("ringing")
        elif isinstance(event, CallAnswered):
            self.step("answered")
        elif isinstance(event, DtmfReceived):
            self._digits += 1
            self.say("DTMF", f"door heard key {self._digits} ({event.method})")
            if self._digits >= len(self.options.code):
                self.step("code")
        elif isinstance(event, CallEnded):
            self.say("door", f"call over ({event.reason})")
            self.step("ended")
            self.call_over.set()

    async def _handset_events(self) -> None:
        assert self.handset is not None
        while True:
            event = await self.handset.events.get()
            if isinstance(event, IncomingCall):
                self.step("ringing")
                self.say("phone", f"handset rings: {event.caller} is at the door")
            elif isinstance(event, CallAnswered):
                self.say("phone", "handset answered; the resident listens, then keys the code")
                loop = asyncio.get_running_loop()
                loop.call_later(self.options.talk, self._key_code, event.call)
                # The door hangs up after opening; if it never opens, the resident gives up.
                loop.call_later(self.options.talk + 5, self._give_up, event.call)

    def _key_code(self, handle: int) -> None:
        assert self.handset is not None
        keyed = self.options.keyed if self.options.keyed is not None else self.options.code
        if handle in self.handset.media:
            self.say("phone", f"handset keys {keyed} (RFC 4733 DTMF)")
            self.handset.send_dtmf(handle, keyed)

    def _give_up(self, handle: int) -> None:
        assert self.handset is not None
        if handle in self.handset.media:
            self.say("phone", "the door did not open: the handset hangs up")
            self.handset.hangup(handle)

    def _mqtt(self, topic: str, payload: bytes, base: str, prefix: str) -> None:
        if topic.startswith(prefix + "/"):
            self._discovery += 1
            if self._discovery == 1:
                self.say("MQTT", f"{prefix}/…: discovery, Home Assistant would add the device")
            return
        self.say("MQTT", view.mqtt_line(topic, payload, base))
        if topic == f"{base}/status" and payload == b"online":
            self._online.set()
        if topic == f"{base}/event" and b"door_opened" in payload:
            self.step("mqtt")

    async def _watch(self) -> None:
        """Every 50 ms: the strike relay's pin; every second of a call: the audio levels."""
        tick = 0
        while True:
            await asyncio.sleep(0.05)
            tick += 1
            self._watch_strike()
            if tick % 20 == 0:
                self._watch_audio()

    def _watch_strike(self) -> None:
        on = bool(self.factory.pin(STRIKE_PIN).state)
        now = time.monotonic()
        if on and self._strike_on_at is None:
            self._strike_on_at = now
            self.say("door", f"strike relay ON (GPIO{STRIKE_PIN}): the door can be pushed open")
        elif not on and self._strike_on_at is not None:
            self.say("door", f"strike relay off after {now - self._strike_on_at:.1f} s")
            self._strike_on_at = None
            self.step("strike")

    def _watch_audio(self) -> None:
        assert self.door is not None and self.handset is not None
        door_media = next(iter(self.door.phone.media.values()), None)
        hs_media = next(iter(self.handset.media.values()), None)
        if door_media is None or hs_media is None or not door_media.stats.received:
            return
        door = door_media.stats
        if door.level_out_dbfs <= -120 and door.level_in_dbfs <= -120:
            return  # the first second of a call, not metered yet
        self.say("audio", view.levels(door.level_out_dbfs, door.level_in_dbfs) + f"  {door.codec}")

    def _check_voices(self) -> None:
        """Compare each end's recording with the WAV the other end sent: loud is not enough."""
        for step, path, source, text in (
            ("voice_out", self.heard_by_handset, VISITOR_WAV, "the handset heard the visitor"),
            ("voice_in", self.heard_at_door, RESIDENT_WAV, "the door heard the resident"),
        ):
            try:
                heard, rate = read_wav(path)
                sent, sent_rate = read_wav(source)
            except (OSError, ValueError):
                self.say("audio", f"{text}: nothing was recorded")
                continue
            score = similarity(heard, rate, sent, sent_rate)
            verdict = "the same voice" if score >= view.VOICE_SIMILARITY else "not the voice sent"
            seconds = len(heard) / rate
            self.say("audio", f"{text}: {seconds:.1f} s, similarity {score:.2f} ({verdict})")
            if score >= view.VOICE_SIMILARITY:
                self.step(step)

    # ---------------------------------------------------------------- the story
    async def ring_once(self) -> None:
        """Press the mock button like a finger (300 ms), then wait for the call to end."""
        self.call_over.clear()
        self._digits = 0
        pin = self.factory.pin(BUTTON_PIN)
        self.say("bell", f"doorbell pressed (GPIO{BUTTON_PIN} pulled low)")
        pin.drive_low()
        await asyncio.sleep(0.3)
        pin.drive_high()
        if self.door is not None and self.door.call is not None:
            self.step("pressed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.call_over.wait(), STORY_TIMEOUT)
        await asyncio.sleep(0.3)  # the last MQTT messages, the BYE's 200, the recordings closed
        self._check_voices()

    async def stop(self) -> None:
        self._quiet = True  # the door's "offline" and the hang-ups are not part of the story
        for task in self._tasks:
            task.cancel()
        if self.door is not None:
            await self.door.stop()
        if self.handset is not None:
            await self.handset.stop(timeout=1.0)
        if self.monitor is not None:
            self.monitor.disconnect()
            self.monitor.loop_stop()
        if self.broker is not None:
            await self.broker.stop()
        self._dir.cleanup()

    def verdict(self) -> int:
        missing = self.progress.missing
        if self.options.broker == "none":
            missing = [m for m in missing if m != dict(view.STEPS)["mqtt"]]
        if missing:
            self.print(f"\ndemo FAILED: {missing[0]} did not happen")
            if len(missing) > 1:
                self.print(f"  nor did: {'; '.join(missing[1:])}")
            return 1
        self.print(f"\ndemo OK: all {len(view.STEPS)} steps happened")
        return 0


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Reads Enter presses on a thread (stdin has no asyncio reader everywhere); None at EOF."""

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="demo-stdin", daemon=True).start()


async def run_demo(options: DemoOptions | None = None, out: TextIO | None = None) -> int:
    options = options or DemoOptions()
    out = out or sys.stdout
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a broker's chatter is not the story
    demo = Demo(options, out)
    result = 1
    try:
        await demo.start()
        await demo.ring_once()
        result = demo.verdict()
        if not options.once:
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            _stdin_lines(asyncio.get_running_loop(), lines)
            while True:
                demo.print("\nPress Enter to ring the doorbell again, Ctrl-C to stop.")
                if await lines.get() is None:
                    break
                demo.progress.reset()
                demo.t0 = time.monotonic()
                await demo.ring_once()
                result = demo.verdict()
    finally:
        await demo.stop()
    return result
