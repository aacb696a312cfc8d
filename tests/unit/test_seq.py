"""Sequence and timestamp wraparound, and the RFC 3550 A.1 style sequence tracker."""

from __future__ import annotations

import pytest

from intercom.media import seq as seqmod
from intercom.media.seq import (
    SequenceTracker,
    random_initial,
    seq_add,
    seq_diff,
    seq_newer,
    ts_add,
    ts_diff,
)

# -- modular arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [
        (5, 5, 0),
        (6, 5, 1),
        (5, 6, -1),
        (0, 65535, 1),  # the wrap is one step forward
        (65535, 0, -1),
        (2, 65530, 8),
        (65530, 2, -8),
        (32767, 0, 32767),  # the largest forward distance
        (32768, 0, -32768),  # half way round reads as behind
        (0, 32768, -32768),
        (0, 32767, -32767),
        (65535, 32768, 32767),
    ],
)
def test_seq_diff(a: int, b: int, diff: int) -> None:
    assert seq_diff(a, b) == diff
    assert seq_newer(a, b) is (diff > 0)


def test_seq_newer_is_strict_and_antisymmetric_across_the_wrap() -> None:
    assert seq_newer(0, 65535) and not seq_newer(65535, 0)
    assert not seq_newer(7, 7)
    for a in (0, 1, 32767, 32768, 65534, 65535):
        for step in (1, 100, 32767):
            b = seq_add(a, step)
            assert seq_newer(b, a) and not seq_newer(a, b)


def test_seq_add_wraps() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535
    assert seq_add(65000, 1000) == 464


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [
        (0, 0xFFFFFFFF, 1),
        (0xFFFFFFFF, 0, -1),
        (80, 0xFFFFFF60, 240),  # 160 samples past the wrap plus 80
        (0x7FFFFFFF, 0, 2**31 - 1),
        (0x80000000, 0, -(2**31)),
        (160, 0, 160),
    ],
)
def test_ts_diff(a: int, b: int, diff: int) -> None:
    assert ts_diff(a, b) == diff


def test_ts_add_wraps() -> None:
    assert ts_add(0xFFFFFFF0, 0x20) == 0x10
    assert ts_add(0, -1) == 0xFFFFFFFF


def test_random_initial_uses_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    def randbits(k: int) -> int:
        calls.append(("randbits", k))
        return (1 << k) - 1

    def randbelow(n: int) -> int:
        calls.append(("randbelow", n))
        return n - 1

    monkeypatch.setattr(seqmod.secrets, "randbits", randbits)
    monkeypatch.setattr(seqmod.secrets, "randbelow", randbelow)
    assert random_initial() == (0xFFFFFFFF, 32767, 0xFFFFFFFF)
    assert calls == [("randbits", 32), ("randbelow", 32768), ("randbits", 32)]


def test_random_initial_ranges() -> None:
    draws = {random_initial() for _ in range(20)}
    assert len(draws) > 1
    for ssrc, seq, ts in draws:
        assert 0 <= ssrc < 2**32 and 0 <= seq < 32768 and 0 <= ts < 2**32


# -- the tracker ---------------------------------------------------------------------------------


def feed(tracker: SequenceTracker, seqs: list[int], ssrc: int = 7) -> list[tuple[str, int | None]]:
    return [(u.arrival, u.extended) for u in (tracker.update(ssrc, s) for s in seqs)]


def test_in_order_across_the_wrap_extends_monotonically() -> None:
    t = SequenceTracker()
    got = feed(t, [65533, 65534, 65535, 0, 1, 2])
    assert got == [
        ("first", 65533),
        ("next", 65534),
        ("next", 65535),
        ("next", 65536),
        ("next", 65537),
        ("next", 65538),
    ]
    assert (t.received, t.expected, t.lost, t.cycles) == (6, 6, 0, 1)
    assert (t.duplicates, t.reordered, t.strays, t.resets) == (0, 0, 0, 0)


def test_many_cycles() -> None:
    t = SequenceTracker()
    seq = 100
    for _ in range(3 * 65536 // 1000):
        t.update(1, seq)
        seq = seq_add(seq, 1000)  # big steps, but inside max_dropout
    assert t.cycles == 2
    assert t.highest == 100 + 1000 * (3 * 65536 // 1000 - 1)
    assert (t.received, t.lost) == (196, t.expected - 196)


def test_loss_across_the_wrap_then_a_reordered_packet_fills_its_gap() -> None:
    t = SequenceTracker()
    assert feed(t, [65533, 65534, 1]) == [("first", 65533), ("next", 65534), ("next", 65537)]
    assert (t.expected, t.received, t.lost) == (5, 3, 2)  # 65535 and 0 missing
    assert feed(t, [0]) == [("reordered", 65536)]
    assert (t.lost, t.reordered) == (1, 1)
    assert feed(t, [2, 65535]) == [("next", 65538), ("reordered", 65535)]
    assert (t.lost, t.reordered, t.received) == (0, 2, 6)


def test_duplicates_of_the_newest_and_of_older_packets() -> None:
    t = SequenceTracker()
    got = feed(t, [65534, 65535, 65535, 0, 65534, 65535, 1])
    assert [a for a, _ in got] == [
        "first",
        "next",
        "duplicate",
        "next",
        "duplicate",
        "duplicate",
        "next",
    ]
    assert got[4] == ("duplicate", 65534)
    assert (t.duplicates, t.received, t.lost, t.reordered) == (3, 4, 0, 0)


def test_reordered_then_duplicated() -> None:
    t = SequenceTracker()
    got = feed(t, [10, 12, 11, 11, 13])
    assert [a for a, _ in got] == ["first", "next", "reordered", "duplicate", "next"]
    assert (t.reordered, t.duplicates, t.lost) == (1, 1, 0)


def test_packet_reordered_ahead_of_the_first_one() -> None:
    t = SequenceTracker()
    assert feed(t, [0, 1, 65535]) == [("first", 0), ("next", 1), ("reordered", -1)]
    assert (t.base, t.expected, t.received, t.lost) == (-1, 3, 3, 0)


def test_a_lone_stray_is_dropped_and_the_stream_goes_on() -> None:
    t = SequenceTracker()
    feed(t, [100, 101])
    assert feed(t, [30000]) == [("stray", None)]  # far ahead
    assert feed(t, [102]) == [("next", 102)]
    assert feed(t, [65531]) == [("stray", None)]  # 107 behind: past max_misorder
    assert feed(t, [103]) == [("next", 103)]
    assert feed(t, [1], ssrc=99) == [("stray", None)]  # another source
    assert feed(t, [104]) == [("next", 104)]
    assert (t.strays, t.resets, t.lost, t.received) == (3, 0, 0, 5)


def test_a_confirmed_jump_restarts_and_keeps_past_loss() -> None:
    t = SequenceTracker()
    feed(t, [100, 102])  # 101 lost
    assert feed(t, [40000, 40001]) == [("stray", None), ("reset", 40001)]
    assert (t.resets, t.strays, t.base, t.highest, t.lost) == (1, 1, 40000, 40001, 1)
    assert feed(t, [40003]) == [("next", 40003)]
    assert t.lost == 2
    assert t.received == 5


def test_a_new_ssrc_is_followed_after_two_packets_even_across_the_wrap() -> None:
    t = SequenceTracker()
    feed(t, [5, 6])
    assert feed(t, [65535], ssrc=8) == [("stray", None)]
    assert feed(t, [7]) == [("next", 7)]  # the old stream still counts meanwhile
    assert feed(t, [0], ssrc=8) == [("reset", 65536)]
    assert (t.ssrc, t.resets, t.cycles, t.expected) == (8, 1, 1, 2)
    assert feed(t, [8]) == [("stray", None)]  # the old source is now the stranger


def test_misorder_and_dropout_bounds() -> None:
    t = SequenceTracker(max_dropout=10, max_misorder=3)
    feed(t, [100])
    assert feed(t, [109, 106, 105]) == [("next", 109), ("reordered", 106), ("stray", None)]
    assert feed(t, [119]) == [("stray", None)]
    with pytest.raises(ValueError):
        SequenceTracker(max_dropout=40000)
