"""The jitter buffer, driven tick by tick in virtual time: a push or a few, then one pop."""

from __future__ import annotations

from dataclasses import replace

import pytest

from intercom.media.jitter import JitterBuffer, JitterFrame, JitterStats
from intercom.media.rtp import RtpPacket

SSRC = 0x1234
TICK = 0.020


def pkt(seq: int, *, ssrc: int = SSRC, ts: int | None = None) -> RtpPacket:
    """A PCMU packet whose payload names its sequence number, so playout order is visible."""
    seq %= 65536
    timestamp = (seq * 160 + 1000) % 2**32 if ts is None else ts
    return RtpPacket(0, seq, timestamp, ssrc, seq.to_bytes(2, "big") * 80)


def seq_of(frame: JitterFrame) -> int | str:
    """A frame as the test reads it: the sequence number played, or "C"/"S"."""
    if frame.kind == "audio":
        assert frame.payload is not None and frame.seq is not None
        assert int.from_bytes(frame.payload[:2], "big") == frame.seq
        return frame.seq
    return {"concealed": "C", "silence": "S"}[frame.kind]


class Clock:
    """Virtual time: each ``tick`` pushes what arrived during it, then pops one frame."""

    def __init__(self, jb: JitterBuffer) -> None:
        self.jb = jb
        self.now = 0.0

    def tick(self, *packets: RtpPacket) -> int | str:
        for p in packets:
            self.jb.push(p, self.now)
        frame = self.jb.pop(self.now)
        self.now += TICK
        return seq_of(frame)

    def run(self, arrivals: list[list[int]], *, ssrc: int = SSRC) -> list[int | str]:
        return [self.tick(*(pkt(s, ssrc=ssrc) for s in seqs)) for seqs in arrivals]


def steady(seqs: list[int]) -> list[list[int]]:
    return [[s] for s in seqs]


def stats(jb: JitterBuffer, **expected: int) -> None:
    got = jb.stats
    assert {k: getattr(got, k) for k in expected} == expected


# -- playout -------------------------------------------------------------------------------------


def test_waits_for_depth_then_plays_in_order() -> None:
    jb = JitterBuffer(frame_ms=20, depth_ms=60)
    clock = Clock(jb)
    assert clock.run(steady(list(range(100, 110)))) == ["S", "S", *range(100, 108)]
    assert jb.buffered_ms == 40
    stats(jb, received=10, played=8, lost=0, late=0, duplicates=0, underruns=0, overflows=0)


def test_depth_is_counted_in_frames_rounded_up() -> None:
    jb = JitterBuffer(frame_ms=20, depth_ms=50)  # 3 frames
    clock = Clock(jb)
    assert clock.run(steady([1, 2, 3])) == ["S", "S", 1]


def test_silence_before_anything_arrives() -> None:
    jb = JitterBuffer()
    assert [seq_of(jb.pop(t * TICK)) for t in range(3)] == ["S", "S", "S"]
    stats(jb, underruns=0)


def test_swapped_packets_are_reordered() -> None:
    clock = Clock(JitterBuffer())
    arrivals = [[1], [2], [3], [5], [4], [7], [6], [8], [9]]
    assert clock.run(arrivals) == ["S", "S", 1, 2, 3, 4, 5, 6, 7]
    stats(clock.jb, lost=0, late=0, received=9)


def test_depth_is_the_span_from_oldest_to_newest_gaps_included() -> None:
    # 1 and 3 already span 60 ms: playout starts, and 2 still arrives in time.
    clock = Clock(JitterBuffer())
    assert clock.run([[1], [3], [2], [4], [5]]) == ["S", 1, 2, 3, 4]
    stats(clock.jb, lost=0, late=0)


def test_a_burst_after_a_stall_plays_in_order() -> None:
    clock = Clock(JitterBuffer())
    out = clock.run([[1], [2], [3], [], [], [7, 5, 4, 6], [8], [9]])
    assert out == ["S", "S", 1, 2, 3, 4, 5, 6]
    stats(clock.jb, underruns=0, lost=0)


def test_a_lost_packet_gives_exactly_one_concealed_frame() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    out = clock.run([*steady([1, 2, 3, 5, 6, 7, 8]), [], [], []])
    assert out == ["S", "S", 1, 2, 3, "C", 5, 6, 7, 8]
    stats(jb, lost=1, played=7, underruns=0)


def test_the_concealed_frame_names_the_missing_sequence_number() -> None:
    jb = JitterBuffer()
    for s in (65534, 0, 1):  # 65535 never comes
        jb.push(pkt(s), 0.0)
    frames = [jb.pop(0.0) for _ in range(3)]
    assert frames[1] == JitterFrame(None, "concealed", 65535)
    assert [f.seq for f in frames] == [65534, 65535, 0]


def test_late_packets_are_dropped_and_counted() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    out = clock.run([[1], [2], [4], [5], [6], [3]])  # 3 comes after its turn was concealed
    assert out == ["S", "S", 1, 2, "C", 4]
    stats(jb, late=1, lost=1)
    assert clock.tick() == 5
    assert clock.tick() == 6


def test_duplicates_are_dropped_and_counted_whether_played_or_not() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    out = clock.run([[1], [2, 2], [3], [1], [4, 3]])
    assert out == ["S", "S", 1, 2, 3]
    stats(jb, duplicates=3, late=0, received=4)


def test_underrun_gives_silence_then_rebuffers() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    out = clock.run([*steady([1, 2, 3]), [], [], [], [], []])
    assert out == ["S", "S", 1, 2, 3, "S", "S", "S"]
    stats(jb, underruns=1)
    assert not jb.playing
    # Back after a pause: buffering again until depth, then on from the new packets.
    assert clock.run(steady([9, 10, 11, 12])) == ["S", "S", 9, 10]
    stats(jb, underruns=1, lost=0, played=5)


def test_overflow_drops_the_oldest() -> None:
    jb = JitterBuffer(frame_ms=20, depth_ms=60, max_ms=200)
    for s in range(1, 16):  # the media loop stalled: 15 packets, no pop
        jb.push(pkt(s), 0.0)
    assert jb.buffered_ms == 200
    stats(jb, overflows=5, received=15)
    assert [seq_of(jb.pop(0.0)) for _ in range(11)] == [*range(6, 16), "S"]
    stats(jb, underruns=1)


def test_overflow_while_playing_moves_the_playout_point() -> None:
    jb = JitterBuffer(max_ms=100)  # 5 frames
    clock = Clock(jb)
    assert clock.run(steady([1, 2, 3])) == ["S", "S", 1]
    for s in range(4, 10):
        jb.push(pkt(s), clock.now)
    stats(jb, overflows=3)  # 2, 3, 4
    assert clock.run([[2], [], [], [], []]) == [5, 6, 7, 8, 9]
    stats(jb, duplicates=1, late=0)  # 2 did arrive once, before the overflow pushed it out


def test_ssrc_change_flushes_once_the_new_source_is_confirmed() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    assert clock.run(steady([1, 2, 3, 4])) == ["S", "S", 1, 2]
    # The new source's first packet is held; the old one's audio still plays.
    assert clock.tick(pkt(500, ssrc=2), pkt(5)) == 3
    stats(jb, strays=1, resets=0)
    # Its second packet confirms it: the old audio is dropped, buffering starts over.
    assert clock.tick(pkt(501, ssrc=2), pkt(6)) == "S"
    stats(jb, strays=2, resets=1)  # 6 came from the old source after the switch
    assert clock.run(steady([502, 503, 504]), ssrc=2) == [500, 501, 502]
    stats(jb, resets=1, played=6)


def test_a_lone_packet_from_another_source_does_not_flush() -> None:
    clock = Clock(JitterBuffer())
    assert clock.run([[1], [2], [3]]) == ["S", "S", 1]
    assert clock.tick(pkt(9000, ssrc=99), pkt(4)) == 2
    assert clock.run(steady([5, 6])) == [3, 4]
    stats(clock.jb, strays=1, resets=0)


def test_a_big_sequence_jump_restarts() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    assert clock.run(steady([10, 11, 12])) == ["S", "S", 10]
    assert clock.run(steady([5000, 5001, 5002, 5003])) == [11, "S", 5000, 5001]
    stats(jb, strays=1, resets=1, lost=0)


def test_a_timestamp_jump_alone_plays_on() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    assert clock.run(steady([1, 2, 3])) == ["S", "S", 1]
    packets = [pkt(s, ts=0x80000000 + s * 160) for s in (4, 5, 6)]
    assert [clock.tick(p) for p in packets] == [2, 3, 4]
    stats(jb, resets=0, strays=0)


def test_wraparound_at_65535_across_playout() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    arrivals = [[65532], [65533], [65535], [65534], [1], [0], [2], [3], [65535], [4]]
    out = clock.run(arrivals)
    assert out == ["S", "S", 65532, 65533, 65534, 65535, 0, 1, 2, 3]
    stats(jb, played=8, lost=0, duplicates=1, late=0)
    assert clock.tick(pkt(65534)) == 4  # long played: a duplicate the tracker still remembers
    assert clock.tick(pkt(5), pkt(65533 - 200)) == 5  # far behind: a stray
    assert clock.tick() == "S"
    stats(jb, duplicates=2, strays=1, underruns=1, resets=0)


def test_late_across_the_wrap() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    out = clock.run([[65534], [65535], [1], [2], [3], [0], [4]])
    assert out == ["S", "S", 65534, 65535, "C", 1, 2]
    stats(jb, late=1, lost=1)


def test_stats_are_a_frozen_snapshot() -> None:
    jb = JitterBuffer()
    before = jb.stats
    jb.push(pkt(1), 0.0)
    assert before == JitterStats() and jb.stats.received == 1
    with pytest.raises(AttributeError):
        before.received = 5  # type: ignore[misc]


def test_interarrival_jitter() -> None:
    jb = JitterBuffer()
    for s in range(50):
        jb.push(pkt(s), s * TICK)
    assert jb.stats.jitter_ms == pytest.approx(0.0, abs=1e-9)
    for s in range(50, 100):
        jb.push(pkt(s), s * TICK + (0.010 if s % 2 else 0.0))  # every other one 10 ms late
    assert 5.0 < jb.stats.jitter_ms <= 10.0


def test_configuration() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(depth_ms=10)
    with pytest.raises(ValueError):
        JitterBuffer(frame_ms=0)
    deep = JitterBuffer(depth_ms=300)  # config allows up to 500 ms
    assert (deep.depth, deep.capacity) == (15, 17)
    assert (JitterBuffer().depth, JitterBuffer().capacity) == (3, 10)


def test_frames_validate_themselves() -> None:
    with pytest.raises(ValueError):
        JitterFrame(None, "audio", 1)
    with pytest.raises(ValueError):
        JitterFrame(b"x", "concealed", 1)
    with pytest.raises(ValueError):
        JitterFrame(None, "silence", 1)
    with pytest.raises(ValueError):
        JitterFrame(None, "concealed", None)
    assert replace(JitterFrame(b"x", "audio", 1), seq=2).seq == 2
