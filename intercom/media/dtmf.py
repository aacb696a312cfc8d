"""DTMF digits: RFC 4733 telephone-events in and out of RTP, and SIP INFO bodies; pure code.

A door intercom acts on digits (the PBX user presses a key to open the door), so a digit must be
reported exactly once, whatever the network does to the burst of packets that carries it. RFC 4733
sends one event as many packets that all carry the event's start time as their RTP timestamp,
the first with the marker bit, the last three with the E bit; any of them may be lost, duplicated
or reordered. The receiver therefore keys an event by its timestamp alone, not by the marker or
the E bit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from intercom.ascii import uint
from intercom.media.rtp import RtpPacket
from intercom.media.seq import SEQ_MOD, ts_add, ts_diff

#: The DTMF events of RFC 4733 3.2: a digit's index here is its event code.
DIGITS = "0123456789*#ABCD"
EVENT = struct.Struct("!BBH")  # event, E|R|volume, duration
END = 0x80
#: Every end packet is sent this often (RFC 4733 2.5.1.4), so that one loss cannot hide the end.
END_REPEATS = 3

Method = Literal["rfc4733", "info"]


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press. ``duration_ms`` is None when it was not known when the digit was reported
    (an RFC 4733 event is reported at its first packet, before it ends)."""

    digit: str
    method: Method
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in DIGITS:
            raise ValueError(f"not a DTMF digit: {self.digit!r}")
        if self.method not in ("rfc4733", "info"):
            raise ValueError(f"unknown DTMF method {self.method!r}")
        if self.duration_ms is not None and self.duration_ms < 0:
            raise ValueError(f"negative DTMF duration {self.duration_ms}")


def event_code(digit: str) -> int:
    """The RFC 4733 event code of ``digit`` (``*`` is 10, ``#`` 11, ``A``-``D`` 12-15)."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def events_for(digits: str) -> list[int]:
    """The event codes of a string of digits, checking all of them before anything is sent."""
    return [event_code(d) for d in digits]


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each exactly once.

    An event is known by its SSRC and start timestamp. The first packet seen with a newer
    timestamp than the last event reports the digit, whether or not it carries the marker (the
    first packet may be lost) or the E bit (all but the end may be lost); packets with the current
    timestamp (continuations, the repeated end packets) are ignored, and so are packets of an
    event older than the current one (``stale``: reordered end packets of the previous digit). A
    timestamp more than ``max_age_ms`` behind is taken as the sender restarting its clock.

    A payload may pack several events (RFC 4733 2.5.1.5): all are handled, each starting where
    the one before it ended. Events other than 0-9, ``*``, ``#`` and A-D (flash, tones) are
    ``ignored``. A payload that is not whole 4-byte events is ``malformed`` and dropped: ``feed``
    never raises, since the peer's mistakes must not end the call. The caller routes packets by
    the negotiated telephone-event payload type; this class does not look at it.
    """

    def __init__(self, *, clock_rate: int = 8000, max_age_ms: int = 10_000) -> None:
        if clock_rate <= 0:
            raise ValueError(f"bad clock rate {clock_rate}")
        self.clock_rate = clock_rate
        self.max_age = max_age_ms * clock_rate // 1000
        self.digits = 0
        self.ignored = 0
        self.malformed = 0
        self.stale = 0
        self._ssrc: int | None = None
        self._current: int | None = None  # start timestamp of the newest event

    def feed(self, packet: RtpPacket) -> list[DtmfDigit]:
        payload = packet.payload
        if not payload or len(payload) % EVENT.size:
            self.malformed += 1
            return []
        if packet.ssrc != self._ssrc:
            self._ssrc, self._current = packet.ssrc, None
        found: list[DtmfDigit] = []
        start = packet.timestamp
        count = len(payload) // EVENT.size
        for i in range(count):
            code, flags, duration = EVENT.unpack_from(payload, i * EVENT.size)
            ended = bool(flags & END)
            if self._is_new(start):
                self._current = start
                if code < len(DIGITS):
                    ms = duration * 1000 // self.clock_rate if ended else None
                    found.append(DtmfDigit(DIGITS[code], "rfc4733", ms))
                    self.digits += 1
                else:
                    self.ignored += 1
            if i + 1 < count:
                if not ended:  # a packed event must be over before the next one starts
                    self.malformed += 1
                    break
                start = ts_add(start, duration)
        return found

    def _is_new(self, start: int) -> bool:
        if self._current is None:
            return True
        d = ts_diff(start, self._current)
        if d > 0 or d < -self.max_age:
            return True
        if d < 0:
            self.stale += 1
        return False


class DtmfSender:
    """Builds the RTP packets of RFC 4733 events for the media loop to send, one per frame.

    The packets carry the caller's SSRC and consecutive sequence numbers from ``seq``; the caller
    sends packet ``i`` at ``i * frame_ms`` after the first, in place of an audio frame, and its own
    next sequence number is ``seq + len(packets)`` (modulo 2**16). ``timestamp`` is the audio
    clock's value when the key is pressed: the event starts there.
    """

    def __init__(self, payload_type: int, clock_rate: int = 8000) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"bad RTP payload type {payload_type}")
        if clock_rate <= 0:
            raise ValueError(f"bad clock rate {clock_rate}")
        self.payload_type = payload_type
        self.clock_rate = clock_rate

    def packets(
        self,
        digit: str,
        ssrc: int,
        seq: int,
        timestamp: int,
        duration_ms: int = 160,
        volume: int = 10,
        frame_ms: int = 20,
    ) -> list[RtpPacket]:
        """One digit: the first packet with the marker, one packet per frame with the duration
        so far, then the end packet (E bit, full duration) three times; all share ``timestamp``.
        """
        code = event_code(digit)
        total = duration_ms * self.clock_rate // 1000
        step = frame_ms * self.clock_rate // 1000
        if not 0 < total <= 0xFFFF:
            # Longer events need RFC 4733 2.5.1.3 segments, which a key press never does.
            raise ValueError(f"DTMF duration {duration_ms} ms is out of range")
        if step <= 0:
            raise ValueError(f"bad frame length {frame_ms} ms")
        if not 0 <= volume <= 63:
            raise ValueError(f"DTMF volume {volume} is not in 0..63 (-dBm0)")
        steps = [(d, 0) for d in range(step, total, step)]
        steps += [(total, END)] * END_REPEATS
        return [
            RtpPacket(
                self.payload_type,
                (seq + i) % SEQ_MOD,
                timestamp,
                ssrc,
                EVENT.pack(code, flags | volume, duration),
                marker=i == 0,
            )
            for i, (duration, flags) in enumerate(steps)
        ]

    def events_for(
        self,
        digits: str,
        ssrc: int,
        seq: int,
        timestamp: int,
        *,
        duration_ms: int = 160,
        gap_ms: int = 100,
        volume: int = 10,
        frame_ms: int = 20,
    ) -> list[tuple[int, RtpPacket]]:
        """A string of digits as ``(offset_ms, packet)``: when to send each, from the first.

        Each event starts ``gap_ms`` after the previous one's last packet, at the timestamp that
        moment has on the audio clock. For a stream that sends only events during the burst: a
        caller interleaving audio should call :meth:`packets` per digit instead.
        """
        events_for(digits)  # a bad digit anywhere fails before anything is built
        out: list[tuple[int, RtpPacket]] = []
        offset = 0
        for digit in digits:
            ts = ts_add(timestamp, offset * self.clock_rate // 1000)
            burst = self.packets(digit, ssrc, seq, ts, duration_ms, volume, frame_ms)
            out += [(offset + i * frame_ms, p) for i, p in enumerate(burst)]
            seq = (seq + len(burst)) % SEQ_MOD
            offset += len(burst) * frame_ms + gap_ms
        return out


def parse_info(content_type: str, body: bytes) -> DtmfDigit | None:
    """The digit in a SIP INFO body, or None for any other content or anything unreadable.

    ``application/dtmf-relay`` (``Signal=5`` and ``Duration=160`` lines, the de facto format of
    Cisco and most PBXs) and ``application/dtmf`` (just the digit) are read leniently: any case,
    spaces, LF-only lines, and event codes (``10`` for ``*``) where a digit was expected. A
    readable signal with a bad duration still gives the digit, without a duration. Numbers are
    ASCII digits only (``uint``), so no body can make this raise.
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if mime == "application/dtmf-relay":
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
        digit = _info_digit(fields.get("signal", ""))
        if digit is None:
            return None
        ms = uint(fields.get("duration", ""), max_digits=6)  # up to 999,999 ms
        return DtmfDigit(digit, "info", ms)
    if mime == "application/dtmf":
        digit = _info_digit(text)
        return DtmfDigit(digit, "info") if digit is not None else None
    return None


def _info_digit(value: str) -> str | None:
    value = value.strip().upper()
    if len(value) == 1 and value in DIGITS:
        return value
    code = uint(value, max_digits=3)
    return DIGITS[code] if code is not None and code < len(DIGITS) else None
