"""The receive jitter buffer: packets in as they arrive, one frame out per 20 ms tick; pure code.

The media loop calls :meth:`JitterBuffer.pop` exactly once per tick on its own clock, so the
buffer never reads a clock and never decides when to play: it only decides *what*. Playout
follows the (extended) sequence number, one packet per frame, which is what G.711 and G.722 at a
20 ms ptime send. Timestamps play no part in the order: a timestamp jump with a continuous
sequence (Asterisk switching the media source behind one SSRC, or silence suppression) simply
plays on, where flushing would throw away good audio.

Only one stream goes in: the caller routes telephone-event (and comfort noise) elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from intercom.media.rtp import RtpPacket
from intercom.media.seq import MAX_DROPOUT, MAX_MISORDER, SEQ_MOD, SequenceTracker, ts_diff

FrameKind = Literal["audio", "concealed", "silence"]


@dataclass(frozen=True, slots=True)
class JitterFrame:
    """One tick's worth of playout.

    - ``audio``: ``payload`` is the packet's, to decode; ``seq`` is its sequence number.
    - ``concealed``: the packet ``seq`` is missing but later ones are here. ``payload`` is None:
      the caller conceals, typically by repeating its last decoded frame, attenuated a little more
      each time, since only the decoder's output (not the payload) can be faded.
    - ``silence``: nothing to play (still buffering, or the buffer ran dry); ``seq`` is None.
    """

    payload: bytes | None
    kind: FrameKind
    seq: int | None

    def __post_init__(self) -> None:
        if (self.payload is None) == (self.kind == "audio"):
            raise ValueError(f"only an audio frame has a payload, not a {self.kind} one")
        if (self.seq is None) != (self.kind == "silence"):
            raise ValueError(f"only a silence frame has no seq, not a {self.kind} one")


SILENCE = JitterFrame(None, "silence", None)


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters since the buffer was made (they survive flushes).

    ``received`` counts packets taken into the buffer, ``played`` those that came out as audio.
    ``lost`` counts concealed frames only; packets lost while the buffer was empty show up as
    ``underruns``, and the network's own loss is :class:`~intercom.media.seq.SequenceTracker`'s.
    ``strays`` are packets from another SSRC or far outside the sequence, held back until the
    next one confirms a new stream (a ``reset``, which flushes) or dropped if none does.
    ``jitter_ms`` is the RFC 3550 A.8 interarrival jitter estimate.
    """

    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    underruns: int = 0
    overflows: int = 0
    resets: int = 0
    strays: int = 0
    jitter_ms: float = 0.0


class JitterBuffer:
    """Reorders one RTP stream and plays it out ``depth_ms`` behind, never more than ``max_ms``.

    Playout starts (and restarts after an underrun) once ``depth_ms`` of audio, counted from the
    oldest buffered packet to the newest, is buffered. ``max_ms`` caps that same span: a newer
    packet that would stretch it pushes out the oldest. ``max_ms`` is raised to ``depth_ms`` plus
    two frames if set lower, so that a deep configured depth still leaves room to absorb jitter.
    """

    def __init__(
        self,
        frame_ms: int = 20,
        depth_ms: int = 60,
        max_ms: int = 200,
        *,
        clock_rate: int = 8000,
        max_dropout: int = MAX_DROPOUT,
        max_misorder: int = MAX_MISORDER,
    ) -> None:
        if frame_ms <= 0 or depth_ms < frame_ms or clock_rate <= 0:
            raise ValueError(
                f"jitter buffer needs frame_ms > 0 and depth_ms >= frame_ms "
                f"(got frame_ms={frame_ms}, depth_ms={depth_ms}, clock_rate={clock_rate})"
            )
        self.frame_ms = frame_ms
        self.clock_rate = clock_rate
        self.depth = -(-depth_ms // frame_ms)  # frames, rounded up
        self.capacity = max(max_ms // frame_ms, self.depth + 2)  # frames
        self._max_dropout = max_dropout
        self._max_misorder = max_misorder
        self._counts = {f.name: 0 for f in fields(JitterStats) if f.name != "jitter_ms"}
        self._jitter = 0.0  # in timestamp units, as RFC 3550 A.8 keeps it
        self._flush()

    def _flush(self) -> None:
        self._tracker = SequenceTracker(
            max_dropout=self._max_dropout, max_misorder=self._max_misorder
        )
        self._packets: dict[int, RtpPacket] = {}  # by extended sequence number
        self._next: int | None = None  # extended number to play next; older packets are late
        self._playing = False
        self._stray: RtpPacket | None = None
        self._last_arrival: tuple[float, int] | None = None  # (now, timestamp) for the jitter

    @property
    def stats(self) -> JitterStats:
        return JitterStats(**self._counts, jitter_ms=self._jitter * 1000 / self.clock_rate)

    @property
    def buffered_ms(self) -> int:
        """The span from the next frame to play to the newest packet: the delay the buffer adds."""
        return self._span() * self.frame_ms

    @property
    def playing(self) -> bool:
        return self._playing

    def push(self, packet: RtpPacket, now: float) -> None:
        update = self._tracker.update(packet.ssrc, packet.sequence)
        if update.arrival == "stray":
            self._counts["strays"] += 1
            self._stray = packet
            return
        if update.arrival == "reset":
            stray = self._stray
            self._counts["resets"] += 1
            self._flush()
            assert stray is not None  # the tracker confirms only the stray we keep
            self.push(stray, now)
            self.push(packet, now)
            return
        if update.arrival == "duplicate":
            self._counts["duplicates"] += 1
            return
        ext = update.extended
        assert ext is not None
        self._estimate_jitter(packet.timestamp, now)
        if self._next is not None and ext < self._next:
            self._counts["late"] += 1
            return
        self._packets[ext] = packet
        self._counts["received"] += 1
        self._trim()

    def pop(self, now: float) -> JitterFrame:
        """The frame for this tick. ``now`` is not needed: the caller's tick is the clock."""
        if not self._playing:
            if not self._packets or self._span() < self.depth:
                return SILENCE
            self._playing = True
            self._next = min(self._packets)
        assert self._next is not None
        if not self._packets:
            self._counts["underruns"] += 1
            self._playing = False
            return SILENCE
        ext = self._next
        self._next += 1
        packet = self._packets.pop(ext, None)
        if packet is None:
            self._counts["lost"] += 1
            return JitterFrame(None, "concealed", ext % SEQ_MOD)
        self._counts["played"] += 1
        return JitterFrame(packet.payload, "audio", packet.sequence)

    def _start(self) -> int | None:
        if self._playing:
            return self._next
        return min(self._packets) if self._packets else None

    def _span(self) -> int:
        start = self._start()
        if start is None or not self._packets:
            return 0
        return max(self._packets) - start + 1

    def _trim(self) -> None:
        start = self._start()
        assert start is not None
        newest = max(self._packets)
        if newest - start + 1 <= self.capacity:
            return
        keep_from = newest - self.capacity + 1
        for ext in [e for e in self._packets if e < keep_from]:
            del self._packets[ext]
            self._counts["overflows"] += 1
        self._next = keep_from

    def _estimate_jitter(self, timestamp: int, now: float) -> None:
        arrival = now * self.clock_rate
        if self._last_arrival is not None:
            last_now, last_ts = self._last_arrival
            d = abs((arrival - last_now * self.clock_rate) - ts_diff(timestamp, last_ts))
            if d < self.clock_rate:  # a second off is a new source or a pause, not jitter
                self._jitter += (d - self._jitter) / 16
        self._last_arrival = (now, timestamp)
