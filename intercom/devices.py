"""The GPIO devices at the door: bell button, door strike relay, chime and LED (gpiozero).

Thin adapters. What a press means lives in :mod:`intercom.doorbell` and who may open the door
in :mod:`intercom.door`; this module only turns edges into timestamps and pulses into pin
states, which keeps everything that can go wrong with GPIO in one small place.

* Every device takes ``pin_factory=`` like gpiozero's own. ``None`` is gpiozero's default,
  chosen lazily and honouring ``GPIOZERO_PIN_FACTORY`` (``mock`` runs the intercom on a PC), and
  tests pass a :class:`gpiozero.pins.mock.MockFactory`.
* gpiozero calls ``when_pressed``/``when_released`` on its own threads. Everything else in the
  intercom belongs to the asyncio loop, so those callbacks do nothing but stamp the time and
  hand over with :meth:`asyncio.AbstractEventLoop.call_soon_threadsafe`.
* The door relay must never stay energised: it starts off, every pulse is capped at
  :data:`MAX_PULSE` seconds and ended by the loop's own timer, and :meth:`DoorRelay.close` (also
  registered with :mod:`atexit`) switches it off before releasing the pin, so that a crash or a
  stop in the middle of a pulse leaves the door locked and the strike's coil cool.
* A stream of requests cannot hold it on either. A pulse asked for while the relay is on is
  refused (:class:`OutputBusy`), never extended or restarted, and after every pulse the relay
  rests (stays off) for as long as the pulse lasted, and at least :data:`MIN_REST` seconds. So
  however the requests come, the coil is powered at most half of the time and never for more
  than one pulse in a row: it cools for at least as long as it heated, which is what a strike
  rated for intermittent duty needs, and a short pulse cannot be chattered at a few hertz, which
  wears the relay's contacts and buzzes the door. The chime is a pulsed output too, with the same
  rules; a ring while it rings or rests is simply not sounded.
* ``close()`` may be called any number of times, and every device is a context manager.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from gpiozero import LED, Button, DigitalOutputDevice

from intercom.config import MAX_PULSE

if TYPE_CHECKING:
    from gpiozero.pins import Factory

    from intercom.config import ChimeConfig, DoorbellConfig, DoorConfig, LedConfig

__all__ = ["MAX_PULSE", "MIN_REST", "Chime", "DoorRelay", "DoorbellButton", "Led", "OutputBusy"]

MIN_REST = 1.0
"""Seconds a pulsed output stays off after a pulse, at the least; a longer pulse rests as long
as it lasted."""


class _Closing:
    """``close()`` once, from ``__exit__`` and :mod:`atexit` as well."""

    _closed = False

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DoorbellButton(_Closing):
    """The bell button. ``on_press(t)`` and ``on_release(t)`` run on ``loop`` with the
    ``clock()`` time of the edge (taken on gpiozero's thread, so a busy loop does not stretch or
    shorten a press).

    Construct it on the loop's thread, or pass ``loop``. Debouncing is gpiozero's
    (``bounce_time``; 0 turns it off); the press rules are :class:`intercom.doorbell.PressFilter`.
    """

    def __init__(
        self,
        cfg: DoorbellConfig,
        on_press: Callable[[float], Any],
        on_release: Callable[[float], Any],
        *,
        pin_factory: Factory | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = asyncio.get_running_loop() if loop is None else loop
        self._on_press = on_press
        self._on_release = on_release
        self._clock = clock
        self.pin = cfg.pin
        self._button = Button(
            cfg.pin,
            pull_up=cfg.pull_up,
            bounce_time=cfg.bounce_time or None,
            pin_factory=pin_factory,
        )
        self._button.when_pressed = self._pressed
        self._button.when_released = self._released

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("pressed" if self.is_pressed else "released")
        return f"DoorbellButton(pin={self.pin}, {state})"

    @property
    def is_pressed(self) -> bool:
        return not self._closed and bool(self._button.is_pressed)

    def _pressed(self) -> None:
        self._hand_over(self._on_press)

    def _released(self) -> None:
        self._hand_over(self._on_release)

    def _hand_over(self, callback: Callable[[float], Any]) -> None:
        """Runs on a gpiozero thread: touch nothing but the loop's thread-safe entry."""
        # A press while the loop is shutting down has nowhere to go; without this, gpiozero's
        # thread would print a traceback for it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, self._clock())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._button.when_pressed = None
        self._button.when_released = None
        self._button.close()


class OutputBusy(RuntimeError):
    """A pulse was asked for while the output is on or resting; nothing changed.

    ``state`` is ``"on"`` (a pulse is running) or ``"resting"`` (the off-time after one), and
    ``ready_in`` the seconds until a pulse would be taken.
    """

    def __init__(self, state: Literal["on", "resting"], ready_in: float) -> None:
        super().__init__(f"output is {state}; ready in {ready_in:.1f} s")
        self.state = state
        self.ready_in = ready_in


class _PulsedOutput(_Closing):
    """A relay driven in pulses ended by the asyncio loop's timer, with a rest after each; off
    at start, at ``close()`` and at interpreter exit."""

    def __init__(self, pin: int, *, active_high: bool, pin_factory: Factory | None) -> None:
        self.pin = pin
        self._timer: asyncio.TimerHandle | None = None
        self._on_until = -math.inf  # loop time at which the running pulse ends
        self._rest_until = -math.inf  # loop time before which no new pulse is taken
        self._device = DigitalOutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )
        atexit.register(self.close)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("on" if self._is_on() else "off")
        return f"{type(self).__name__}(pin={self.pin}, {state})"

    def _is_on(self) -> bool:
        return not self._closed and bool(self._device.value)

    def _pulse(self, seconds: float) -> float:
        """Switch on for ``seconds`` (at most :data:`MAX_PULSE`), from the loop's thread.

        Raises :class:`OutputBusy` while a pulse runs or during the rest after it: a request
        then neither extends nor restarts anything, so no stream of requests holds it on.
        """
        if not seconds > 0:  # also refuses NaN
            raise ValueError(f"pulse must be a positive number of seconds, not {seconds!r}")
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        seconds = min(float(seconds), float(MAX_PULSE))
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._timer is not None:
            raise OutputBusy("on", max(0.0, self._on_until - now) + self._rest_after(seconds))
        if now < self._rest_until:
            raise OutputBusy("resting", self._rest_until - now)
        self._device.on()
        self._on_until = now + seconds
        self._timer = loop.call_later(seconds, self._end_pulse, seconds)
        return seconds

    def busy(self) -> Literal["on", "resting"] | None:
        """What a pulse asked for now would meet: ``on``, ``resting`` or None (it would be
        taken). From the loop's thread."""
        if self._timer is not None:
            return "on"
        if asyncio.get_running_loop().time() < self._rest_until:
            return "resting"
        return None

    @staticmethod
    def _rest_after(seconds: float) -> float:
        return max(seconds, MIN_REST)

    def _end_pulse(self, seconds: float) -> None:
        self._timer = None
        if not self._closed:
            self._device.off()
            self._rest_until = asyncio.get_running_loop().time() + self._rest_after(seconds)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._device.off()
        finally:
            self._device.close()


class DoorRelay(_PulsedOutput):
    """The door strike relay. :meth:`pulse` opens the door for a while; nothing here decides
    whether it may (that is :class:`intercom.door.DoorRules`)."""

    def __init__(self, cfg: DoorConfig, *, pin_factory: Factory | None = None) -> None:
        super().__init__(cfg.pin, active_high=cfg.active_high, pin_factory=pin_factory)
        self.default_pulse = cfg.pulse

    @property
    def is_open(self) -> bool:
        """Whether the strike is powered (the door can be pushed open) right now."""
        return self._is_on()

    def pulse(self, seconds: float | None = None) -> float:
        """Power the strike for ``seconds`` (default ``door.pulse``), capped at
        :data:`MAX_PULSE`; returns the seconds actually used. Call it on the loop's thread.

        Raises :class:`OutputBusy` while the strike is powered or resting after a pulse."""
        return self._pulse(self.default_pulse if seconds is None else seconds)


class Chime(_PulsedOutput):
    """A bell or buzzer on a relay, rung locally on every ring so that the door works as a
    plain doorbell with the network, the PBX or the intercom's SIP side down."""

    def __init__(self, cfg: ChimeConfig, *, pin_factory: Factory | None = None) -> None:
        super().__init__(cfg.pin, active_high=True, pin_factory=pin_factory)
        self.default_pulse = cfg.pulse

    @property
    def is_ringing(self) -> bool:
        return self._is_on()

    def ring(self, seconds: float | None = None) -> float:
        """Sound the chime for ``seconds`` (default ``chime.pulse``); on the loop's thread.
        Returns the seconds used, 0.0 when it is ringing or resting already."""
        try:
            return self._pulse(self.default_pulse if seconds is None else seconds)
        except OutputBusy:
            return 0.0


class Led(_Closing):
    """The light in the button: blinking says "it is ringing", steady says "you are connected".

    Blinking runs on gpiozero's own background thread, which needs nothing from the loop. After
    ``close()`` the methods do nothing: a light is not worth an error during shutdown.
    """

    def __init__(self, cfg: LedConfig, *, pin_factory: Factory | None = None) -> None:
        self.pin = cfg.pin
        self._led = LED(cfg.pin, initial_value=False, pin_factory=pin_factory)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("lit" if self.is_lit else "dark")
        return f"Led(pin={self.pin}, {state})"

    @property
    def is_lit(self) -> bool:
        return not self._closed and bool(self._led.is_lit)

    def blink(self, on_time: float = 0.5, off_time: float = 0.5) -> None:
        if not self._closed:
            self._led.blink(on_time=on_time, off_time=off_time, background=True)

    def on(self) -> None:
        if not self._closed:
            self._led.on()

    def off(self) -> None:
        if not self._closed:
            self._led.off()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._led.close()
