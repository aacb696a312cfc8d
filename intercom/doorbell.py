"""Which presses of the bell button ring; pure code, the time is passed in.

Users of door intercoms report phantom rings and "8 to 10 calls per press". Three different
causes, three different remedies, applied in this order:

* **Contact bounce**: a mechanical contact chatters for a few milliseconds when it closes. That
  is gpiozero's job (``doorbell.bounce_time``): it drops edges that follow an edge too closely,
  before they ever reach this module.
* **Spikes on long wires**: a bell wire running along the house picks up pulses from switched
  loads and lightning that look like very short presses. A real finger holds the button for a
  tenth of a second or more, so a press shorter than ``min_press`` is :attr:`Decision.NOISE`.
* **Impatient visitors**: pressing again and again while the phone rings must not place a new
  call each time. After a ring, presses during ``cooldown`` seconds are counted but ring
  nothing (:attr:`Decision.COOLDOWN`).

The decision is made on release, when the length of the press is known. A press that rings
while a call is already up is not this module's concern: it answers :attr:`Decision.RING`,
and the caller applies ``doorbell.while_calling`` (ignore, or hang up and ring again), because
only the caller knows whether a call is up.

Like the SIP core, the filter never reads a clock. Tests drive it with virtual time, and the
GPIO adapter (:mod:`intercom.devices`) hands it ``time.monotonic()`` stamps taken when gpiozero
saw the edge.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["Decision", "PressCounts", "PressFilter"]


class Decision(enum.Enum):
    """What a completed press means."""

    RING = "ring"
    """Ring the targets (and the chime). During a call: the caller's ``while_calling``."""
    NOISE = "noise"
    """Shorter than ``min_press``, or a release without a press: not a finger."""
    COOLDOWN = "cooldown"
    """A real press within ``cooldown`` of the last ring: counted, rings nothing."""
    DECIDED = "decided"
    """The release of a press that :meth:`PressFilter.held` already decided: nothing to do."""


@dataclass(frozen=True, slots=True)
class PressCounts:
    """Counters for logs, MQTT diagnostics and tests.

    Every release is counted in exactly one of ``rings``, ``noise`` and ``suppressed``; a
    release without a press (the button was held while the intercom started) counts as noise
    without a press, so ``presses`` can trail the other three by that much.
    """

    presses: int = 0
    rings: int = 0
    noise: int = 0
    suppressed: int = 0


class PressFilter:
    """Turns pressed/released edges with their times into :class:`Decision`\\ s.

    ``min_press`` and ``cooldown`` are in seconds; ``now`` values must come from one monotonic
    clock.
    """

    __slots__ = ("_counts", "_decided", "_last_ring", "_pressed_at", "cooldown", "min_press")

    def __init__(self, min_press: float, cooldown: float) -> None:
        if not (min_press >= 0 and math.isfinite(min_press)):
            raise ValueError(f"min_press must be a finite number >= 0, not {min_press!r}")
        if not (cooldown >= 0 and math.isfinite(cooldown)):
            raise ValueError(f"cooldown must be a finite number >= 0, not {cooldown!r}")
        self.min_press = min_press
        self.cooldown = cooldown
        self._pressed_at: float | None = None
        self._last_ring: float | None = None
        self._decided = False  # this press was already decided by held()
        self._counts = PressCounts()

    def __repr__(self) -> str:
        return (
            f"PressFilter(min_press={self.min_press}, cooldown={self.cooldown}, "
            f"pressed={self.is_pressed}, counts={self._counts})"
        )

    @property
    def counts(self) -> PressCounts:
        return self._counts

    @property
    def is_pressed(self) -> bool:
        return self._pressed_at is not None

    def pressed(self, now: float) -> None:
        """The button went down at ``now``.

        A second press without a release in between means a release edge was lost (gpiozero
        dropped it as bounce, or it came while the intercom was busy starting); the earlier
        press is then written off as noise and timing starts again, so a lost edge can neither
        make a spike look long nor block the next real press.
        """
        if self._pressed_at is not None and not self._decided:
            self._count(noise=1)
        self._pressed_at = now
        self._decided = False
        self._count(presses=1)

    def held(self, now: float) -> Decision | None:
        """The button is still down at ``now``: decide once it has been down ``min_press``.

        The caller asks ``min_press`` after the press, so a visitor who keeps the button down
        hears the ring at once instead of when letting go. None: not (yet) a decision.
        """
        if self._pressed_at is None or self._decided or now - self._pressed_at < self.min_press:
            return None
        self._decided = True
        return self._decide(now)

    def released(self, now: float) -> Decision:
        """The button went up at ``now``: decide what the press was."""
        started, self._pressed_at = self._pressed_at, None
        decided, self._decided = self._decided, False
        if decided:
            return Decision.DECIDED
        if started is None or now - started < self.min_press:
            self._count(noise=1)
            return Decision.NOISE
        return self._decide(now)

    def _decide(self, now: float) -> Decision:
        # Cooldown runs from the ring, not from the latest press: holding the button down or
        # pressing it every few seconds must not keep the door silent for ever.
        if self._last_ring is not None and now - self._last_ring < self.cooldown:
            self._count(suppressed=1)
            return Decision.COOLDOWN
        self._last_ring = now
        self._count(rings=1)
        return Decision.RING

    def _count(
        self, *, presses: int = 0, rings: int = 0, noise: int = 0, suppressed: int = 0
    ) -> None:
        c = self._counts
        self._counts = PressCounts(
            c.presses + presses, c.rings + rings, c.noise + noise, c.suppressed + suppressed
        )
