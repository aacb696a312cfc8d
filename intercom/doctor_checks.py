"""The doctor's checks of what sits at the door itself: the sound card, the MQTT broker and the
GPIO pins. The SIP side, the order of the checks and the report are in :mod:`intercom.doctor`.

Each check proves the thing works rather than that it exists: the microphone records and its
level is read, the speaker plays a beep, the broker echoes a message back, each pin is claimed.
Nothing here moves the door: the strike relay is claimed switched off and released switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from intercom.config import Config
from intercom.errors import ParseError
from intercom.media.stream import dbfs
from intercom.sip.message import SipResponse, parse_message

if TYPE_CHECKING:
    from gpiozero.pins import Factory

#: Below this the microphone is taken to give silence: a real one in a quiet room still picks up
#: its own noise at -60 to -50 dBFS, while a muted capture or an unplugged jack gives -90 or less.
SILENCE_DBFS = -70.0
#: How much the microphone check records, and how long the speaker's beep lasts.
RECORD_SECONDS = 0.5
BEEP_SECONDS = 0.5
_RATE = 16000
_FRAME = 0.020
#: Time for a pin's pull-up to settle before the button is read (microseconds in practice).
_SETTLE = 0.05

_CARD_FIX = "set audio.input/audio.output to a device that `intercom devices` lists"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report: what was checked, whether it passed, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"[{mark}] {self.name}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix else "")


# -- the sound card ----------------------------------------------------------------------------


def audio_checks(config: Config) -> list[Check]:
    """Record a moment from the microphone and play a beep; blocking (run it in a thread)."""
    return [_microphone(config.audio.input), _speaker(config.audio.output)]


def _paced(kind: str, frames: int, step: Any) -> None:
    """Call ``step()`` ``frames`` times, every 20 ms for a sound card (its streams run on the
    card's clock and give nothing faster), back to back for files and tones."""
    start = time.monotonic()
    for n in range(frames):
        step()
        if kind == "device":
            time.sleep(max(0.0, start + (n + 1) * _FRAME - time.monotonic()))


def _microphone(spec: str | int) -> Check:
    from intercom.media.audio import AudioDeviceError, open_source, parse_spec

    try:
        kind = parse_spec(spec).kind
        if kind == "null":
            return Check(
                "microphone", True, "null: no microphone, by choice; the door sends silence"
            )
        source: Any = open_source(spec, _RATE)
    except Exception as exc:
        return Check("microphone", False, f"{spec!r}: {exc}", _CARD_FIX)
    samples = int(_RATE * _FRAME)
    # A sound card gives silence while its stream fills a cushion: record a little longer.
    frames = round(RECORD_SECONDS / _FRAME) + (10 if kind == "device" else 0)
    peak = -120.0
    try:

        def step() -> None:
            nonlocal peak
            peak = max(peak, dbfs(source.read(samples)))

        _paced(kind, frames, step)
        failed = bool(getattr(source, "failed", False))
    except (AudioDeviceError, OSError, ValueError) as exc:
        return Check("microphone", False, f"{spec!r} stopped while recording: {exc}", _CARD_FIX)
    finally:
        with contextlib.suppress(Exception):
            source.close()
    if failed:
        return Check("microphone", False, f"{spec!r} opened but delivered no audio", _CARD_FIX)
    heard = f"{spec!r}: recorded {RECORD_SECONDS:g} s, peak {peak:.0f} dBFS"
    if peak >= SILENCE_DBFS:
        return Check("microphone", True, heard)
    if kind == "file":
        return Check(
            "microphone", False, f"{heard}: the file is silent", "use a WAV file with sound"
        )
    fix = "check the mixer's capture level (alsamixer, F4) and the microphone's plug"
    return Check("microphone", False, f"{heard}: the microphone gives silence", fix)


def _speaker(spec: str | int) -> Check:
    from intercom.media.audio import ToneSource, open_sink, parse_spec

    try:
        kind = parse_spec(spec).kind
        if kind == "null":
            return Check("speaker", True, "null: no speaker, by choice; callers are not heard")
        sink: Any = open_sink(spec, _RATE)
    except Exception as exc:
        return Check("speaker", False, f"{spec!r}: {exc}", _CARD_FIX)
    beep = ToneSource(1000, rate=_RATE)
    samples = int(_RATE * _FRAME)
    try:
        _paced(kind, round(BEEP_SECONDS / _FRAME), lambda: sink.write(beep.read(samples)))
        if kind == "device":
            time.sleep(0.2)  # let the card play what is queued before the stream is closed
        failed = bool(getattr(sink, "failed", False))
    except Exception as exc:
        return Check("speaker", False, f"{spec!r} stopped while playing: {exc}", _CARD_FIX)
    finally:
        with contextlib.suppress(Exception):
            sink.close()
    if failed:
        return Check("speaker", False, f"{spec!r} opened but stopped playing", _CARD_FIX)
    return Check("speaker", True, f"{spec!r}: played a {BEEP_SECONDS:g} s beep (1 kHz)")


# -- MQTT --------------------------------------------------------------------------------------


def mqtt_check(config: Config, timeout: float) -> list[Check]:
    """Connect, subscribe, publish and get the message back; blocking (run it in a thread)."""
    mqtt_cfg = config.mqtt
    if mqtt_cfg is None:
        return [Check("MQTT", True, "not configured (no mqtt section)")]
    import paho.mqtt.client as mqtt

    result: dict[str, Any] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pi-intercom-doctor")
    if mqtt_cfg.username is not None:
        client.username_pw_set(mqtt_cfg.username, mqtt_cfg.secret())
    if mqtt_cfg.tls is not None:
        tls = mqtt_cfg.tls
        # As the daemon's bridge does, or a broker that wants a client certificate fails here.
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
        )
        if tls.insecure:
            client.tls_insecure_set(True)
    topic = f"{config.mqtt_base_topic}/doctor"
    client.on_connect = lambda c, u, f, reason, p: result.update(reason=str(reason))
    client.on_message = lambda c, u, msg: result.update(echo=msg.payload)
    broker = f"{mqtt_cfg.host}:{mqtt_cfg.port}"
    try:
        client.connect(mqtt_cfg.host, mqtt_cfg.port, keepalive=10)
    except (OSError, ValueError) as exc:
        fix = (
            "check mqtt.host and mqtt.port, and that the broker runs (in Home Assistant: "
            "Settings > Add-ons > Mosquitto broker is started)"
        )
        if isinstance(exc, ConnectionRefusedError):
            what = f"no MQTT broker runs at {broker} (the Pi got 'connection refused')"
        elif isinstance(exc, OSError) and exc.strerror:
            what = f"cannot reach the broker at {broker}: {exc.strerror}"
        else:
            what = f"cannot reach the broker at {broker}: {exc}"
        return [Check("MQTT", False, what, fix)]
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while "reason" not in result and time.monotonic() < deadline:
            time.sleep(0.02)
        reason = result.get("reason")
        if reason != "Success":
            fix = "check mqtt.username and the MQTT password"
            return [Check("MQTT", False, f"{broker} refused the connection: {reason}", fix)]
        client.subscribe(topic, qos=1)
        time.sleep(0.2)
        client.publish(topic, "ping", qos=1)
        while "echo" not in result and time.monotonic() < deadline + timeout:
            time.sleep(0.02)
        if result.get("echo") != b"ping":
            fix = "the broker's ACL may forbid the door's topics"
            return [Check("MQTT", False, f"no round trip on {topic}", fix)]
        with contextlib.suppress(Exception):
            client.publish(topic, "", qos=1, retain=True)
        detail = f"{broker}: connected, publish and subscribe work"
        return [Check("MQTT", True, f"{detail}; discovery under {mqtt_cfg.discovery_prefix}/")]
    finally:
        client.disconnect()
        client.loop_stop()


# -- GPIO --------------------------------------------------------------------------------------

_NO_FACTORY_FIX = (
    "on a PC, set GPIOZERO_PIN_FACTORY=mock to try the config; on a Pi, install python3-lgpio "
    "(sudo apt install python3-lgpio; scripts/install-pi does it)"
)


def _pin_fix(section: str) -> str:
    return (
        f"check {section}.pin (the BCM GPIO number, 2-27, not the header pin number) and that no "
        "other program holds the pin: stop the intercom service first "
        "(sudo systemctl stop pi-intercom)"
    )


def _factory_name(factory: Any, env: str | None) -> str:
    name = type(factory).__name__ if factory is not None else "?"
    if env:
        return f"{name} (GPIOZERO_PIN_FACTORY={env})"
    return name


async def gpio_checks(config: Config, *, pin_factory: Factory | None = None) -> list[Check]:
    """Claim each configured pin the way the intercom does, read the button once, release all.

    The relay, chime and LED are claimed off and released off: the doctor never pulses the
    strike (a check that opens the door is not one to run unattended). Runs on the event loop,
    where the doorbell's callbacks would go. ``pin_factory`` None is gpiozero's default, as in
    the daemon (``GPIOZERO_PIN_FACTORY`` or the first factory that loads).
    """
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory

    sections = [s for s in _GPIO_SECTIONS if getattr(config, s) is not None]
    if not sections:
        return [Check("GPIO", True, "no GPIO configured (no doorbell, door, chime or led)")]
    env = os.environ.get("GPIOZERO_PIN_FACTORY")
    opened: list[Any] = []
    lines: list[Check] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero's "falling back from ..." for each factory
            for section in sections:
                name, pin = _GPIO_SECTIONS[section], getattr(config, section).pin
                try:
                    device = _claim(config, section, pin_factory)
                except BadPinFactory as exc:
                    where = f"GPIOZERO_PIN_FACTORY={env}: " if env else "no GPIO pin factory: "
                    return [Check("GPIO", False, f"{where}{exc}", _NO_FACTORY_FIX)]
                except Exception as exc:
                    lines.append(Check(name, False, f"GPIO {pin}: {exc}", _pin_fix(section)))
                    continue
                opened.append(device)
                lines.append(await _device_state(config, section, device))
        factory = pin_factory if pin_factory is not None else Device.pin_factory
    finally:
        for device in reversed(opened):
            with contextlib.suppress(Exception):
                device.close()
    detail = f"pin factory {_factory_name(factory, env)}"
    if type(factory).__name__ == "MockFactory":
        detail += ": simulated pins, nothing on the board was checked"
    return [Check("GPIO", True, detail), *lines]


#: The config sections with a pin, in the order they are checked, and their names in the report.
_GPIO_SECTIONS = {
    "doorbell": "doorbell button",
    "door": "door relay",
    "chime": "chime",
    "led": "LED",
}


def _claim(config: Config, section: str, factory: Factory | None) -> Any:
    """The device of ``section`` as the daemon builds it (:mod:`intercom.devices`)."""
    from intercom.devices import Chime, DoorbellButton, DoorRelay, Led

    if section == "doorbell" and config.doorbell is not None:
        loop = asyncio.get_running_loop()
        return DoorbellButton(config.doorbell, _ignore, _ignore, pin_factory=factory, loop=loop)
    if section == "door" and config.door is not None:
        return DoorRelay(config.door, pin_factory=factory)
    if section == "chime" and config.chime is not None:
        return Chime(config.chime, pin_factory=factory)
    if section == "led" and config.led is not None:
        return Led(config.led, pin_factory=factory)
    raise ValueError(f"no {section} section")


def _ignore(_t: float) -> None:
    """The doctor listens to no press: the button is only read."""


async def _device_state(config: Config, section: str, device: Any) -> Check:
    name = _GPIO_SECTIONS[section]
    if section == "doorbell" and config.doorbell is not None:
        pin = config.doorbell.pin
        await asyncio.sleep(_SETTLE)
        pull = "pull-up" if config.doorbell.pull_up else "pull-down"
        if device.is_pressed:
            fix = (
                "wrong pull-up or wrong pin: a button between the pin and GND wants "
                "doorbell.pull_up: true, one between the pin and 3.3 V wants pull_up: false; "
                "check doorbell.pin too (BCM number); do not hold the button during the check"
            )
            detail = f"GPIO {pin} ({pull}): the button reads pressed with nothing pressed"
            return Check(name, False, detail, fix)
        return Check(name, True, f"GPIO {pin} claimed ({pull}), reads not pressed")
    if section == "door" and config.door is not None:
        level = "active high" if config.door.active_high else "active low"
        return Check(name, True, f"GPIO {config.door.pin} claimed ({level}), left off; not pulsed")
    if section == "led" and config.led is not None:
        return Check(name, True, f"GPIO {config.led.pin} claimed, left dark")
    return Check(name, True, f"GPIO {device.pin} claimed, left off")


def responses_in(wire: list[tuple[str, float, bytes]]) -> Iterator[SipResponse]:
    """The SIP responses the door received, in order, from ``Phone.wire`` (what the PBX said is
    what the doctor reports, so it reads the wire rather than the agent's summary of it)."""
    for direction, _t, data in wire:
        if direction != "received":
            continue
        try:
            msg = parse_message(data)
        except ParseError:
            continue
        if isinstance(msg, SipResponse):
            yield msg
