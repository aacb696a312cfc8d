"""Property tests (hypothesis) for every parser of network input (issue 10).

For each parser: any input gives a parsed value or the parser's own error and nothing else (no
ValueError, IndexError, UnicodeError...), what parses stays within the caps, and where a
serializer exists, serializing what was parsed parses back to the same value. Inputs are
arbitrary bytes and text, and the real messages of tests/data/sip mutated: header values
replaced by odd Unicode or digits, lines repeated hundreds of times, cut, spliced with bytes.

The hypothesis profile (tests/conftest.py) is deterministic with a moderate number of examples;
``HYPOTHESIS_PROFILE=dev`` explores further.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from intercom import sdp
from intercom.errors import AuthError, ParseError, RemoteProtocolError
from intercom.media.dtmf import DIGITS, DtmfReceiver, parse_info
from intercom.media.rtp import RtpError, RtpPacket
from intercom.mqtt.commands import CommandError, ring_targets
from intercom.sip.address import NameAddr, SipUri, Via
from intercom.sip.auth import Credentials, DigestClient, mask_secrets, parse_challenge
from intercom.sip.message import (
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_HOPS,
    MAX_MESSAGE,
    Message,
    SipRequest,
    StreamParser,
    header_key,
    parse_message,
)

SIP_DIR = Path(__file__).resolve().parents[1] / "data" / "sip"
REAL = [p.read_bytes() for p in sorted(SIP_DIR.glob("*.sip"))]

#: Characters that broke or could break a parser: digits int() reads or refuses, Unicode
#: spaces and line separators, controls, and every SIP delimiter.
ODD = [
    "\u00b2", "\u0663", "\u0665", "\uff15", "\u00a0", "\u2028", "\u2029", "\x85", "\ufeff",
    "\u0130", "\x00", "\r", "\n", "\t", "\x1b", "\x7f", " ", '"', "\\", "<", ">", ",", ";",
    ":", "@", "[", "]", "=", "?", "/", "-", "+", "_", "0", "1", "9",
]  # fmt: skip
odd_text = st.text(st.one_of(st.sampled_from(ODD), st.characters()), max_size=40)
digits = st.one_of(st.from_regex(r"[0-9]{1,25}", fullmatch=True), st.sampled_from(ODD[:4]))


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A real message with one to three mutations."""
    lines, body = _lines(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(1, len(lines) - 1)) if len(lines) > 1 else 0
        name = lines[i].partition(b":")[0] if i else b"X"
        op = draw(
            st.sampled_from(["value", "digits", "repeat", "long", "drop", "bytes", "cut", "body"])
        )
        if op == "value":
            lines[i] = name + b": " + draw(odd_text).encode("utf-8", "surrogatepass")
        elif op == "digits":
            lines[i] = name + b": " + draw(digits).encode() + draw(st.sampled_from([b"", b" x"]))
        elif op == "repeat":
            lines[i:i] = [lines[i]] * draw(st.integers(1, 300))
        elif op == "long":
            lines[i] = name + b": " + b"a," * draw(st.integers(1000, 3000))
        elif op == "drop":
            del lines[i]
        elif op == "bytes":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.binary(max_size=8)) + lines[i][at:]
        elif op == "cut":
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
        else:
            body = draw(st.binary(max_size=100))
        if not lines:
            lines = [b""]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _comparable(msg: Message) -> tuple[object, ...]:
    items = [(n, v) for n, v in msg.headers.items if header_key(n) != "content-length"]
    start = (msg.method, msg.uri) if isinstance(msg, SipRequest) else (msg.status, msg.reason)
    return (start, items, msg.body)


def _within_caps(data: bytes) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return (
        len(data) <= MAX_MESSAGE
        and len(head) - 1 <= MAX_HEADERS
        and (max(len(line.decode()) for line in head) <= MAX_HEADER_LINE)
    )


def check_message(data: bytes) -> None:
    """Parse ``data``; what parses must hold to the caps, read cleanly, and round-trip."""
    try:
        msg = parse_message(data)
    except ParseError:
        return
    assert len(data) <= MAX_MESSAGE
    assert len(msg.headers.items) <= MAX_HEADERS
    assert all(len(v) <= MAX_HEADER_LINE for _, v in msg.headers.items)
    for name in ("Via", "Route", "Record-Route"):
        assert len(msg.headers.get_all(name)) <= MAX_HOPS
    assert msg.cseq[0] <= 0xFFFFFFFF
    # What the stack parses next raises the parsers' own errors only.
    for name in ("From", "To", "Contact", "Route", "Record-Route"):
        for value in msg.headers.get_all(name):
            with contextlib.suppress(ParseError):
                NameAddr.parse(value)
    for value in msg.vias:
        with contextlib.suppress(ParseError):
            Via.parse(value)
    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
        for value in msg.headers.get_all(name):
            with contextlib.suppress(AuthError):
                parse_challenge(value)
    if isinstance(msg, SipRequest):
        with contextlib.suppress(ParseError):
            SipUri.parse(msg.uri)
    out = msg.to_bytes()
    if _within_caps(out):
        assert _comparable(parse_message(out)) == _comparable(msg)


@given(st.binary(max_size=3000))
def test_any_bytes_give_a_message_or_a_parse_error(data: bytes) -> None:
    check_message(data)


@given(mutated_messages())
def test_mutated_real_messages_give_a_message_or_a_parse_error(data: bytes) -> None:
    check_message(data)


@given(st.sampled_from(REAL), st.integers(0, 3))
def test_real_messages_round_trip(data: bytes, keepalives: int) -> None:
    msg = parse_message(b"\r\n" * keepalives + data)
    assert _comparable(parse_message(msg.to_bytes())) == _comparable(msg)


# -- URIs, name-addrs, Vias ----------------------------------------------------------------------

uri_like = st.one_of(
    odd_text.map(lambda t: "sip:" + t),
    st.from_regex(
        r"(sips?|tel|SIP):([a-z0-9+.:%]{0,8}@)?(\[[0-9a-f:]{2,10}\]|[a-z0-9.-]{1,12})"
        r"(:[0-9\u00b2]{0,6})?(;[a-z]{1,5}(=[a-z0-9 ]{0,5})?){0,3}(\?[a-z=&]{0,8})?",
        fullmatch=True,
    ),
)


@given(st.one_of(uri_like, odd_text))
def test_sip_uri(text: str) -> None:
    try:
        uri = SipUri.parse(text)
    except ParseError:
        return
    assert uri.port is None or 0 < uri.port < 65536
    assert not re.search(r"[\x00-\x1f\x7f]", str(uri))
    assert SipUri.parse(str(uri)) == uri


@given(st.one_of(odd_text, odd_text, uri_like), st.one_of(uri_like, odd_text), odd_text)
def test_name_addr(display: str, uri: str, params: str) -> None:
    for text in (f"{display} <{uri}>{params}", f'"{display}" <{uri}>;{params}', f"{uri};{params}"):
        try:
            addr = NameAddr.parse(text)
        except ParseError:
            continue
        assert NameAddr.parse(str(addr)) == addr


via_like = st.from_regex(
    r"SIP */ *2\.0 */ *(UDP|tcp|X)[ \t]+([a-z0-9.]{1,8}|\[[0-9a-f:]{2,8}\])(:[0-9\u00b2]{0,6})?"
    r"( *;[ a-z]{1,6}(=[a-z0-9.]{0,6})?){0,3}",
    fullmatch=True,
)


@given(st.one_of(via_like, odd_text, via_like.map(lambda v: v + "\u00b2")))
def test_via(text: str) -> None:
    try:
        via = Via.parse(text)
    except ParseError:
        return
    assert via.port is None or 0 < via.port < 65536
    assert Via.parse(str(via)) == via


# -- digest challenges ---------------------------------------------------------------------------

param = st.tuples(
    st.one_of(
        st.sampled_from(["realm", "nonce", "qop", "algorithm", "opaque", "stale", "domain"]),
        st.from_regex(r"[A-Za-z\-]{1,6}", fullmatch=True),
    ),
    st.one_of(
        odd_text.map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
        odd_text,
        st.sampled_from(
            ["auth", '"auth-conf"', '"auth,auth-int"', "MD5", "sha-256-sess", "AKAv1-MD5", "true"]
        ),
    ),
)


@st.composite
def challenge_like(draw: st.DrawFn) -> str:
    """Mostly Digest with a realm and a nonce, so that many parse; odd values and extras."""
    scheme = draw(st.sampled_from(["Digest", "Digest", "Digest", "digest", "Basic", ""]))
    params = draw(st.lists(param, max_size=5))
    for name in ("realm", "nonce"):
        if draw(st.integers(0, 9)):
            params.insert(draw(st.integers(0, len(params))), (name, draw(param)[1]))
    sep = draw(st.sampled_from([", ", ",", " ", "\r\n  "]))
    return scheme + " " + sep.join(f"{n}={v}" for n, v in params)


@given(st.one_of(challenge_like(), odd_text), st.booleans())
def test_challenge_parses_only_when_authorize_can_answer(text: str, proxy: bool) -> None:
    try:
        challenge = parse_challenge(text, proxy=proxy)
    except AuthError:
        return
    value = DigestClient(Credentials("door", "secret")).authorize(challenge, "REGISTER", "sip:x")
    assert value.startswith("Digest ") and not re.search(r"[\x00-\x1f\x7f]", value)
    assert "secret" not in mask_secrets(value) or "secret" in challenge.realm + challenge.nonce


@given(st.one_of(odd_text, challenge_like()).map(lambda t: "Authorization: " + t))
def test_mask_secrets_never_raises_and_keeps_the_line_ends(text: str) -> None:
    assert mask_secrets(text).count("\n") == text.count("\n")


# -- SDP -----------------------------------------------------------------------------------------

sdp_line = st.tuples(
    st.sampled_from("vosctmab"),
    st.one_of(
        odd_text,
        st.sampled_from(
            [
                "IN IP4 192.0.2.1",
                "IN IP6 ::1",
                "IN IP4 host.example",
                "audio 5004 RTP/AVP 0 8 101",
                "audio 0 RTP/AVP 9",
                "video 5006 RTP/AVP 31",
                "rtpmap:101 telephone-event/8000",
                "rtpmap:9 G722/8000",
                "rtpmap:8 PCMA/0",
                "fmtp:101 0-16",
                "ptime:20",
                "sendonly",
                "inactive",
            ]
        ),
        digits.map(lambda d: f"audio {d} RTP/AVP {d}"),
    ),
).map(lambda kv: f"{kv[0]}={kv[1]}")


SDP_DIR = SIP_DIR.parent / "sdp"
REAL_SDP = [p.read_text().splitlines() for p in sorted(SDP_DIR.glob("*.sdp"))]


@st.composite
def mutated_sdp(draw: st.DrawFn) -> bytes:
    """A real SDP body with lines replaced, inserted or repeated (m= lines past the cap)."""
    lines = list(draw(st.sampled_from(REAL_SDP)))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines)))
        op = draw(st.sampled_from(["replace", "insert", "repeat"]))
        if op == "replace" and i < len(lines):
            lines[i] = draw(sdp_line)
        elif op == "insert":
            lines.insert(i, draw(sdp_line))
        elif i < len(lines):
            lines[i:i] = [lines[i]] * draw(st.integers(1, 20))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogatepass")


@given(
    st.one_of(
        mutated_sdp(),
        st.lists(sdp_line, max_size=25).map(lambda ls: "\r\n".join(ls).encode("utf-8", "replace")),
        st.binary(max_size=500),
    )
)
def test_sdp_gives_a_stream_or_488_and_an_answer_without_raising(body: bytes) -> None:
    try:
        stream = sdp.parse_audio(body)
    except RemoteProtocolError as exc:
        assert exc.status_hint == 488
        return
    assert 0 <= stream.port <= 65535
    assert len(stream.media_lines) <= sdp.MAX_MEDIA
    assert all(0 <= c.pt <= 127 and c.rate > 0 and c.channels > 0 for c in stream.codecs)
    ipaddress.ip_address(stream.address)
    ours = sdp.offer_codecs(["G722", "PCMA", "PCMU"])
    answer = sdp.answer(stream, "192.0.2.9", 4000, ours, session_id=1)
    if answer is not None:
        again = sdp.parse_audio(answer)
        assert len(again.media_lines) == len(stream.media_lines)


# -- RTP and RFC 4733 ----------------------------------------------------------------------------

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=40),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)


@given(packets)
def test_rtp_parse_inverts_serialize(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


@given(st.one_of(st.binary(max_size=200), packets.map(RtpPacket.serialize).map(lambda b: b[:-3])))
def test_rtp_any_bytes_give_a_packet_or_an_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    padded = data[len(data) - packet.padding : -1] if packet.padding else b""
    if not padded.strip(b"\x00"):  # padding is not kept, only its length
        assert packet.serialize() == data


events = st.binary(max_size=20) | st.lists(
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF)), max_size=4
).map(lambda evs: b"".join(bytes([c, f]) + d.to_bytes(2, "big") for c, f, d in evs))


@given(
    st.lists(
        st.builds(
            RtpPacket,
            payload_type=st.just(101),
            sequence=st.integers(0, 0xFFFF),
            timestamp=st.sampled_from([0, 160, 320, 0xFFFFFF00]) | st.integers(0, 0xFFFFFFFF),
            ssrc=st.sampled_from([1, 2]),
            payload=events,
        ),
        max_size=20,
    ),
    st.sampled_from([8000, 16000]),
)
def test_rfc4733_receiver_never_raises(packets: list[RtpPacket], rate: int) -> None:
    rx = DtmfReceiver(clock_rate=rate)
    found = [digit for packet in packets for digit in rx.feed(packet)]
    assert all(d.digit in DIGITS and d.method == "rfc4733" for d in found)
    assert len(found) == rx.digits <= sum(len(p.payload) // 4 for p in packets)


info_body = st.one_of(
    st.binary(max_size=100),
    st.tuples(odd_text, st.one_of(digits, odd_text)).map(
        lambda sd: f"Signal={sd[0]}\r\nDuration={sd[1]}\r\n".encode("utf-8", "surrogatepass")
    ),
)


@given(
    st.sampled_from(["application/dtmf-relay", "application/DTMF", "text/plain"]) | odd_text,
    info_body,
)
def test_sip_info_gives_a_digit_or_none(content_type: str, body: bytes) -> None:
    digit = parse_info(content_type, body)
    assert digit is None or (digit.digit in DIGITS and digit.method == "info")


# -- the TCP framer ------------------------------------------------------------------------------

keepalive = st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])


@given(
    st.lists(st.tuples(keepalive, st.sampled_from(REAL)), min_size=1, max_size=6),
    st.lists(st.integers(0, 20_000), max_size=30),
)
def test_framer_gives_the_same_messages_however_the_stream_is_cut(
    parts: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(k + m for k, m in parts)
    whole = StreamParser().feed(stream)
    assert whole == [m for _, m in parts]
    parser = StreamParser()
    got: list[bytes] = []
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        got += parser.feed(stream[a:b])
        assert len(parser._buf) <= MAX_MESSAGE
    assert got == whole
    assert parser.scanned <= len(stream) + 4 * len(bounds)


@given(st.lists(st.one_of(st.binary(max_size=3000), mutated_messages()), max_size=8))
def test_framer_garbage_gives_only_parse_errors(chunks: list[bytes]) -> None:
    parser = StreamParser()
    for chunk in chunks:
        try:
            framed = parser.feed(chunk)
        except ParseError:
            assert len(parser._buf) == 0
            continue
        assert len(parser._buf) <= MAX_MESSAGE
        for data in framed:
            assert len(data) <= MAX_MESSAGE
            check_message(data)


# ------------------------------------------------------------------------------------------------
# MQTT commands: a call/ring payload gives checked targets or the command's own error

CONFIGURED = ("621", "**9", "sip:622@fritz.box")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(
    st.one_of(
        st.binary(max_size=200),
        _JSON.map(lambda v: json.dumps({"targets": v}).encode()),
        st.lists(st.sampled_from([*CONFIGURED, "0900", "6\r\n21", "a b"]), max_size=4).map(
            lambda v: json.dumps({"targets": v}).encode()
        ),
        st.integers(1, 4000).map(lambda n: b'{"targets": ' + b"[" * n + b"]" * n + b"}"),
    ),
    st.booleans(),
)
def test_ring_payloads_give_checked_targets_or_a_command_error(
    payload: bytes, any_target: bool
) -> None:
    try:
        targets = ring_targets(payload, configured=CONFIGURED, any_target=any_target)
    except CommandError:
        return
    if targets is None:
        return
    assert targets and len(set(targets)) == len(targets)
    for target in targets:
        assert target.isprintable() and not any(ch.isspace() for ch in target)
        assert any_target or target in CONFIGURED
