"""SDP offer/answer for one audio stream, against the SDP of real stacks (tests/data/sdp/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercom import sdp
from intercom.errors import RemoteProtocolError
from intercom.sdp import PCMA, PCMU, TELEPHONE_EVENT, AudioStream, Codec

SDP_DIR = Path(__file__).resolve().parents[1] / "data" / "sdp"


def load(name: str) -> bytes:
    return (SDP_DIR / name).read_bytes()


def body(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


G722 = Codec(9, "G722", 8000)
TE101 = Codec(101, "telephone-event", 8000)

EXPECTED: dict[str, AudioStream] = {
    "ozeki.sdp": AudioStream(
        address="192.168.115.149",
        port=6309,
        codecs=[
            PCMA,
            PCMU,
            Codec(3, "GSM", 8000),
            TE101,
            G722,
            Codec(104, "G726-16", 8000),
            Codec(98, "iLBC", 8000),
        ],
        direction="sendrecv",
        ptime=None,
        fmtp={9: "bitrate=64000", 98: "mode=20"},  # nothing of the video stream
        media_lines=["audio 6309 RTP/AVP 8 0 3 101 9 104 98", "video 6530 RTP/AVP 34 102 99"],
    ),
    "baresip.sdp": AudioStream(
        address="127.0.0.1",
        port=22986,
        codecs=[PCMU, PCMA, G722, TE101],
        direction="sendrecv",
        ptime=20,
        fmtp={101: "0-15"},
        media_lines=["audio 22986 RTP/AVP 0 8 9 101"],
    ),
    "linphone.sdp": AudioStream(
        address="127.0.0.1",
        port=22726,
        # Static payload types without rtpmap come from the RFC 3551 table (G722 has an RTP
        # clock of 8000 whatever its sampling rate).
        codecs=[PCMU, PCMA, G722, Codec(96, "telephone-event", 8000)],
        direction="sendrecv",
        ptime=None,
        fmtp={},
        media_lines=["audio 22726 RTP/AVP 0 8 9 96"],
    ),
    "asterisk_offer.sdp": AudioStream(
        address="192.168.1.10",
        port=10328,
        codecs=[PCMA, PCMU, G722, TE101],
        direction="sendrecv",
        ptime=20,
        fmtp={101: "0-16"},
        media_lines=["audio 10328 RTP/AVP 8 0 9 101"],
    ),
    "asterisk_answer.sdp": AudioStream(
        address="192.168.1.10",
        port=17062,
        codecs=[PCMU, TE101],
        direction="sendrecv",
        ptime=20,
        fmtp={101: "0-16"},
        media_lines=["audio 17062 RTP/AVP 0 101"],
    ),
    "asterisk_direct_media.sdp": AudioStream(
        address="192.168.1.23",
        port=4000,
        codecs=[PCMA, TE101],
        direction="sendrecv",
        ptime=20,
        fmtp={101: "0-16"},
        media_lines=["audio 4000 RTP/AVP 8 101"],
    ),
    "fritzbox.sdp": AudioStream(
        address="192.168.178.1",
        port=7078,
        codecs=[G722, PCMA, PCMU, TE101],
        direction="sendrecv",
        ptime=20,
        fmtp={101: "0-15"},
        media_lines=["audio 7078 RTP/AVP 9 8 0 101"],
    ),
    "hold_zero_address.sdp": AudioStream(
        address="0.0.0.0",
        port=58000,
        codecs=[PCMA, TE101],
        direction="sendrecv",
        ptime=20,
        fmtp={101: "0-15"},
        media_lines=["audio 58000 RTP/AVP 8 101"],
    ),
    "hold_sendonly.sdp": AudioStream(
        address="192.168.1.10",
        port=10328,
        codecs=[PCMA, TE101],
        direction="sendonly",
        ptime=20,
        fmtp={101: "0-16"},
        media_lines=["audio 10328 RTP/AVP 8 101"],
    ),
    "session_level.sdp": AudioStream(
        address="2001:db8::4",  # from the session level; the second audio stream is ignored
        port=54400,
        codecs=[PCMU, PCMA],
        direction="recvonly",
        ptime=None,
        fmtp={},
        media_lines=["audio 54400 RTP/AVP 0 8", "audio 54402 RTP/AVP 8"],
    ),
    "media_level_overrides.sdp": AudioStream(
        address="198.51.100.7",  # the media-level c=, without its TTL
        port=54400,
        codecs=[PCMA, Codec(96, "opus", 48000, 2), Codec(97, "telephone-event", 48000)],
        direction="inactive",  # the media level wins over the session's sendonly
        ptime=40,
        fmtp={96: "useinbandfec=1; stereo=0"},
        media_lines=["audio 54400 RTP/AVP 8 96 97"],
    ),
}
ON_HOLD = {"hold_zero_address.sdp", "hold_sendonly.sdp", "media_level_overrides.sdp"}


def test_every_audio_file_is_tested() -> None:
    assert sorted(p.name for p in SDP_DIR.glob("*.sdp")) == sorted([*EXPECTED, "video_only.sdp"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_audio(name: str) -> None:
    data = load(name)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    stream = sdp.parse_audio(data)
    assert stream == EXPECTED[name]
    assert stream.on_hold is (name in ON_HOLD)


def test_lf_only_sdp_parses_the_same() -> None:
    data = load("asterisk_offer.sdp")
    assert sdp.parse_audio(data.replace(b"\r\n", b"\n")) == EXPECTED["asterisk_offer.sdp"]


def test_codec_rtpmap() -> None:
    assert PCMU.rtpmap == "PCMU/8000"
    assert Codec(101, "telephone-event", 8000) == TELEPHONE_EVENT


# -- session level against media level -----------------------------------------------------------

SESSION = ("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-")


@pytest.mark.parametrize(
    ("lines", "address", "direction"),
    [
        (("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 5004 RTP/AVP 0"), "192.0.2.1", "sendrecv"),
        (("t=0 0", "m=audio 5004 RTP/AVP 0", "c=IN IP4 192.0.2.9"), "192.0.2.9", "sendrecv"),
        (
            ("c=IN IP4 192.0.2.1", "t=0 0", "a=sendonly", "m=audio 5004 RTP/AVP 0"),
            "192.0.2.1",
            "sendonly",
        ),
        (
            ("c=IN IP4 192.0.2.1", "a=inactive", "t=0 0", "m=audio 5004 RTP/AVP 0", "a=sendrecv"),
            "192.0.2.1",
            "sendrecv",
        ),
        (
            ("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 5004 RTP/AVP 0", "c=IN IP6 ::", "a=recvonly"),
            "::",
            "recvonly",
        ),
        # Lines after the audio stream (another media section) do not change it.
        (
            (
                "c=IN IP4 192.0.2.1",
                "t=0 0",
                "m=audio 5004 RTP/AVP 0",
                "m=video 5006 RTP/AVP 99",
                "c=IN IP4 192.0.2.77",
                "a=sendonly",
                "a=ptime:60",
                "a=rtpmap:0 H264/90000",
            ),
            "192.0.2.1",
            "sendrecv",
        ),
    ],
)
def test_session_and_media_level(lines: tuple[str, ...], address: str, direction: str) -> None:
    stream = sdp.parse_audio(body(*SESSION, *lines))
    assert (stream.address, stream.direction) == (address, direction)
    assert stream.codecs == [PCMU]
    assert stream.ptime is None


def test_media_section_before_audio_does_not_leak() -> None:
    stream = sdp.parse_audio(
        body(
            *SESSION,
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=video 5006 RTP/AVP 99",
            "c=IN IP4 192.0.2.77",
            "a=rtpmap:99 H264/90000",
            "a=inactive",
            "m=audio 5004 RTP/AVP 8",
        )
    )
    assert (stream.address, stream.direction) == ("192.0.2.1", "sendrecv")


@pytest.mark.parametrize(
    ("line", "on_hold"),
    [
        ("c=IN IP4 0.0.0.0", True),
        ("c=IN IP6 ::", True),
        ("c=IN IP4 192.0.2.5", False),
    ],
)
def test_hold_by_address(line: str, on_hold: bool) -> None:
    stream = sdp.parse_audio(body(*SESSION, line, "t=0 0", "m=audio 5004 RTP/AVP 0"))
    assert stream.on_hold is on_hold


@pytest.mark.parametrize(
    ("direction", "on_hold"),
    [("sendrecv", False), ("recvonly", False), ("sendonly", True), ("inactive", True)],
)
def test_hold_by_direction(direction: str, on_hold: bool) -> None:
    stream = sdp.parse_audio(
        body(*SESSION, "c=IN IP4 192.0.2.5", "t=0 0", "m=audio 5004 RTP/AVP 0", f"a={direction}")
    )
    assert stream.direction == direction
    assert stream.on_hold is on_hold


def test_port_count_and_unknown_static_payload() -> None:
    stream = sdp.parse_audio(
        body(*SESSION, "c=IN IP4 192.0.2.5", "t=0 0", "m=audio 49170/2 RTP/AVP 18 0 4")
    )
    assert stream.port == 49170
    assert stream.codecs == [PCMU]  # 18 (G729) and 4 (G723) have no rtpmap and no table entry


def test_rtpmap_case_and_channels() -> None:
    stream = sdp.parse_audio(
        body(
            *SESSION,
            "c=IN IP4 192.0.2.5",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0 111 112",
            "a=rtpmap:0 pcmu/8000",
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:112 L16/16000/x",
            "a=rtpmap:113 unused/8000",
            "a=rtpmap:bad PCMA/8000",
        )
    )
    assert stream.codecs == [
        Codec(0, "pcmu", 8000),
        Codec(111, "opus", 48000, 2),
        Codec(112, "L16", 16000, 1),
    ]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (load("video_only.sdp"), "SDP has no audio stream"),
        (b"", "SDP has no audio stream"),
        (b"not sdp at all", "SDP has no audio stream"),
        (body(*SESSION, "c=IN IP4 192.0.2.5", "t=0 0", "m=audio 5004"), "SDP has no audio stream"),
        (body(*SESSION, "t=0 0", "m=audio 5004 RTP/AVP 0"), "SDP audio stream has no connection"),
        (
            body(*SESSION, "t=0 0", "m=audio 5004 RTP/AVP 0", "c=IN IP4"),
            "SDP audio stream has no connection",
        ),
        (b"v=0\r\ns=\xff\r\n", "SDP is not UTF-8"),
        (body(*SESSION, "c=IN IP4 192.0.2.5", "m=audio x RTP/AVP 0"), "bad m= line 'audio x"),
        (body(*SESSION, "c=IN IP4 192.0.2.5", "m=audio 5004 RTP/AVP pcmu"), "bad m= line"),
    ],
)
def test_unusable_sdp_is_488(data: bytes, error: str) -> None:
    with pytest.raises(RemoteProtocolError, match=error) as info:
        sdp.parse_audio(data)
    assert info.value.status_hint == 488


# -- choose_codec and answer ---------------------------------------------------------------------

OURS = [PCMU, PCMA, TELEPHONE_EVENT]


def test_answer_to_asterisk_offer() -> None:
    offer = sdp.parse_audio(load("asterisk_offer.sdp"))
    answer = sdp.answer(offer, "192.168.1.50", 40000, OURS, session_id=42)
    # The offerer's first codec that we speak (PCMA before PCMU), and its telephone-event.
    assert answer == body(
        "v=0",
        "o=pi-intercom 42 1 IN IP4 192.168.1.50",
        "s=pi-intercom",
        "c=IN IP4 192.168.1.50",
        "t=0 0",
        "m=audio 40000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_answer_to_ozeki_offer_refuses_the_video_stream() -> None:
    offer = sdp.parse_audio(load("ozeki.sdp"))
    answer = sdp.answer(offer, "192.168.1.50", 40000, OURS, session_id=42)
    assert answer == body(
        "v=0",
        "o=pi-intercom 42 1 IN IP4 192.168.1.50",
        "s=pi-intercom",
        "c=IN IP4 192.168.1.50",
        "t=0 0",
        "m=audio 40000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "m=video 0 RTP/AVP 34",
    )


def test_answer_when_audio_is_not_the_first_stream() -> None:
    offer = sdp.parse_audio(
        body(
            *SESSION,
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=video 5006 RTP/AVP 99 100",
            "a=rtpmap:99 H264/90000",
            "m=audio 5004 RTP/AVP 0",
            "m=application 5008 UDP/BFCP *",
        )
    )
    assert (offer.index, offer.port, offer.codecs) == (1, 5004, [PCMU])
    assert offer.media_lines == [
        "video 5006 RTP/AVP 99 100",
        "audio 5004 RTP/AVP 0",
        "application 5008 UDP/BFCP *",
    ]
    answer = sdp.answer(offer, "192.0.2.6", 6000, OURS, session_id=5)
    assert answer == body(
        "v=0",
        "o=pi-intercom 5 1 IN IP4 192.0.2.6",
        "s=pi-intercom",
        "c=IN IP4 192.0.2.6",
        "t=0 0",
        "m=video 0 RTP/AVP 99",
        "m=audio 6000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
        "m=application 0 UDP/BFCP *",
    )
    parsed = sdp.parse_audio(answer)
    assert (parsed.address, parsed.port, parsed.index) == ("192.0.2.6", 6000, 1)


@pytest.mark.parametrize(
    ("name", "codecs", "direction"),
    [
        ("ozeki.sdp", [PCMA, TE101], "sendrecv"),
        ("baresip.sdp", [PCMU, TE101], "sendrecv"),
        ("linphone.sdp", [PCMU, Codec(96, "telephone-event", 8000)], "sendrecv"),
        ("fritzbox.sdp", [PCMA, TE101], "sendrecv"),  # G722 is not ours
        ("asterisk_direct_media.sdp", [PCMA, TE101], "sendrecv"),
        ("hold_zero_address.sdp", [PCMA, TE101], "sendrecv"),
        ("hold_sendonly.sdp", [PCMA, TE101], "recvonly"),
        ("session_level.sdp", [PCMU], "sendonly"),
        # telephone-event/48000 does not go with PCMA/8000.
        ("media_level_overrides.sdp", [PCMA], "inactive"),
    ],
)
def test_answer_to_captured_offers(name: str, codecs: list[Codec], direction: str) -> None:
    offer = sdp.parse_audio(load(name))
    answer = sdp.answer(offer, "192.168.1.50", 40000, OURS, session_id=7, version=3)
    assert answer is not None
    assert b"\r\no=pi-intercom 7 3 IN IP4 192.168.1.50\r\n" in answer
    parsed = sdp.parse_audio(answer)
    assert parsed.address == "192.168.1.50"
    assert parsed.port == 40000
    assert parsed.codecs == codecs
    assert parsed.direction == direction
    assert parsed.ptime == 20
    # As many m= lines as the offer (RFC 3264 section 6), the others refused with port 0.
    assert parsed.index == offer.index == 0
    assert len(parsed.media_lines) == len(offer.media_lines)
    assert [m.split()[1] for m in parsed.media_lines[1:]] == ["0"] * (len(offer.media_lines) - 1)


def test_choose_codec_follows_the_offer_order() -> None:
    offer = sdp.parse_audio(load("fritzbox.sdp"))  # G722, PCMA, PCMU, telephone-event
    assert sdp.choose_codec(offer, [PCMU, PCMA]) == PCMA
    assert sdp.choose_codec(offer, [PCMU]) == PCMU
    assert sdp.choose_codec(offer, [TELEPHONE_EVENT]) is None
    assert sdp.choose_codec(offer, [Codec(9, "g722", 8000)]) == G722


def test_choose_codec_matches_names_case_insensitively() -> None:
    offer = sdp.parse_audio(
        body(
            *SESSION,
            "c=IN IP4 192.0.2.5",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0",
            "a=rtpmap:0 pcmu/8000",
        )
    )
    assert sdp.choose_codec(offer, [PCMU]) == Codec(0, "pcmu", 8000)


@pytest.mark.parametrize(
    "media",
    [
        ("m=audio 5004 RTP/AVP 9 101", "a=rtpmap:9 G722/8000", "a=rtpmap:101 telephone-event/8000"),
        ("m=audio 5004 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000"),
        ("m=audio 5004 RTP/AVP 96", "a=rtpmap:96 opus/48000/2"),
        ("m=audio 5004 RTP/AVP",),
    ],
)
def test_answer_is_none_without_a_shared_codec(media: tuple[str, ...]) -> None:
    offer = sdp.parse_audio(body(*SESSION, "c=IN IP4 192.0.2.5", "t=0 0", *media))
    assert sdp.choose_codec(offer, OURS) is None
    assert sdp.answer(offer, "192.168.1.50", 40000, OURS, session_id=1) is None


def test_answer_keeps_only_the_first_telephone_event_of_the_codec_rate() -> None:
    offer = sdp.parse_audio(
        body(
            *SESSION,
            "c=IN IP4 192.0.2.5",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0 97 100 101",
            "a=rtpmap:97 telephone-event/16000",
            "a=rtpmap:100 telephone-event/8000",
            "a=rtpmap:101 telephone-event/8000",
        )
    )
    answer = sdp.answer(offer, "192.0.2.6", 6000, [PCMU], session_id=1)
    assert answer is not None
    assert sdp.parse_audio(answer).codecs == [PCMU, Codec(100, "telephone-event", 8000)]


# -- build ---------------------------------------------------------------------------------------


def test_build_offer_exact_bytes() -> None:
    offer = sdp.build("192.168.1.50", 40000, OURS, session_id=123456, version=2)
    assert offer == body(
        "v=0",
        "o=pi-intercom 123456 2 IN IP4 192.168.1.50",
        "s=pi-intercom",
        "c=IN IP4 192.168.1.50",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )


@pytest.mark.parametrize("direction", ["sendrecv", "sendonly", "recvonly", "inactive"])
@pytest.mark.parametrize("ptime", [20, 30])
def test_build_parses_back_to_the_same_stream(direction: str, ptime: int) -> None:
    codecs = [PCMA, PCMU, Codec(9, "G722", 8000), TELEPHONE_EVENT]
    data = sdp.build("10.0.0.2", 4002, codecs, session_id=1, direction=direction, ptime=ptime)
    assert sdp.parse_audio(data) == AudioStream(
        address="10.0.0.2",
        port=4002,
        codecs=codecs,
        direction=direction,
        ptime=ptime,
        fmtp={101: "0-16"},
        media_lines=["audio 4002 RTP/AVP 8 0 9 101"],
        index=0,
    )


def test_build_rejects_a_bad_direction() -> None:
    with pytest.raises(ValueError, match="bad direction 'hold'"):
        sdp.build("10.0.0.2", 4002, [PCMU], session_id=1, direction="hold")


def test_build_keeps_channel_count() -> None:
    opus = Codec(111, "opus", 48000, 2)
    data = sdp.build("10.0.0.2", 4002, [opus], session_id=1)
    assert sdp.parse_audio(data).codecs == [opus]
