"""RTP packets: parse and serialize, against packets baresip sent (tests/data/rtp/README.md)."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest

from intercom.errors import LocalProtocolError, RemoteProtocolError
from intercom.media.rtp import RtpError, RtpPacket

RTP_DIR = Path(__file__).resolve().parents[1] / "data" / "rtp"
BARESIP_SSRC = 0xE6BEE69F


def load(name: str) -> bytes:
    return (RTP_DIR / name).read_bytes()


# -- captured packets ----------------------------------------------------------------------------


def test_every_packet_file_is_tested() -> None:
    assert sorted(p.name for p in RTP_DIR.glob("*.rtp")) == [
        "baresip_dtmf_end.rtp",
        "baresip_dtmf_start.rtp",
        "baresip_pcmu.rtp",
        "baresip_pcmu_marker.rtp",
        "handmade_csrc_ext_padding.rtp",
    ]


@pytest.mark.parametrize(
    ("name", "pt", "seq", "ts", "marker", "payload"),
    [
        ("baresip_pcmu_marker.rtp", 0, 8106, 40777, True, 160),
        ("baresip_pcmu.rtp", 0, 8107, 40937, False, 160),
        ("baresip_dtmf_start.rtp", 101, 8113, 41897, True, 4),
        ("baresip_dtmf_end.rtp", 101, 8131, 41897, False, 4),
    ],
)
def test_baresip_packets(name: str, pt: int, seq: int, ts: int, marker: bool, payload: int) -> None:
    data = load(name)
    pkt = RtpPacket.parse(data)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc) == (pt, seq, ts, BARESIP_SSRC)
    assert pkt.marker is marker
    assert (pkt.csrc, pkt.extension, pkt.padding) == ((), None, 0)
    assert len(pkt.payload) == payload
    assert pkt.payload == data[12:]
    assert pkt.serialize() == data


def test_baresip_audio_stream_continuity() -> None:
    first = RtpPacket.parse(load("baresip_pcmu_marker.rtp"))
    second = RtpPacket.parse(load("baresip_pcmu.rtp"))
    assert second.sequence == first.sequence + 1
    assert second.timestamp == first.timestamp + 160  # 20 ms at 8 kHz
    assert first.payload[:4] == bytes.fromhex("ff6c4fcc")


def test_baresip_dtmf_event() -> None:
    # RFC 4733: event, E|R|volume, duration; every packet of one event has its start timestamp.
    start = RtpPacket.parse(load("baresip_dtmf_start.rtp"))
    end = RtpPacket.parse(load("baresip_dtmf_end.rtp"))
    assert struct.unpack("!BBH", start.payload) == (5, 0x0A, 160)
    assert struct.unpack("!BBH", end.payload) == (5, 0x8A, 1440)
    assert start.timestamp == end.timestamp


def test_handmade_packet_with_everything() -> None:
    # b2 88 ffff fffffff0 deadbeef | 11111111 22222222 | bede 0001 10ab0000 | d5d5d5d5 | 00000004
    data = load("handmade_csrc_ext_padding.rtp")
    pkt = RtpPacket.parse(data)
    assert pkt == RtpPacket(
        payload_type=8,
        sequence=65535,
        timestamp=0xFFFFFFF0,
        ssrc=0xDEADBEEF,
        payload=b"\xd5\xd5\xd5\xd5",
        marker=True,
        csrc=(0x11111111, 0x22222222),
        extension=(0xBEDE, bytes.fromhex("10ab0000")),
        padding=4,
    )
    assert pkt.serialize() == data


# -- serialize / parse ---------------------------------------------------------------------------

BASE = RtpPacket(payload_type=0, sequence=1, timestamp=160, ssrc=0x01020304, payload=b"\xff" * 160)


@pytest.mark.parametrize(
    "pkt",
    [
        BASE,
        replace(BASE, payload=b""),
        replace(BASE, marker=True),
        replace(BASE, payload_type=127),
        replace(BASE, sequence=0xFFFF, timestamp=0xFFFFFFFF, ssrc=0xFFFFFFFF),
        replace(BASE, csrc=(1,)),
        replace(BASE, csrc=tuple(range(1, 16))),
        replace(BASE, extension=(0x1000, b"")),
        replace(BASE, extension=(0xBEDE, b"\x22\xab\xcd\xef" * 3)),
        replace(BASE, padding=1),
        replace(BASE, padding=255),
        replace(BASE, payload=b"", padding=4),
        replace(BASE, marker=True, csrc=(7, 8), extension=(0xBEDE, b"\x10\x01\x00\x00"), padding=2),
    ],
    ids=lambda p: f"cc{len(p.csrc)}-x{p.extension is not None:d}-p{p.padding}-m{p.marker:d}",
)
def test_round_trip(pkt: RtpPacket) -> None:
    data = pkt.serialize()
    ext = 0 if pkt.extension is None else 4 + len(pkt.extension[1])
    assert len(data) == 12 + 4 * len(pkt.csrc) + ext + len(pkt.payload) + pkt.padding
    assert RtpPacket.parse(data) == pkt


def test_serialized_header_bits() -> None:
    data = replace(BASE, marker=True, csrc=(7, 8), extension=(0xBEDE, b""), padding=2).serialize()
    assert data[0] == 0x80 | 0x20 | 0x10 | 2
    assert data[1] == 0x80 | 0
    assert data[2:12] == bytes.fromhex("0001000000a001020304")
    assert data[12:20] == bytes.fromhex("0000000700000008")
    assert data[20:24] == bytes.fromhex("bede0000")
    assert data[-2:] == b"\x00\x02"
    assert BASE.serialize()[:2] == b"\x80\x00"


@pytest.mark.parametrize(
    ("field", "value", "header"),
    [
        ("sequence", 65536, "0000"),
        ("sequence", 70000, f"{70000 & 0xFFFF:04x}"),
        ("sequence", -1, "ffff"),
        ("timestamp", 2**32 + 5, "00000005"),
        ("timestamp", -160, f"{(-160) & 0xFFFFFFFF:08x}"),
    ],
)
def test_sequence_and_timestamp_wrap(field: str, value: int, header: str) -> None:
    data = replace(BASE, **{field: value}).serialize()
    offset = 2 if field == "sequence" else 4
    assert data[offset : offset + len(header) // 2] == bytes.fromhex(header)
    assert getattr(RtpPacket.parse(data), field) == int(header, 16)


def test_payload_type_cannot_set_the_marker() -> None:
    data = replace(BASE, payload_type=0xFF).serialize()
    assert data[1] == 0x7F
    assert RtpPacket.parse(data).marker is False


def test_extension_length_must_be_whole_words() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        replace(BASE, extension=(0xBEDE, b"\x10\x01\x00")).serialize()


def test_more_than_15_csrcs_are_refused() -> None:
    with pytest.raises((ValueError, LocalProtocolError)):
        replace(BASE, csrc=tuple(range(16))).serialize()


# -- malformed packets ---------------------------------------------------------------------------

HEADER = bytes.fromhex("80 00 0001 000000a0 01020304")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "RTP packet of 0 bytes is shorter than its header"),
        (HEADER[:11], "RTP packet of 11 bytes is shorter than its header"),
        (bytes([0x00]) + HEADER[1:], "RTP version 0, expected 2"),
        (bytes([0x40]) + HEADER[1:], "RTP version 1, expected 2"),
        (bytes([0xC0]) + HEADER[1:] + b"\xff" * 8, "RTP version 3, expected 2"),
        # CC=2 with a single CSRC.
        (bytes([0x82]) + HEADER[1:] + b"\x00\x00\x00\x07", "RTP packet truncated in its CSRC list"),
        (bytes([0x81]) + HEADER[1:], "RTP packet truncated in its CSRC list"),
        # X set, only 2 of the 4 extension header bytes.
        (bytes([0x90]) + HEADER[1:] + b"\xbe\xde", "RTP packet truncated in its extension header"),
        # X and CC=1: the extension header would start after the CSRC.
        (bytes([0x91]) + HEADER[1:] + b"\x00" * 4, "RTP packet truncated in its extension header"),
        # X set, the extension announces 2 words and carries 1.
        (
            bytes([0x90]) + HEADER[1:] + b"\xbe\xde\x00\x02" + b"\x10\x01\x00\x00",
            "RTP packet truncated in its extension",
        ),
        # P set with a zero count.
        (bytes([0xA0]) + HEADER[1:] + b"\xff\xff\x00", "bad RTP padding length 0"),
        # P set with a count larger than what follows the header.
        (bytes([0xA0]) + HEADER[1:] + b"\xff\xff\x04", "bad RTP padding length 4"),
        (bytes([0xA0]) + HEADER[1:12], "bad RTP padding length 4"),
        # The padding may not eat into the extension.
        (
            bytes([0xB0]) + HEADER[1:] + b"\xbe\xde\x00\x01" + b"\x10\x01\x00\x02",
            "bad RTP padding length 2",
        ),
    ],
)
def test_malformed(data: bytes, error: str) -> None:
    with pytest.raises(RtpError, match=f"^{error}$") as info:
        RtpPacket.parse(data)
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("cut", [1, 100, 159, 160])
def test_truncated_captures_still_parse_as_shorter_payloads(cut: int) -> None:
    data = load("baresip_pcmu.rtp")[:-cut]
    assert RtpPacket.parse(data).payload == data[12:]


def test_padding_of_exactly_the_rest_is_allowed() -> None:
    data = bytes([0xA0]) + HEADER[1:] + b"\x00\x00\x00\x04"
    pkt = RtpPacket.parse(data)
    assert (pkt.payload, pkt.padding) == (b"", 4)
    assert pkt.serialize() == data
