"""RTP sequence-number and timestamp arithmetic, where both counters wrap; pure code.

Senders start both counters at random values (RFC 3550 5.1), so a 16-bit sequence number can wrap
a few seconds into a call, and a plain ``a > b`` would read the wrap as a 65535-packet jump. Every
comparison therefore goes through the signed, modular distance below, and anything that needs a
number that only grows (loss counting, a buffer index) uses the extended sequence number of
:class:`SequenceTracker`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32

#: RFC 3550 A.1: how far ahead (packets) a sequence number may jump and still be the same stream
#: (a minute of 20 ms packets), and how far behind it may arrive and still be a reordered one.
MAX_DROPOUT = 3000
MAX_MISORDER = 100


def seq_add(seq: int, n: int) -> int:
    return (seq + n) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """``a - b`` modulo 2**16, in [-32768, 32767]: positive when ``a`` is the newer one."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def seq_newer(a: int, b: int) -> bool:
    """Whether ``a`` comes after ``b``, across the wrap (65535 -> 0 is one step forward)."""
    return seq_diff(a, b) > 0


def ts_add(ts: int, n: int) -> int:
    return (ts + n) % TS_MOD


def ts_diff(a: int, b: int) -> int:
    """``a - b`` modulo 2**32, in [-2**31, 2**31 - 1]."""
    d = (a - b) % TS_MOD
    return d - TS_MOD if d >= TS_MOD // 2 else d


def random_initial() -> tuple[int, int, int]:
    """A new stream's ``(ssrc, sequence, timestamp)``, unpredictable as RFC 3550 5.1 asks.

    The sequence number is drawn below 32768: still random, but the first wrap comes after at
    least 32768 packets (11 minutes), not in the first second, where some receivers, and SRTP's
    guess of the rollover counter (RFC 3711 3.3.1), are known to get it wrong.
    """
    return secrets.randbits(32), secrets.randbelow(SEQ_MOD // 2), secrets.randbits(32)


Arrival = Literal["first", "next", "reordered", "duplicate", "stray", "reset"]


@dataclass(frozen=True, slots=True)
class SeqUpdate:
    """What one packet was: ``extended`` is None only for a ``stray``, which should be dropped.

    - ``first``: the very first packet the tracker saw.
    - ``next``: newer than every packet so far (the gap before it, if any, counts as lost until
      the missing packets turn up).
    - ``reordered``: older than the newest, not seen before (it fills a gap).
    - ``duplicate``: seen before.
    - ``stray``: from another SSRC, or too far from the stream to belong to it.
    - ``reset``: the second packet of a new stream confirmed the stray before it: the tracker now
      follows the new stream, and counts that stray as received (``extended - 1``).
    """

    arrival: Arrival
    extended: int | None


class SequenceTracker:
    """Extends 16-bit sequence numbers to an ever-growing counter and counts what arrived.

    RFC 3550 A.1 style: the extended number is ``cycles * 65536 + seq``; a packet up to
    ``max_dropout`` ahead or ``max_misorder`` behind the newest belongs to the stream, anything
    else (or another SSRC) is a stray. A stray followed by its successor means the sender
    restarted (a new SSRC after a re-INVITE, or a new sequence), so the tracker follows it; a lone
    stray is dropped, so one corrupt or delayed old packet cannot derail the stream.

    Unlike A.1, the first packet is trusted at once (the call's SDP announced the stream), and
    counters cover the tracker's whole life: a reset adds the old stream's loss to ``lost``
    instead of starting from zero, because the intercom reports per call, not per source. A
    packet reordered ahead of the very first one gets an extended number below it (possibly -1).
    """

    def __init__(self, *, max_dropout: int = MAX_DROPOUT, max_misorder: int = MAX_MISORDER) -> None:
        if not 0 < max_dropout < SEQ_MOD // 2 or not 0 < max_misorder < SEQ_MOD // 2:
            raise ValueError("max_dropout and max_misorder must be in 1..32767")
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self.ssrc: int | None = None
        self.highest: int | None = None  # extended number of the newest packet
        self.base: int | None = None  # extended number of the oldest packet of this stream
        self.received = 0  # distinct packets, over every stream
        self.duplicates = 0
        self.reordered = 0
        self.strays = 0
        self.resets = 0
        self._seen = 0  # bit i: highest - i arrived (i <= max_misorder), to spot duplicates
        self._stray: tuple[int, int] | None = None  # (ssrc, seq) that would confirm a restart
        self._past_lost = 0
        self._stream_received = 0

    @property
    def cycles(self) -> int:
        """How often the sequence number wrapped since the stream started."""
        if self.highest is None or self.base is None:
            return 0
        return (self.highest >> 16) - (self.base >> 16)

    @property
    def expected(self) -> int:
        """Packets the current stream has sent so far, from its first to its newest."""
        if self.highest is None or self.base is None:
            return 0
        return self.highest - self.base + 1

    @property
    def lost(self) -> int:
        """Packets never received (so far: a reordered one still fills its gap later)."""
        return self._past_lost + max(0, self.expected - self._stream_received)

    def update(self, ssrc: int, seq: int) -> SeqUpdate:
        seq %= SEQ_MOD
        if self.highest is None:
            self._start(ssrc, seq)
            return SeqUpdate("first", self.highest)
        if ssrc == self.ssrc:
            d = seq_diff(seq, self.highest % SEQ_MOD)
            if 0 < d < self.max_dropout:
                self.highest += d
                self._seen = ((self._seen << d) | 1) & ((2 << self.max_misorder) - 1)
                self._stream_received += 1
                self.received += 1
                return SeqUpdate("next", self.highest)
            if -self.max_misorder <= d <= 0:
                ext = self.highest + d
                bit = 1 << -d
                if self._seen & bit:
                    self.duplicates += 1
                    return SeqUpdate("duplicate", ext)
                self._seen |= bit
                self.reordered += 1
                self._stream_received += 1
                self.received += 1
                assert self.base is not None
                self.base = min(self.base, ext)
                return SeqUpdate("reordered", ext)
        if self._stray == (ssrc, seq):
            self._past_lost = self.lost
            self.resets += 1
            self._start(ssrc, seq_add(seq, -1))
            assert self.highest is not None
            self.update(ssrc, seq)
            return SeqUpdate("reset", self.highest)
        self._stray = (ssrc, seq_add(seq, 1))
        self.strays += 1
        return SeqUpdate("stray", None)

    def _start(self, ssrc: int, seq: int) -> None:
        self.ssrc = ssrc
        self.highest = self.base = seq
        self._seen = 1
        self._stray = None
        self._stream_received = 1
        self.received += 1
