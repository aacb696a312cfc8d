"""The press filter with virtual time: spikes, cooldown, and a hammered button ringing once."""

from __future__ import annotations

import math

import pytest

from intercom.doorbell import Decision, PressCounts, PressFilter


def press(f: PressFilter, at: float, length: float) -> Decision:
    f.pressed(at)
    return f.released(at + length)


def test_a_normal_press_rings() -> None:
    f = PressFilter(min_press=0.1, cooldown=10)
    f.pressed(100.0)
    assert f.is_pressed
    assert f.released(100.3) is Decision.RING
    assert not f.is_pressed
    assert f.counts == PressCounts(presses=1, rings=1, noise=0, suppressed=0)


def test_a_press_shorter_than_min_press_is_noise() -> None:
    f = PressFilter(min_press=0.1, cooldown=10)
    assert press(f, 0.0, 0.099) is Decision.NOISE
    assert press(f, 1.0, 0.002) is Decision.NOISE
    assert f.counts == PressCounts(presses=2, rings=0, noise=2, suppressed=0)
    # Noise does not start the cooldown: the next real press rings.
    assert press(f, 1.5, 0.1) is Decision.RING


def test_min_press_zero_takes_every_press() -> None:
    f = PressFilter(min_press=0, cooldown=0)
    assert [press(f, t, 0.0) for t in (0.0, 0.001, 0.002)] == [Decision.RING] * 3


def test_presses_during_cooldown_are_counted_but_ring_nothing() -> None:
    f = PressFilter(min_press=0.1, cooldown=10)
    assert press(f, 0.0, 0.2) is Decision.RING  # rings at 0.2
    assert press(f, 3.0, 0.2) is Decision.COOLDOWN
    assert press(f, 9.9, 0.2) is Decision.COOLDOWN  # released 9.9 s after the ring
    assert press(f, 10.1, 0.2) is Decision.RING  # released 10.1 s after the ring
    assert f.counts == PressCounts(presses=4, rings=2, noise=0, suppressed=2)


def test_cooldown_runs_from_the_ring_not_from_the_last_press() -> None:
    """Pressing every few seconds must not keep the door silent for ever."""
    f = PressFilter(min_press=0.1, cooldown=10)
    decisions = [press(f, t, 0.2) for t in range(0, 25, 3)]  # 0, 3, ..., 24
    assert decisions.count(Decision.RING) == 3  # at 0.2, 12.2 and 24.2
    assert [t for t, d in zip(range(0, 25, 3), decisions, strict=True) if d is Decision.RING] == [
        0,
        12,
        24,
    ]


def test_fifty_presses_in_two_seconds_ring_exactly_once() -> None:
    """ha_siedle_python#17: 8 to 10 calls per press. Here: 50 real presses, one call."""
    f = PressFilter(min_press=0.02, cooldown=10)
    decisions = [press(f, i * 0.04, 0.03) for i in range(50)]  # 50 presses in 2 s
    assert decisions[0] is Decision.RING
    assert decisions.count(Decision.RING) == 1
    assert f.counts == PressCounts(presses=50, rings=1, noise=0, suppressed=49)


def test_a_bouncing_spiky_press_rings_once_with_the_defaults() -> None:
    """Chatter that got past the debounce, one real press, then more hammering and spikes."""
    f = PressFilter(min_press=0.1, cooldown=10)
    t = 0.0
    decisions = []

    def at(length: float, gap: float) -> None:
        nonlocal t
        decisions.append(press(f, t, length))
        t += length + gap

    for _ in range(20):
        at(0.001, 0.004)  # spikes of 1 ms, 5 ms apart
    at(0.25, 0.05)  # the finger
    for _ in range(9):
        at(0.12, 0.03)  # hammering: real presses
    for _ in range(20):
        at(0.002, 0.008)  # and spikes again
    assert t < 2.0 and len(decisions) == 50
    assert decisions.count(Decision.RING) == 1
    assert decisions[20] is Decision.RING
    assert f.counts == PressCounts(presses=50, rings=1, noise=40, suppressed=9)


def test_a_release_without_a_press_is_noise() -> None:
    """The button was held while the intercom started: gpiozero reports only the release."""
    f = PressFilter(min_press=0.1, cooldown=10)
    assert f.released(5.0) is Decision.NOISE
    assert f.counts == PressCounts(presses=0, rings=0, noise=1, suppressed=0)


def test_a_lost_release_edge_does_not_make_a_spike_look_long() -> None:
    f = PressFilter(min_press=0.1, cooldown=10)
    f.pressed(0.0)
    f.pressed(5.0)  # the release of the first was lost
    assert f.released(5.01) is Decision.NOISE
    assert f.counts == PressCounts(presses=2, rings=0, noise=2, suppressed=0)


@pytest.mark.parametrize(("min_press", "cooldown"), [(-0.1, 1), (0.1, -1), (math.nan, 1)])
def test_invalid_settings(min_press: float, cooldown: float) -> None:
    with pytest.raises(ValueError):
        PressFilter(min_press, cooldown)


def test_repr_shows_state_and_counts() -> None:
    f = PressFilter(min_press=0.1, cooldown=10)
    press(f, 0.0, 0.2)
    assert repr(f) == (
        "PressFilter(min_press=0.1, cooldown=10, pressed=False, "
        "counts=PressCounts(presses=1, rings=1, noise=0, suppressed=0))"
    )


def test_a_held_press_rings_once_min_press_has_passed_not_at_release() -> None:
    f = PressFilter(min_press=0.1, cooldown=10)
    f.pressed(0.0)
    assert f.held(0.05) is None  # not yet a finger
    assert f.held(0.1) is Decision.RING
    assert f.held(0.2) is None  # decided once
    assert f.released(3.0) is Decision.DECIDED
    assert f.counts.rings == 1 and f.counts.noise == 0 and f.counts.presses == 1
    f.pressed(4.0)
    assert f.held(4.15) is Decision.COOLDOWN
    assert f.released(4.3) is Decision.DECIDED
    f.pressed(20.0)
    assert f.released(20.05) is Decision.NOISE  # released before min_press: held() never decides
    assert f.held(20.1) is None
