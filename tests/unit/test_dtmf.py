"""DTMF: RFC 4733 events against baresip's packets and our own sender, and SIP INFO bodies."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest

from intercom.media.dtmf import (
    DIGITS,
    DtmfDigit,
    DtmfReceiver,
    DtmfSender,
    event_code,
    events_for,
    parse_info,
)
from intercom.media.rtp import RtpPacket

RTP_DIR = Path(__file__).resolve().parents[1] / "data" / "rtp"
PT = 101
SSRC = 0x5EED


def load(name: str) -> RtpPacket:
    return RtpPacket.parse((RTP_DIR / name).read_bytes())


def feed_all(rx: DtmfReceiver, packets: list[RtpPacket]) -> str:
    return "".join(d.digit for p in packets for d in rx.feed(p))


def stream(digits: str, *, seq: int = 1000, timestamp: int = 123_456) -> list[RtpPacket]:
    return [p for _, p in DtmfSender(PT).events_for(digits, SSRC, seq, timestamp)]


def bursts(packets: list[RtpPacket]) -> list[list[RtpPacket]]:
    """The packets of each event, by timestamp, in sending order."""
    out: list[list[RtpPacket]] = []
    for p in packets:
        if out and out[-1][0].timestamp == p.timestamp:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def event(code: int, *, end: bool = False, duration: int = 160, volume: int = 10) -> bytes:
    return struct.pack("!BBH", code, (0x80 if end else 0) | volume, duration)


def packet(payload: bytes, *, ts: int = 8000, seq: int = 1, ssrc: int = SSRC) -> RtpPacket:
    return RtpPacket(PT, seq, ts, ssrc, payload)


# -- baresip -------------------------------------------------------------------------------------


def test_baresip_digit_5_is_reported_once() -> None:
    start, end = load("baresip_dtmf_start.rtp"), load("baresip_dtmf_end.rtp")
    rx = DtmfReceiver()
    assert rx.feed(start) == [DtmfDigit("5", "rfc4733", None)]
    assert rx.feed(end) == []
    assert rx.feed(end) == []  # the end packet's retransmissions
    assert rx.feed(end) == []
    assert (rx.digits, rx.malformed, rx.stale, rx.ignored) == (1, 0, 0, 0)


def test_baresip_digit_5_from_its_end_packet_alone_knows_the_duration() -> None:
    start, end = load("baresip_dtmf_start.rtp"), load("baresip_dtmf_end.rtp")
    rx = DtmfReceiver()
    assert rx.feed(end) == [DtmfDigit("5", "rfc4733", 180)]  # 1440 samples at 8 kHz
    assert rx.feed(start) == []  # reordered: the same event


def test_our_packets_match_baresips_bytes() -> None:
    start, end = load("baresip_dtmf_start.rtp"), load("baresip_dtmf_end.rtp")
    ours = DtmfSender(PT).packets("5", start.ssrc, start.sequence, start.timestamp, 180)
    assert ours[0] == start
    assert ours[-1].payload == end.payload and ours[-1].timestamp == end.timestamp


# -- our sender ----------------------------------------------------------------------------------


def test_sender_packets_for_one_digit() -> None:
    packets = DtmfSender(PT).packets("#", SSRC, 65533, 0xFFFFFF00)
    assert len(packets) == 10  # 7 updates (20..140 ms), then the end three times
    assert [p.sequence for p in packets] == [65533, 65534, 65535, 0, 1, 2, 3, 4, 5, 6]
    assert {(p.timestamp, p.ssrc, p.payload_type) for p in packets} == {(0xFFFFFF00, SSRC, PT)}
    assert [p.marker for p in packets] == [True] + [False] * 9
    fields = [struct.unpack("!BBH", p.payload) for p in packets]
    assert fields == [(11, 10, 160 * n) for n in range(1, 8)] + [(11, 0x80 | 10, 1280)] * 3


def test_sender_short_event_and_other_clock() -> None:
    packets = DtmfSender(96, clock_rate=16000).packets("d", 1, 0, 0, duration_ms=20, volume=0)
    assert [struct.unpack("!BBH", p.payload) for p in packets] == [(15, 0x80, 320)] * 3
    assert [p.marker for p in packets] == [True, False, False]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"digit": "E"},
        {"digit": "55"},
        {"digit": ""},
        {"duration_ms": 0},
        {"duration_ms": 8192},  # more than 65535 samples: needs segments
        {"volume": 64},
        {"volume": -1},
        {"frame_ms": 0},
    ],
)
def test_sender_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"digit": "1", "ssrc": 1, "seq": 0, "timestamp": 0, **kwargs}
    with pytest.raises(ValueError):
        DtmfSender(PT).packets(**args)  # type: ignore[arg-type]


def test_sender_refuses_bad_payload_type() -> None:
    with pytest.raises(ValueError):
        DtmfSender(128)


def test_events_for_schedules_digits_on_the_audio_clock() -> None:
    scheduled = DtmfSender(PT).events_for("12", SSRC, 65534, 0xFFFFFFF0, gap_ms=100)
    offsets = [t for t, _ in scheduled]
    assert offsets == [*range(0, 200, 20), *range(300, 500, 20)]
    assert [p.sequence for _, p in scheduled] == [(65534 + i) % 65536 for i in range(20)]
    # The second event starts 300 ms (2400 samples) after the first, across the 32-bit wrap.
    assert [p.timestamp for _, p in scheduled] == [0xFFFFFFF0] * 10 + [2400 - 16] * 10
    assert [p.marker for _, p in scheduled].count(True) == 2


def test_events_for_checks_every_digit_first() -> None:
    with pytest.raises(ValueError):
        DtmfSender(PT).events_for("12x", SSRC, 0, 0)
    assert events_for("09*#aD") == [0, 9, 10, 11, 12, 15]
    assert event_code("*") == 10
    with pytest.raises(ValueError):
        events_for("1 2")


# -- our sender into our receiver ----------------------------------------------------------------


def test_all_sixteen_digits_in_order_exactly_once() -> None:
    rx = DtmfReceiver()
    got = [d for p in stream(DIGITS) for d in rx.feed(p)]
    assert [d.digit for d in got] == list(DIGITS)
    assert {(d.method, d.duration_ms) for d in got} == {("rfc4733", None)}
    assert (rx.digits, rx.stale, rx.malformed) == (16, 0, 0)


def test_without_the_marker_bit() -> None:
    packets = [replace(p, marker=False) for p in stream(DIGITS)]
    assert feed_all(DtmfReceiver(), packets) == DIGITS


def test_with_the_first_packet_of_each_event_lost() -> None:
    packets = [p for p in stream(DIGITS) if not p.marker]
    assert feed_all(DtmfReceiver(), packets) == DIGITS


def test_with_only_the_last_end_packet_of_each_event() -> None:
    rx = DtmfReceiver()
    packets = [burst[-1] for burst in bursts(stream(DIGITS))]
    got = [d for p in packets for d in rx.feed(p)]
    assert [d.digit for d in got] == list(DIGITS)
    assert {d.duration_ms for d in got} == {160}


def test_with_end_packets_duplicated_and_reordered() -> None:
    packets: list[RtpPacket] = []
    late: list[RtpPacket] = []
    for burst in bursts(stream(DIGITS)):
        first, *middle, end1, end2, end3 = burst
        # The previous event's last end packet arrives after this event has started.
        packets += [first, *late, *middle[::-1], end2, end1, end1, end3, end2]
        late = [end3]
    packets += late
    rx = DtmfReceiver()
    assert feed_all(rx, packets) == DIGITS
    assert rx.stale == 15


def test_two_identical_digits_in_a_row_are_two_digits() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, stream("55")) == "55"
    assert feed_all(rx, stream("**", timestamp=999_999)) == "**"


def test_digits_across_the_timestamp_wrap() -> None:
    assert feed_all(DtmfReceiver(), stream("147*", timestamp=0xFFFFF000)) == "147*"


def test_a_new_ssrc_starts_afresh() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, [packet(event(1), ts=500)]) == "1"
    assert feed_all(rx, [packet(event(2), ts=500, ssrc=2)]) == "2"
    assert feed_all(rx, [packet(event(2, end=True), ts=500, ssrc=2)]) == ""


def test_a_restarted_clock_far_behind_is_a_new_event() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, [packet(event(1), ts=1_000_000)]) == "1"
    assert feed_all(rx, [packet(event(2), ts=999_000)]) == ""  # 125 ms older: stale
    assert feed_all(rx, [packet(event(3), ts=1000)]) == "3"  # two minutes older: a restart
    assert rx.stale == 1


# -- payloads ------------------------------------------------------------------------------------


def test_packed_events_are_all_reported() -> None:
    # RFC 4733 2.5.1.5: '1' ended after 800 samples, then '2' starts at ts + 800.
    rx = DtmfReceiver()
    both = packet(event(1, end=True, duration=800) + event(2, duration=160), ts=4000)
    assert rx.feed(both) == [DtmfDigit("1", "rfc4733", 100), DtmfDigit("2", "rfc4733", None)]
    assert rx.feed(both) == []
    assert rx.feed(packet(event(2, end=True, duration=480), ts=4800)) == []  # '2' goes on alone
    assert rx.feed(packet(event(2), ts=5600)) == [DtmfDigit("2", "rfc4733", None)]


def test_packed_event_that_has_not_ended_stops_the_payload() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, [packet(event(1) + event(2))]) == "1"
    assert rx.malformed == 1


def test_non_dtmf_events_are_ignored() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, [packet(event(16), ts=100), packet(event(16, end=True), ts=100)]) == ""
    assert feed_all(rx, [packet(event(255), ts=300), packet(event(0), ts=600)]) == "0"
    assert rx.ignored == 2


@pytest.mark.parametrize("payload", [b"", b"\x05", b"\x05\x0a\x00", b"\x05\x0a\x00\xa0\x01"])
def test_malformed_payloads_are_counted_never_raised(payload: bytes) -> None:
    rx = DtmfReceiver()
    assert rx.feed(packet(payload)) == []
    assert (rx.malformed, rx.digits) == (1, 0)
    assert feed_all(rx, [packet(event(5))]) == "5"  # and the receiver carries on


def test_digits_validate_themselves() -> None:
    for bad in ({"digit": "E"}, {"digit": "12"}, {"method": "sms"}, {"duration_ms": -1}):
        args: dict[str, object] = {"digit": "1", "method": "info", **bad}
        with pytest.raises(ValueError):
            DtmfDigit(**args)  # type: ignore[arg-type]


# -- SIP INFO ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
        ("application/dtmf-relay", b"Signal=5\nDuration=160\n", ("5", 160)),
        ("Application/DTMF-Relay", b"signal = 9 \r\nDURATION = 250", ("9", 250)),
        ("application/dtmf-relay; charset=utf-8", b"Signal= *\r\nDuration=100\r\n", ("*", 100)),
        ("application/dtmf-relay", b"Signal=#\r\n", ("#", None)),
        ("application/dtmf-relay", b"Signal=10\r\nDuration=160\r\n", ("*", 160)),
        ("application/dtmf-relay", b"Signal=11\r\n", ("#", None)),
        ("application/dtmf-relay", b"Signal=b\r\nDuration=abc\r\n", ("B", None)),
        ("application/dtmf-relay", b"Duration=160\r\nSignal=0\r\n", ("0", 160)),
        ("application/dtmf-relay", b"Signal=1\rDuration=60\r", ("1", 60)),
        (" application/dtmf ", b"7", ("7", None)),
        ("application/dtmf", b"#\r\n", ("#", None)),
        ("application/dtmf", b"*", ("*", None)),
        ("application/dtmf", b"10", ("*", None)),
        ("application/dtmf", b"11", ("#", None)),
        ("application/dtmf", b" 15 ", ("D", None)),
        ("application/dtmf", b"a", ("A", None)),
    ],
)
def test_parse_info(content_type: str, body: bytes, expected: tuple[str, int | None]) -> None:
    assert parse_info(content_type, body) == DtmfDigit(expected[0], "info", expected[1])


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/dtmf-relay", b""),
        ("application/dtmf-relay", b"Duration=160\r\n"),
        ("application/dtmf-relay", b"Signal=\r\n"),
        ("application/dtmf-relay", b"Signal=16\r\n"),  # flash
        ("application/dtmf-relay", b"Signal=!\r\n"),
        ("application/dtmf-relay", b"Signal=55\r\n"),
        ("application/dtmf-relay", b"Signal=\xff\r\n"),
        ("application/dtmf-relay", b"Signal 5\r\n"),
        ("application/dtmf", b""),
        ("application/dtmf", b"12 3"),
        ("application/dtmf", b"\xd9\xa5"),  # an Arabic-Indic five is not an ASCII digit
        ("application/dtmf", b"-1"),
        ("application/sdp", b"Signal=5\r\n"),
        ("text/plain", b"5"),
        ("", b"5"),
    ],
)
def test_parse_info_rejects(content_type: str, body: bytes) -> None:
    assert parse_info(content_type, body) is None
