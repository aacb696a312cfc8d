"""GPIO adapters on gpiozero's MockFactory, and the device sections of the configuration.

MockFactory pins run callbacks synchronously in the thread that drives them and keep real time,
so the timing rules are tested with virtual time in test_doorbell.py; here the waits are a few
tens of milliseconds at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from intercom import devices
from intercom.config import (
    ChimeConfig,
    Config,
    DoorbellConfig,
    DoorConfig,
    LedConfig,
    parse_config,
)
from intercom.devices import (
    MAX_PULSE,
    MIN_REST,
    Chime,
    DoorbellButton,
    DoorRelay,
    Led,
    OutputBusy,
)
from intercom.doorbell import Decision, PressFilter
from intercom.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "intercom.example.yaml"


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


def pin(factory: MockFactory, number: int) -> MockPin:
    p = factory.pin(number)
    assert isinstance(p, MockPin)
    return p


async def settle() -> None:
    """Let callbacks handed over with call_soon_threadsafe run."""
    for _ in range(3):
        await asyncio.sleep(0)


# --- the bell button ----------------------------------------------------------------------------


def test_button_takes_its_settings_from_the_config(factory: MockFactory) -> None:
    async def main() -> None:
        cfg = DoorbellConfig(pin=5, pull_up=True, bounce_time=0.05)
        with DoorbellButton(cfg, print, print, pin_factory=factory) as button:
            p = pin(factory, 5)
            assert p.pull == "up" and p.bounce == 0.05 and p.function == "input"
            assert repr(button) == "DoorbellButton(pin=5, released)"
        cfg = DoorbellConfig(pin=5, pull_up=False, bounce_time=0)
        with DoorbellButton(cfg, print, print, pin_factory=factory):
            assert p.pull == "down" and p.bounce is None  # 0 turns gpiozero's debounce off

    asyncio.run(main())


def test_presses_arrive_on_the_loop_thread_with_their_times(factory: MockFactory) -> None:
    """gpiozero calls back on its own threads; the callbacks must run on the loop's."""
    events: list[tuple[str, float, int]] = []
    edge_threads: list[int] = []
    times = iter([10.0, 10.25])

    def clock() -> float:
        edge_threads.append(threading.get_ident())
        return next(times)

    async def main() -> int:
        def on(kind: str) -> Callable[[float], None]:
            return lambda t: events.append((kind, t, threading.get_ident()))

        cfg = DoorbellConfig(pin=17)
        with DoorbellButton(cfg, on("press"), on("release"), pin_factory=factory, clock=clock) as b:
            p = pin(factory, 17)
            await asyncio.to_thread(p.drive_low)  # pull-up: pressing connects to ground
            await settle()
            assert b.is_pressed and repr(b) == "DoorbellButton(pin=17, pressed)"
            await asyncio.to_thread(p.drive_high)
            await settle()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert events == [("press", 10.0, loop_thread), ("release", 10.25, loop_thread)]
    assert edge_threads and loop_thread not in edge_threads


def test_the_handler_on_gpiozeros_thread_only_schedules(factory: MockFactory) -> None:
    """Nothing runs on the edge's thread: the callback waits for the loop."""
    ran: list[float] = []

    async def main() -> None:
        with DoorbellButton(DoorbellConfig(), ran.append, ran.append, pin_factory=factory):
            # Press on another thread while the loop is blocked: had the handler called back
            # directly, ``ran`` would already hold the press.
            edge = threading.Thread(target=pin(factory, 17).drive_low)
            edge.start()
            edge.join()
            assert ran == []
            await settle()
            assert len(ran) == 1
            pin(factory, 17).drive_high()  # closing a held Button waits for gpiozero's hold time

    asyncio.run(main())


def test_pull_down_button_is_pressed_by_driving_high(factory: MockFactory) -> None:
    kinds: list[str] = []

    async def main() -> None:
        cfg = DoorbellConfig(pull_up=False)
        with DoorbellButton(
            cfg,
            lambda t: kinds.append("press"),
            lambda t: kinds.append("release"),
            pin_factory=factory,
        ):
            p = pin(factory, 17)
            await asyncio.to_thread(p.drive_high)
            await asyncio.to_thread(p.drive_low)
            await settle()

    asyncio.run(main())
    assert kinds == ["press", "release"]


def test_button_through_the_press_filter(factory: MockFactory) -> None:
    """Edges from the pin, stamped by a virtual clock, decided by the filter on the loop."""
    clock_now = [0.0]
    decisions: list[Decision] = []

    async def main() -> None:
        f = PressFilter(min_press=0.1, cooldown=10)
        with DoorbellButton(
            DoorbellConfig(),
            f.pressed,
            lambda t: decisions.append(f.released(t)),
            pin_factory=factory,
            clock=lambda: clock_now[0],
        ):
            p = pin(factory, 17)

            async def edge(drive: Callable[[], None], at: float) -> None:
                clock_now[0] = at
                await asyncio.to_thread(drive)
                await settle()

            for start in (0.0, 0.01, 0.02):  # spikes of 2 ms
                await edge(p.drive_low, start)
                await edge(p.drive_high, start + 0.002)
            await edge(p.drive_low, 1.0)  # a real press of 0.3 s
            await edge(p.drive_high, 1.3)
            await edge(p.drive_low, 2.0)  # pressed again during the cooldown
            await edge(p.drive_high, 2.4)
            assert f.counts.presses == 5

    asyncio.run(main())
    assert decisions == [Decision.NOISE] * 3 + [Decision.RING, Decision.COOLDOWN]


def test_button_close_is_safe_twice_and_stops_callbacks(factory: MockFactory) -> None:
    ran: list[float] = []

    async def main() -> None:
        button = DoorbellButton(DoorbellConfig(), ran.append, ran.append, pin_factory=factory)
        button.close()
        button.close()
        assert button.closed and not button.is_pressed
        assert repr(button) == "DoorbellButton(pin=17, closed)"
        pin(factory, 17).drive_low()
        await settle()
        # The pin is free again for another device.
        DoorbellButton(DoorbellConfig(), ran.append, ran.append, pin_factory=factory).close()

    asyncio.run(main())
    assert ran == []


def test_a_press_after_the_loop_closed_is_dropped_quietly(factory: MockFactory) -> None:
    loop = asyncio.new_event_loop()
    button = DoorbellButton(DoorbellConfig(), print, print, pin_factory=factory, loop=loop)
    loop.close()
    try:
        pin(factory, 17).drive_low()  # would raise RuntimeError on gpiozero's thread
    finally:
        button.close()


def test_button_needs_a_loop(factory: MockFactory) -> None:
    with pytest.raises(RuntimeError):
        DoorbellButton(DoorbellConfig(), print, print, pin_factory=factory)


# --- the door relay -----------------------------------------------------------------------------


def test_relay_is_off_at_start_pulses_and_ends_off(factory: MockFactory) -> None:
    async def main() -> None:
        relay = DoorRelay(DoorConfig(pin=23), pin_factory=factory)
        p = pin(factory, 23)
        assert p.function == "output" and p.state is False and not relay.is_open
        assert relay.pulse(0.1) == 0.1
        assert p.state is True and relay.is_open
        assert repr(relay) == "DoorRelay(pin=23, on)"
        await asyncio.sleep(0.02)
        assert p.state is True
        await asyncio.sleep(0.15)
        assert p.state is False and not relay.is_open
        relay.close()
        p.assert_states([False, True, False])
        assert len(p.states) == 3

    asyncio.run(main())


def test_active_low_relay(factory: MockFactory) -> None:
    async def main() -> None:
        with DoorRelay(DoorConfig(active_high=False), pin_factory=factory) as relay:
            p = pin(factory, 23)
            assert p.state is True and not relay.is_open  # high is off for this board
            relay.pulse(0.02)
            assert p.state is False and relay.is_open
            await asyncio.sleep(0.05)
            assert p.state is True and not relay.is_open
        assert p.function == "input"  # released by close(), after switching off
        # [input, floating] then straight to high: gpiozero claims the pin with its level set.
        p.assert_states([False, True, False, True])
        assert len(p.states) == 4

    asyncio.run(main())


def test_pulse_is_capped_at_ten_seconds(
    factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        real = loop.call_later

        def spy(delay: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
            delays.append(delay)
            return real(delay, callback, *args)

        monkeypatch.setattr(loop, "call_later", spy)
        relay = DoorRelay(DoorConfig(), pin_factory=factory)
        p = pin(factory, 23)
        assert relay.pulse(3600) == MAX_PULSE == 10.0
        assert p.state is True
        relay.close()  # off at once, the pending timer cancelled
        assert p.state is False and relay.closed and not relay.is_open
        with DoorRelay(DoorConfig(pin=24), pin_factory=factory) as other:
            assert other.pulse() == 3.0  # door.pulse
        await asyncio.sleep(0)

    asyncio.run(main())
    assert delays == [10.0, 3.0]


def test_a_pulse_during_a_pulse_is_refused_and_does_not_extend_it(factory: MockFactory) -> None:
    async def main() -> None:
        with DoorRelay(DoorConfig(), pin_factory=factory) as relay:
            p = pin(factory, 23)
            relay.pulse(0.2)
            await asyncio.sleep(0.1)
            with pytest.raises(OutputBusy) as info:
                relay.pulse(0.2)  # would have ended 0.2 s from here if restarted
            assert info.value.state == "on" and 0.2 < info.value.ready_in <= 1.1
            await asyncio.sleep(0.15)
            assert p.state is False  # ended 0.2 s after the first request
            with pytest.raises(OutputBusy) as info:
                relay.pulse(0.2)  # resting now
            assert info.value.state == "resting" and 0 < info.value.ready_in <= MIN_REST
            p.assert_states([False, True, False])
            assert len(p.states) == 3

    asyncio.run(main())


def _on_off_times(p: MockPin) -> tuple[list[float], list[float]]:
    """The durations of every complete on and of every off between two ons, from the pin's
    history (each entry's timestamp is how long the state before it lasted)."""
    states = p.states
    on = [states[i].timestamp for i in range(1, len(states)) if states[i - 1].state]
    off = [
        states[i].timestamp
        for i in range(2, len(states))
        if states[i].state and not states[i - 1].state
    ]
    return on, off


def test_a_stream_of_requests_never_holds_the_relay_on(
    factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests every 10 ms for 0.7 s: pulses of 0.1 s, each followed by at least as long off.
    (Before the off-time existed, each request restarted the pulse: on for the whole stream.)"""
    monkeypatch.setattr(devices, "MIN_REST", 0.05)  # so the rest is the pulse's own length
    taken: list[float] = []

    async def main() -> None:
        with DoorRelay(DoorConfig(pulse=0.1), pin_factory=factory) as relay:
            loop = asyncio.get_running_loop()
            end = loop.time() + 0.7
            while loop.time() < end:
                with contextlib.suppress(OutputBusy):
                    taken.append(relay.pulse())
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.15)

    asyncio.run(main())
    p = pin(factory, 23)
    on, off = _on_off_times(p)
    assert 2 <= len(taken) <= 4 and len(on) == len(taken), (taken, p.states)
    assert all(0.095 <= t <= 0.13 for t in on), on
    assert off and all(t >= 0.1 for t in off), off


def test_the_rest_is_at_least_min_rest_after_a_short_pulse(
    factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "MIN_REST", 0.15)

    async def main() -> None:
        with DoorRelay(DoorConfig(), pin_factory=factory) as relay:
            relay.pulse(0.02)
            await asyncio.sleep(0.1)  # off since 0.02 s, longer than the pulse, within MIN_REST
            with pytest.raises(OutputBusy, match="resting"):
                relay.pulse(0.02)
            await asyncio.sleep(0.1)
            assert relay.pulse(0.02) == 0.02

    asyncio.run(main())


@pytest.mark.parametrize("seconds", [0, -1, math.nan])
def test_pulse_refuses_nonsense(factory: MockFactory, seconds: float) -> None:
    async def main() -> None:
        with DoorRelay(DoorConfig(), pin_factory=factory) as relay:
            with pytest.raises(ValueError):
                relay.pulse(seconds)
            assert pin(factory, 23).state is False

    asyncio.run(main())


def test_pulse_needs_the_loop_and_an_open_device(factory: MockFactory) -> None:
    relay = DoorRelay(DoorConfig(), pin_factory=factory)
    with pytest.raises(RuntimeError):
        relay.pulse()  # no running loop: nothing would ever switch it off
    assert pin(factory, 23).state is False
    relay.close()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="closed"):
            relay.pulse()

    asyncio.run(main())


def test_relay_close_is_safe_twice_and_registered_at_exit(
    factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr(devices.atexit, "register", registered.append)
    monkeypatch.setattr(devices.atexit, "unregister", registered.remove)

    async def main() -> None:
        relay = DoorRelay(DoorConfig(), pin_factory=factory)
        assert registered == [relay.close]
        relay.pulse()
        registered[0]()  # what the interpreter does at exit
        assert pin(factory, 23).state is False
        assert registered == []
        relay.close()
        assert repr(relay) == "DoorRelay(pin=23, closed)"

    asyncio.run(main())


def test_default_pin_factory_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    with DoorRelay(DoorConfig()) as relay:
        assert isinstance(Device.pin_factory, MockFactory)
        assert not relay.is_open
    Device.pin_factory.close()


# --- chime and LED ------------------------------------------------------------------------------


def test_chime_rings_for_its_pulse(factory: MockFactory) -> None:
    async def main() -> None:
        with Chime(ChimeConfig(pin=27, pulse=0.05), pin_factory=factory) as chime:
            p = pin(factory, 27)
            assert p.state is False and not chime.is_ringing
            assert chime.ring() == 0.05
            assert p.state is True and chime.is_ringing
            assert chime.ring() == 0.0  # ringing already: neither extended nor an error
            await asyncio.sleep(0.1)
            assert p.state is False
            assert chime.ring() == 0.0  # resting
        assert p.state is False
        chime.close()
        with Chime(ChimeConfig(pin=26), pin_factory=factory) as chime:
            assert chime.ring(60) == MAX_PULSE

    asyncio.run(main())


def test_led_blinks_lights_and_goes_dark(factory: MockFactory) -> None:
    with Led(LedConfig(pin=22), pin_factory=factory) as led:
        p = pin(factory, 22)
        assert p.state is False and not led.is_lit
        led.blink(on_time=0.005, off_time=0.005)
        for _ in range(200):
            if len(p.states) >= 4:
                break
            threading.Event().wait(0.005)
        assert [s.state for s in p.states[:4]] == [False, True, False, True]
        led.on()
        assert p.state is True and led.is_lit and repr(led) == "Led(pin=22, lit)"
        led.off()
        assert p.state is False and not led.is_lit
    led.close()
    led.on()  # after close: nothing, not an error
    assert repr(led) == "Led(pin=22, closed)"


# --- the device sections of the configuration -----------------------------------------------------

BASE = {"sip": {"server": "fritz.box", "username": "620", "password": "p"}}


def parse(**sections: Any) -> Config:
    return parse_config({**BASE, **sections}, base_dir=Path("/"), env={})


def errors(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(**sections)
    return info.value.errors


def test_sections_are_optional_and_default_to_the_documented_wiring() -> None:
    bare = parse()
    assert (bare.doorbell, bare.chime, bare.led, bare.door) == (None, None, None, None)
    config = parse(doorbell={}, chime={}, led={}, door={})
    assert config.doorbell == DoorbellConfig(
        pin=17, pull_up=True, bounce_time=0.05, min_press=0.1, cooldown=10, while_calling="ignore"
    )
    assert config.chime == ChimeConfig(pin=27, pulse=1.0)
    assert config.led == LedConfig(pin=22)
    assert config.door is not None and config.door.pin == 23


def test_example_file_shows_the_hardware_pins_and_the_defaults() -> None:
    """The commented-out device sections, uncommented, must be the defaults (hardware/ wires
    17, 27, 22 and 23); the doorbell section is on in the example."""
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(
        r"^# ((?:chime|led|door):\n(?:#   .*\n|#\n)+)",
        lambda m: re.sub(r"^#(?: |$)", "", m.group(0), flags=re.MULTILINE),
        text,
        flags=re.MULTILINE,
    )
    from intercom.config import _load_yaml

    data = _load_yaml(uncommented, "example")
    assert isinstance(data, dict)
    config = parse_config(data, base_dir=Path("/"), env={})
    assert config.doorbell == DoorbellConfig() and config.doorbell.pin == 17
    assert config.chime == ChimeConfig() and config.chime.pin == 27
    assert config.led == LedConfig() and config.led.pin == 22
    assert config.door == DoorConfig() and config.door.pin == 23
    assert not config.door.can_open


def test_two_devices_on_one_pin_name_both_keys() -> None:
    assert errors(doorbell={"pin": 22}, led={}) == [
        "led.pin: GPIO 22 is already used by doorbell.pin; got 22; give each device its own pin"
    ]
    assert errors(chime={"pin": 23}, door={"pin": "23"}, led={"pin": 23}) == [
        "led.pin: GPIO 23 is already used by chime.pin; got 23; give each device its own pin",
        "door.pin: GPIO 23 is already used by chime.pin; got '23'; give each device its own pin",
    ]


def test_pin_clash_is_reported_with_the_other_problems() -> None:
    assert errors(doorbell={"pin": 27, "cooldown": -1}, chime={}, door={"pin": 99}) == [
        "doorbell.cooldown: must be between 0 and 600 seconds; got -1",
        "chime.pin: GPIO 27 is already used by doorbell.pin; got 27; give each device its own pin",
        "door.pin: must be between 2 and 27 (BCM numbering); got 99",
    ]


def test_absent_sections_claim_no_pin() -> None:
    config = parse(doorbell={"pin": 27}, chime=None, door={"pin": 22})
    assert config.doorbell is not None and config.doorbell.pin == 27
    assert config.chime is None


@pytest.mark.parametrize(
    ("section", "key", "value", "line"),
    [
        ("doorbell", "pin", 1, "doorbell.pin: must be between 2 and 27 (BCM numbering); got 1"),
        (
            "doorbell",
            "pin",
            "GPIO17",
            "doorbell.pin: must be a whole number between 2 and 27 (BCM numbering); got 'GPIO17'",
        ),
        (
            "doorbell",
            "bounce_time",
            2,
            "doorbell.bounce_time: must be between 0 and 1 seconds; got 2",
        ),
        (
            "doorbell",
            "min_press",
            -0.1,
            "doorbell.min_press: must be between 0 and 5 seconds; got -0.1",
        ),
        (
            "doorbell",
            "cooldown",
            601,
            "doorbell.cooldown: must be between 0 and 600 seconds; got 601",
        ),
        (
            "doorbell",
            "cooldown",
            "ten",
            "doorbell.cooldown: must be a number between 0 and 600 seconds; got 'ten'",
        ),
        (
            "doorbell",
            "while_calling",
            "hangup",
            "doorbell.while_calling: must be one of ignore, hangup_and_ring; got 'hangup'",
        ),
        ("doorbell", "pull_up", "up", "doorbell.pull_up: must be true or false; got 'up'"),
        ("chime", "pulse", 11, "chime.pulse: must be between 0.05 and 10 seconds; got 11"),
        ("chime", "pulse", 0, "chime.pulse: must be between 0.05 and 10 seconds; got 0"),
        ("led", "pin", 28, "led.pin: must be between 2 and 27 (BCM numbering); got 28"),
    ],
)
def test_device_values_refused(section: str, key: str, value: object, line: str) -> None:
    assert errors(**{section: {key: value}}) == [line]


def test_device_section_mistakes_get_hints() -> None:
    assert errors(led={"pin": 22, "blink": True}) == [
        "led.blink: unknown key; allowed keys here: pin"
    ]
    [error] = errors(doorbell={"bounce": 0.1})
    assert error.endswith("did you mean 'bounce_time'?")
    [error] = errors(doorbell=17)
    assert error.startswith("doorbell: must be a section of keys; got 17; indent its keys")


def test_while_calling_ignores_case() -> None:
    config = parse(doorbell={"while_calling": "Hangup_And_Ring"})
    assert config.doorbell is not None and config.doorbell.while_calling == "hangup_and_ring"
