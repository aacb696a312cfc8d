"""SIP message parsing and serialization, against real captures (see tests/data/sip/README.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from intercom.errors import ParseError, RemoteProtocolError
from intercom.sip.address import NameAddr, SipUri, Via
from intercom.sip.message import (
    MAX_HEADER_LINE,
    MAX_MESSAGE,
    Headers,
    SipRequest,
    SipResponse,
    StreamParser,
    canonical_name,
    parse_message,
    split_list,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SIP_DIR = DATA / "sip"
SDP_DIR = DATA / "sdp"


def raw(name: str) -> bytes:
    return (SIP_DIR / name).read_bytes()


def head_and_body(data: bytes) -> tuple[bytes, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no blank line"
    return head, body


def without_header(data: bytes, name: bytes) -> bytes:
    """The message with every header line called ``name`` (exact spelling) removed."""
    head, body = head_and_body(data)
    lines = [ln for ln in head.split(b"\r\n") if not ln.startswith(name + b":")]
    assert len(lines) < len(head.split(b"\r\n")), f"{name!r} not in the message"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def replace_header(data: bytes, name: bytes, value: bytes) -> bytes:
    head, body = head_and_body(data)
    lines = head.split(b"\r\n")
    hits = [i for i, ln in enumerate(lines) if ln.startswith(name + b":")]
    assert len(hits) == 1, f"{name!r} found {len(hits)} times"
    lines[hits[0]] = name + b": " + value
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# -- the data files themselves -----------------------------------------------------------------


ROUND_TRIP = [
    "ozeki_1_invite.sip",
    "ozeki_2_100_trying.sip",
    "ozeki_3_407.sip",
    "ozeki_4_ack.sip",
    "ozeki_5_invite_auth.sip",
    "ozeki_6_100_trying.sip",
    "ozeki_7_180_ringing.sip",
    "kamailio_401_register.sip",
    "kamailio_200_register.sip",
    "kamailio_407_invite.sip",
    "kamailio_invite_from_baresip.sip",
    "kamailio_ack_from_baresip.sip",
    "kamailio_bye_from_baresip.sip",
    "kamailio_invite_from_linphone.sip",
    "kamailio_ack_for_486.sip",
    "asterisk_401_register.sip",
    "asterisk_200_invite.sip",
    "asterisk_invite_offer.sip",
    "asterisk_reinvite_direct_media.sip",
    "fritzbox_200_register.sip",
    "fritzbox_180_ringing.sip",
    "fritzbox_invite.sip",
    "edge_compact.sip",
    "edge_lists.sip",
    "edge_ipv6_route.sip",
]
ROUND_TRIP_NAMES = list(ROUND_TRIP)
ALL_MESSAGES = [*ROUND_TRIP_NAMES, "folded_options.sip"]

_CLEN_RE = re.compile(rb"^(?:Content-Length|l)[ \t]*:[ \t]*(\d+)$", re.IGNORECASE)


def test_every_data_file_is_tested() -> None:
    assert sorted(p.name for p in SIP_DIR.glob("*.sip")) == sorted(ALL_MESSAGES)


@pytest.mark.parametrize("name", ALL_MESSAGES)
def test_data_file_is_wire_format(name: str) -> None:
    """CRLF only, a blank line, and a Content-Length equal to the body (checked without the
    parser under test)."""
    data = raw(name)
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"
    head, body = head_and_body(data)
    lengths = [m.group(1) for ln in head.split(b"\r\n") if (m := _CLEN_RE.match(ln))]
    assert lengths == [str(len(body)).encode()]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_is_byte_exact(name: str) -> None:
    data = raw(name)
    assert parse_message(data).to_bytes() == data


@pytest.mark.parametrize("name", ALL_MESSAGES)
def test_serialized_message_parses_back_to_the_same_message(name: str) -> None:
    msg = parse_message(raw(name))
    again = parse_message(msg.to_bytes())
    assert type(again) is type(msg)
    assert repr(again) == repr(msg)
    assert again.headers.items == msg.headers.items
    assert again.body == msg.body


# -- field access on every captured message ------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    start: tuple[str, str] | tuple[int, str]  # (method, uri) or (status, reason)
    call_id: str
    cseq: tuple[int, str]
    from_tag: str | None
    to_tag: str | None
    branches: tuple[str, ...]
    body: int


OZ_CID = "bueqycetejwbeiqcunumrevusitxqmdfyxsyqljybyufynpyoe"
OZ_B1 = "z9hG4bKf76d02e1-1bda-4435-a38d-2577c0f1b73a"
OZ_B2 = "z9hG4bK28ba5053-a4dd-4b85-87fd-695292192185"
OZ_URI = "sip:9999@192.168.115.149"
KAM_TO_PREFIX = "aa0730e61689becd26787e8a7bebcf43."
BS_CID = "5590ab01f17a4c93"
BS_TAG = "d19e4c3eb1c77fc4"
AST_CID = "4e6a8c0e-2b4d-4f61-8a3c-5e7f9b1d3f50"
AST_TAG = "2a7c9e1f-3b5d-4f80-a2c4-6e8f0a1b3c5d"

EXPECTED: dict[str, Expect] = {
    "ozeki_1_invite.sip": Expect(
        ("INVITE", OZ_URI), OZ_CID, (1, "INVITE"), "yudievxj", None, (OZ_B1,), 589
    ),
    "ozeki_2_100_trying.sip": Expect(
        (100, "Trying"), OZ_CID, (1, "INVITE"), "yudievxj", None, (OZ_B1,), 0
    ),
    "ozeki_3_407.sip": Expect(
        (407, "Proxy Authentication Required"),
        OZ_CID,
        (1, "INVITE"),
        "yudievxj",
        "chdmsspj",
        (OZ_B1,),
        0,
    ),
    "ozeki_4_ack.sip": Expect(
        ("ACK", OZ_URI), OZ_CID, (1, "ACK"), "yudievxj", "chdmsspj", (OZ_B1,), 0
    ),
    "ozeki_5_invite_auth.sip": Expect(
        ("INVITE", OZ_URI), OZ_CID, (2, "INVITE"), "yudievxj", None, (OZ_B2,), 589
    ),
    "ozeki_6_100_trying.sip": Expect(
        (100, "Trying"), OZ_CID, (2, "INVITE"), "yudievxj", None, (OZ_B2,), 0
    ),
    "ozeki_7_180_ringing.sip": Expect(
        (180, "Ringing"), OZ_CID, (2, "INVITE"), "yudievxj", "tguefhcq", (OZ_B2,), 0
    ),
    "kamailio_401_register.sip": Expect(
        (401, "Unauthorized"),
        "83db4badc0624852885b8b61bd998c4f",
        (1, "REGISTER"),
        "413ad39f",
        KAM_TO_PREFIX + "77f169e7",
        ("z9hG4bK426a02dad3e8",),
        0,
    ),
    "kamailio_200_register.sip": Expect(
        (200, "OK"),
        "83db4badc0624852885b8b61bd998c4f",
        (2, "REGISTER"),
        "413ad39f",
        KAM_TO_PREFIX + "0beb69e7",
        ("z9hG4bK3ebb1fc7ad60",),
        0,
    ),
    "kamailio_407_invite.sip": Expect(
        (407, "Proxy Authentication Required"),
        "dc25b037704141918d729e964aac8d51",
        (1, "INVITE"),
        "abc123",
        KAM_TO_PREFIX + "c0c2665d",
        ("z9hG4bK81a7588b699a",),
        0,
    ),
    "kamailio_invite_from_baresip.sip": Expect(
        ("INVITE", "sip:621@127.0.0.1:48174"),
        BS_CID,
        (28199, "INVITE"),
        BS_TAG,
        None,
        ("z9hG4bK56fb.a5dda76edc7a44d385c54f3816ffab40.0", "z9hG4bKbd8fbad1164411ef"),
        367,
    ),
    "kamailio_ack_from_baresip.sip": Expect(
        ("ACK", "sip:621@127.0.0.1:48174"),
        BS_CID,
        (28199, "ACK"),
        BS_TAG,
        "cap180tag",
        ("z9hG4bK56fb.52ae8abcc339340eb69f42d37091606e.0", "z9hG4bK4a7f0dda8777966d"),
        0,
    ),
    "kamailio_bye_from_baresip.sip": Expect(
        ("BYE", "sip:621@127.0.0.1:48174"),
        BS_CID,
        (28200, "BYE"),
        BS_TAG,
        "cap180tag",
        ("z9hG4bK5bcb.19dd95fd328b382f3e44e951ee1164af.0", "z9hG4bK46600f727e42e4c1"),
        0,
    ),
    "kamailio_invite_from_linphone.sip": Expect(
        ("INVITE", "sip:621@127.0.0.1:48174"),
        "kREBlTZKbk",
        (21, "INVITE"),
        "DYCu9yWWF",
        None,
        ("z9hG4bK5c6c.806125e3ff384e486a120c97e3fb0c93.0", "z9hG4bK.KsmJPXni2"),
        263,
    ),
    "kamailio_ack_for_486.sip": Expect(
        ("ACK", "sip:621@127.0.0.1:48174"),
        "kREBlTZKbk",
        (21, "ACK"),
        "DYCu9yWWF",
        "busy486",
        ("z9hG4bK5c6c.806125e3ff384e486a120c97e3fb0c93.0",),
        0,
    ),
    "asterisk_401_register.sip": Expect(
        (401, "Unauthorized"),
        "3f9a1c7e5b2d4086a1e9c3b5d7f20418",
        (1, "REGISTER"),
        "6b0e2f41",
        "z9hG4bK7c1e0a52d9b44f3e",
        ("z9hG4bK7c1e0a52d9b44f3e",),
        0,
    ),
    "asterisk_200_invite.sip": Expect(
        (200, "OK"),
        "9b2e4d6f8a1c3e5b7d9f1a3c5e7b9d2f",
        (2, "INVITE"),
        "1e4f7a2c",
        "5d8c2a4e-91b7-4f3d-a6e0-2c9f1b7d3e58",
        ("z9hG4bK0d5c9e3a71f24b68",),
        237,
    ),
    "asterisk_invite_offer.sip": Expect(
        ("INVITE", "sip:door@192.168.1.50:5060"),
        AST_CID,
        (21431, "INVITE"),
        AST_TAG,
        None,
        ("z9hG4bKPj8f1d2c3b-4a5e-4f60-9b7c-1d2e3f4a5b6c",),
        285,
    ),
    "asterisk_reinvite_direct_media.sip": Expect(
        ("INVITE", "sip:door@192.168.1.50:5060"),
        AST_CID,
        (21432, "INVITE"),
        AST_TAG,
        "9f3c1a7e",
        ("z9hG4bKPj0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d",),
        236,
    ),
    "fritzbox_200_register.sip": Expect(
        (200, "OK"),
        "5e2b9d4f7a1c3e6082b4d6f8a0c2e4b6",
        (2, "REGISTER"),
        "8c1f4e7a",
        "3A7F2B91C4D6E805",
        ("z9hG4bK4d2a8f6c1e9b3705",),
        0,
    ),
    "fritzbox_180_ringing.sip": Expect(
        (180, "Ringing"),
        "c4a6e8f0b2d4f6a8c0e2b4d6f8a0c2e4",
        (2, "INVITE"),
        "2f6b8d0a",
        "7B1E4C9A0F3D2E68",
        ("z9hG4bK9e1c3a5f7b2d4086",),
        0,
    ),
    "fritzbox_invite.sip": Expect(
        ("INVITE", "sip:620@192.168.178.20:5060"),
        "8F2A4C6E0B1D3F57@192.168.178.1",
        (1234, "INVITE"),
        "0E6C3A9F1B5D7248",
        None,
        ("z9hG4bK3C8E1A5F2B7D9046",),
        277,
    ),
    "edge_compact.sip": Expect(
        ("INVITE", "sip:bob@biloxi.example.com"),
        "a84b4c76e66710@pc33.atlanta.example.com",
        (314159, "INVITE"),
        "1928301774",
        None,
        ("z9hG4bKnashds8",),
        149,
    ),
    "edge_lists.sip": Expect(
        (200, "OK"),
        "1j9FpLxk3uxtm8tn@example.com",
        (4711, "INVITE"),
        "a6c85cf",
        "314159",
        ("z9hG4bK721e4.1", "z9hG4bK2d4790.1", "z9hG4bKnashds8", "z9hG4bK77asjd"),
        0,
    ),
    "edge_ipv6_route.sip": Expect(
        ("BYE", "sip:alice@[2001:db8::10]:5060;transport=udp"),
        "5c3f0a1e@2001:db8::20",
        (3, "BYE"),
        "77f1e0",
        "9a8b7c",
        ("z9hG4bK6b5c1f0e2d",),
        0,
    ),
    "folded_options.sip": Expect(
        ("OPTIONS", "sip:door@192.168.1.50"),
        "3848276298220188511@192.168.1.10",
        (63104, "OPTIONS"),
        "9fxced76sl",
        None,
        ("z9hG4bK74bf9",),
        0,
    ),
}


def test_expectations_cover_every_message() -> None:
    assert sorted(EXPECTED) == sorted(ALL_MESSAGES)


@pytest.mark.parametrize("name", ALL_MESSAGES)
def test_fields_of_captured_message(name: str) -> None:
    exp = EXPECTED[name]
    msg = parse_message(raw(name))
    if isinstance(exp.start[0], str):
        assert isinstance(msg, SipRequest)
        assert (msg.method, msg.uri) == exp.start
    else:
        assert isinstance(msg, SipResponse)
        assert (msg.status, msg.reason) == exp.start
    assert msg.call_id == exp.call_id
    assert msg.cseq == exp.cseq
    assert NameAddr.parse(msg.from_).tag == exp.from_tag
    assert NameAddr.parse(msg.to).tag == exp.to_tag
    assert tuple(Via.parse(v).branch for v in msg.vias) == exp.branches
    assert len(msg.body) == exp.body


SIP_WITH_SDP = {
    "ozeki_1_invite.sip": "ozeki.sdp",
    "ozeki_5_invite_auth.sip": "ozeki.sdp",
    "kamailio_invite_from_baresip.sip": "baresip.sdp",
    "kamailio_invite_from_linphone.sip": "linphone.sdp",
    "asterisk_200_invite.sip": "asterisk_answer.sdp",
    "asterisk_invite_offer.sip": "asterisk_offer.sdp",
    "asterisk_reinvite_direct_media.sip": "asterisk_direct_media.sdp",
    "fritzbox_invite.sip": "fritzbox.sdp",
}


@pytest.mark.parametrize(("sip", "sdp"), sorted(SIP_WITH_SDP.items()))
def test_body_is_the_sdp(sip: str, sdp: str) -> None:
    msg = parse_message(raw(sip))
    assert msg.body == (SDP_DIR / sdp).read_bytes()
    assert msg.headers.get("Content-Type") == "application/sdp"


def test_ozeki_challenge_and_credentials() -> None:
    challenge = parse_message(raw("ozeki_3_407.sip"))
    assert challenge.headers.get("proxy-authenticate") == (
        'Digest nonce="6652a236231c44029a9ae7bf793e15f9", realm="OzekiPBX", algorithm=MD5'
    )
    assert challenge.headers.get("User-Agent") == "Ozeki Phone System XE v5.2.1"
    retry = parse_message(raw("ozeki_5_invite_auth.sip"))
    assert retry.headers.get("Proxy-Authorization") == (
        'Digest username="1001",realm="OzekiPBX", nonce="6652a236231c44029a9ae7bf793e15f9", '
        'response="b63eb535d3c711dd77ea15d4f022bc07",uri="sip:9999@192.168.115.149", '
        "algorithm=MD5"
    )
    assert retry.headers.get_all("Allow") == [
        "INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "SUBSCRIBE", "NOTIFY", "REFER", "INFO",
        "MESSAGE",
    ]  # fmt: skip
    ringing = parse_message(raw("ozeki_7_180_ringing.sip"))
    assert ringing.headers.get_all("Contact") == ["<sip:9999@192.168.115.149:5060>"]
    assert ringing.headers.items[-1] == ("Contact", "<sip:9999@192.168.115.149:5060>")


def test_ozeki_response_via_with_space_after_semicolon() -> None:
    msg = parse_message(raw("ozeki_2_100_trying.sip"))
    assert msg.vias == [
        f"SIP/2.0/UDP 192.168.115.149:5920;branch={OZ_B1};rport=5920; received=192.168.115.149"
    ]
    via = Via.parse(msg.vias[0])
    assert via.params == {"branch": OZ_B1, "rport": "5920", "received": "192.168.115.149"}


def test_kamailio_challenges() -> None:
    www = parse_message(raw("kamailio_401_register.sip"))
    assert www.headers.get("WWW-Authenticate") == (
        'Digest realm="pbx.test", nonce="aw0I/GsNB9CqqdndQzu1HHGgmC7ajvGv", qop="auth"'
    )
    assert www.headers.get("Server") == "kamailio (5.6.3 (x86_64/linux))"
    assert "Proxy-Authenticate" not in www.headers
    proxy = parse_message(raw("kamailio_407_invite.sip"))
    assert proxy.headers.get("Proxy-Authenticate") == (
        'Digest realm="pbx.test", nonce="aw0I/GsNB9CqqdndQzu1HHGgmC7ajvGv", qop="auth"'
    )
    assert NameAddr.parse(proxy.from_).display == "Door"


def test_kamailio_register_ok_contact() -> None:
    msg = parse_message(raw("kamailio_200_register.sip"))
    (contact,) = msg.headers.get_all("Contact")
    addr = NameAddr.parse(contact)
    assert (addr.uri.user, addr.uri.host, addr.uri.port) == ("621", "127.0.0.1", 48174)
    assert addr.params == {"expires": "300"}


def test_kamailio_relayed_invite_from_baresip() -> None:
    msg = parse_message(raw("kamailio_invite_from_baresip.sip"))
    assert msg.headers.get_all("Record-Route") == ["<sip:127.0.0.1:49487;lr;ftag=d19e4c3eb1c77fc4>"]
    rr = NameAddr.parse(msg.headers.get_all("Record-Route")[0])
    assert list(rr.uri.params.items()) == [("lr", None), ("ftag", "d19e4c3eb1c77fc4")]
    top, second = (Via.parse(v) for v in msg.vias)
    assert (top.host, top.port, top.params.get("received")) == ("127.0.0.1", 49487, None)
    assert (second.port, second.params["received"], second.params["rport"]) == (
        45659,
        "127.0.0.1",
        "45659",
    )
    assert msg.headers.get("Max-Forwards") == "69"
    assert msg.headers.get("Supported") == ""
    assert msg.headers.get_all("Supported") == []
    assert len(msg.headers.get_all("Allow")) == 10
    assert msg.headers.get_all("allow")[-1] == "REFER"
    assert msg.headers.get("User-Agent") == "baresip v1.0.0 (x86_64/linux)"


def test_kamailio_relayed_invite_from_linphone() -> None:
    msg = parse_message(raw("kamailio_invite_from_linphone.sip"))
    (contact,) = msg.headers.get_all("Contact")
    addr = NameAddr.parse(contact)
    assert addr.uri.params == {"transport": "udp"}
    assert addr.params == {
        "expires": "600",
        "+sip.instance": '"<urn:uuid:93b40606-9eab-00bc-940e-75fd97737f16>"',
    }
    assert msg.headers.get_all("Supported") == ["replaces", "outbound"]
    assert NameAddr.parse(msg.to).uri == SipUri.parse("sip:621@127.0.0.1")
    assert msg.headers.get("User-Agent") == "Linphonec/5.1.65"


def test_asterisk_messages() -> None:
    challenge = parse_message(raw("asterisk_401_register.sip"))
    assert challenge.headers.get("WWW-Authenticate") == (
        'Digest realm="asterisk",nonce="1700000000/3c8f0d1e2a4b6c8d9e0f1a2b3c4d5e6f",'
        'opaque="7e4a1b9c2d3f5a60",algorithm=md5,qop="auth"'
    )
    assert challenge.headers.get("Content-Length") == "0"
    assert challenge.body == b""
    ok = parse_message(raw("asterisk_200_invite.sip"))
    assert "Record-Route" not in ok.headers
    assert ok.headers.get_all("Record-Route") == []
    contact = NameAddr.parse(ok.headers.get("Contact") or "")
    assert (contact.uri.user, contact.uri.host, contact.uri.port) == (None, "192.168.1.10", 5060)
    assert ok.headers.get("Content-Length") == "237"
    offer = parse_message(raw("asterisk_invite_offer.sip"))
    assert offer.headers.get("P-Asserted-Identity") == '"Front Desk" <sip:201@192.168.1.10>'
    assert offer.headers.get("Min-SE") == "90"
    assert offer.headers.get("x") == "1800"  # compact form of Session-Expires


def test_fritzbox_messages() -> None:
    reg = parse_message(raw("fritzbox_200_register.sip"))
    addr = NameAddr.parse(reg.headers.get("Contact") or "")
    assert str(addr.uri) == "sip:620@192.168.178.20:5060"
    assert addr.params == {"expires": "300"}
    assert reg.headers.get("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"
    ringing = parse_message(raw("fritzbox_180_ringing.sip"))
    assert ringing.headers.get("Server") == "FRITZ!OS"
    assert NameAddr.parse(ringing.to).uri.user == "**9"
    assert NameAddr.parse(ringing.from_).display == "Haustuer"


def test_compact_forms() -> None:
    msg = parse_message(raw("edge_compact.sip"))
    assert [name for name, _ in msg.headers][:5] == ["v", "Max-Forwards", "f", "t", "i"]
    assert msg.headers.get("Via") == "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8"
    assert msg.from_ == "Alice <sip:alice@atlanta.example.com>;tag=1928301774"
    assert msg.to == "Bob <sip:bob@biloxi.example.com>"
    assert msg.headers.get("Contact") == "<sip:alice@pc33.atlanta.example.com>"
    assert msg.headers.get("Content-Type") == "application/sdp"
    assert msg.headers.get("Content-Length") == "149"
    assert msg.headers.get_all("Supported") == ["timer", "100rel"]
    assert "call-id" in msg.headers and "I" in msg.headers


def test_repeated_and_comma_joined_headers() -> None:
    msg = parse_message(raw("edge_lists.sip"))
    assert msg.vias == [
        "SIP/2.0/UDP proxy2.example.com:5060;branch=z9hG4bK721e4.1",
        "SIP/2.0/UDP proxy1.example.com;branch=z9hG4bK2d4790.1;received=192.0.2.101",
        "SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKnashds8;received=2001:db8::9:255;"
        "rport=50311",
        "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK77asjd",
    ]
    assert msg.headers.get_all("Record-Route") == [
        "<sip:proxy2.example.com;lr>",
        "<sip:proxy1.example.com;lr;ftag=a6c85cf>",
        "<sip:[2001:db8::1]:5060;transport=tcp;lr>",
    ]
    assert msg.headers.get_all("Contact") == [
        '"Desk, 2nd floor" <sip:bob@192.0.2.4>;expires=3600;q=0.7',
        "<sip:bob@[2001:db8::4]:5070;transport=tcp>;q=0.3",
        "sip:bob@cell.example.com;expires=60",
    ]
    # get() returns the first line as written, unsplit.
    assert msg.headers.get("Via") == (
        "SIP/2.0/UDP proxy2.example.com:5060;branch=z9hG4bK721e4.1, "
        "SIP/2.0/UDP proxy1.example.com;branch=z9hG4bK2d4790.1;received=192.0.2.101"
    )
    assert NameAddr.parse(msg.from_).display == 'Smith, John "JJ"'
    assert msg.headers.get("Call-ID") == "1j9FpLxk3uxtm8tn@example.com"
    assert [n for n, _ in msg.headers if n.lower() == "via"] == ["Via", "Via", "VIA"]


def test_route_headers_and_ipv6() -> None:
    msg = parse_message(raw("edge_ipv6_route.sip"))
    assert msg.headers.get_all("Route") == [
        "<sip:[2001:db8::1];lr>",
        "<sip:p2.example.com;lr>",
        "<sip:p3.example.com:5080;transport=tcp;lr>",
    ]
    via = Via.parse(msg.vias[0])
    assert (via.host, via.port, via.params) == (
        "[2001:db8::20]",
        5060,
        {"branch": "z9hG4bK6b5c1f0e2d", "rport": None},
    )
    assert isinstance(msg, SipRequest)
    uri = SipUri.parse(msg.uri)
    assert (uri.user, uri.host, uri.port, uri.transport) == ("alice", "[2001:db8::10]", 5060, "udp")


def test_folded_lines_are_unfolded() -> None:
    data = raw("folded_options.sip")
    msg = parse_message(data)
    assert msg.headers.get("Via") == "SIP/2.0/UDP 192.168.1.10:5060 ;branch=z9hG4bK74bf9"
    assert msg.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    out = msg.to_bytes()
    assert out != data
    assert b"Subject: I know you're there, pick up the phone and talk to me!\r\n" in out
    assert b"\r\n " not in out and b"\r\n\t" not in out
    assert len(out.split(b"\r\n")) == len(data.split(b"\r\n")) - 3


def test_continuation_before_any_header() -> None:
    with pytest.raises(ParseError, match="header continuation before any header"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\n\r\n")


# -- start line ----------------------------------------------------------------------------------


def test_lowercase_method_is_uppercased_and_response_reason_kept() -> None:
    data = raw("kamailio_bye_from_baresip.sip").replace(b"BYE sip:", b"bye sip:", 1)
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    assert msg.method == "BYE"
    reason = "Besetzt \u2013 bitte sp\u00e4ter"
    data = raw("fritzbox_180_ringing.sip").replace(
        b"180 Ringing", b"486 " + reason.encode("utf-8"), 1
    )
    resp = parse_message(data)
    assert isinstance(resp, SipResponse)
    assert (resp.status, resp.reason) == (486, reason)
    assert resp.to_bytes() == data


def test_response_without_reason_phrase() -> None:
    data = raw("kamailio_200_register.sip").replace(b"SIP/2.0 200 OK", b"SIP/2.0 200", 1)
    msg = parse_message(data)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (200, "")


def test_leading_keepalive_crlf_and_lf_only_lines_are_accepted() -> None:
    data = raw("kamailio_200_register.sip")
    assert parse_message(b"\r\n\r\n" + data).to_bytes() == data
    lf_only = parse_message(data.replace(b"\r\n", b"\n"))
    assert lf_only.headers.items == parse_message(data).headers.items


def test_build_request_and_response() -> None:
    req = SipRequest(
        headers=Headers(
            [
                ("Via", "SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bKabc;rport"),
                ("From", "<sip:door@192.168.1.10>;tag=1"),
                ("To", "<sip:door@192.168.1.10>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 OPTIONS"),
            ]
        ),
        method="OPTIONS",
        uri="sip:192.168.1.10",
    )
    assert req.to_bytes() == (
        b"OPTIONS sip:192.168.1.10 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bKabc;rport\r\n"
        b"From: <sip:door@192.168.1.10>;tag=1\r\n"
        b"To: <sip:door@192.168.1.10>\r\n"
        b"Call-ID: c1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert repr(req) == "<SipRequest OPTIONS sip:192.168.1.10>"
    resp = SipResponse(headers=req.headers.copy(), status=486, reason="Busy Here", body=b"xyz")
    out = resp.to_bytes()
    assert out.startswith(b"SIP/2.0 486 Busy Here\r\nVia: ")
    assert out.endswith(b"Content-Length: 3\r\n\r\nxyz")
    assert repr(resp) == "<SipResponse 486 Busy Here>"


# -- Content-Length ------------------------------------------------------------------------------


def test_body_is_truncated_to_content_length() -> None:
    data = raw("kamailio_invite_from_baresip.sip")
    msg = parse_message(data + b"trailing garbage\r\n\r\n")
    assert msg.body == (SDP_DIR / "baresip.sdp").read_bytes()
    assert msg.to_bytes() == parse_message(data).to_bytes()


def test_body_shorter_than_content_length() -> None:
    data = raw("kamailio_invite_from_baresip.sip")
    with pytest.raises(ParseError, match=r"^Content-Length 367 but only 357 body bytes$"):
        parse_message(data[:-10])


def test_missing_content_length_on_udp_takes_the_rest() -> None:
    data = without_header(raw("fritzbox_invite.sip"), b"Content-Length")
    msg = parse_message(data)
    assert msg.body == (SDP_DIR / "fritzbox.sdp").read_bytes()
    assert "Content-Length" not in msg.headers
    head, body = head_and_body(msg.to_bytes())
    assert head.endswith(b"\r\nContent-Type: application/sdp\r\nContent-Length: 277")
    assert body == msg.body
    no_body = parse_message(without_header(raw("kamailio_ack_for_486.sip"), b"Content-Length"))
    assert no_body.body == b""


def test_to_bytes_writes_the_real_body_length_once() -> None:
    msg = parse_message(raw("edge_compact.sip"))
    msg.body = b"v=0\r\n"
    out = msg.to_bytes()
    assert b"\r\nl: 5\r\n\r\nv=0\r\n" in out
    assert b"l: 149" not in out
    msg.headers.add("Content-Length", "999")
    assert msg.to_bytes() == out


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"-1", r"^negative Content-Length -1$"),
        (b"abc", r"^malformed Content-Length 'abc'$"),
        (b"12 34", r"^malformed Content-Length '12 34'$"),
        (b"", r"^malformed Content-Length ''$"),
    ],
)
def test_bad_content_length(value: bytes, error: str) -> None:
    data = replace_header(raw("kamailio_407_invite.sip"), b"Content-Length", value)
    with pytest.raises(ParseError, match=error):
        parse_message(data)


@pytest.mark.parametrize("value", ["1_0", "\u0663"])
def test_content_length_must_be_ascii_digits(value: str) -> None:
    data = replace_header(raw("kamailio_407_invite.sip"), b"Content-Length", value.encode("utf-8"))
    with pytest.raises(ParseError, match="malformed Content-Length"):
        parse_message(data + b"0123456789")


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n\r\n"])
def test_empty(data: bytes) -> None:
    with pytest.raises(ParseError, match=r"^empty message$") as info:
        parse_message(data)
    assert info.value.status_hint == 400
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize(
    ("start", "error"),
    [
        (b"GET / HTTP/1.1", "malformed request line 'GET / HTTP/1.1'"),
        (b"HELLO", "malformed request line 'HELLO'"),
        (b"INVITE sip:a@b SIP/3.0", "malformed request line"),
        (b"INVITE  sip:a@b SIP/2.0", "malformed request line"),
        (b"INVITE sip:a@b", "malformed request line"),
        (b"IN(VITE sip:a@b SIP/2.0", "malformed request line"),
        (b"SIP/2.0 99 Too Low", "malformed status line 'SIP/2.0 99 Too Low'"),
        (b"SIP/2.0 700 Too High", "malformed status line"),
        (b"SIP/2.0 abc OK", "malformed status line"),
        (b"SIP/2.0 OK", "malformed status line"),
        (b"SIP/3.0 200 OK", "malformed status line"),
    ],
)
def test_garbage_start_line(start: bytes, error: str) -> None:
    data = raw("kamailio_407_invite.sip").replace(
        b"SIP/2.0 407 Proxy Authentication Required", start, 1
    )
    with pytest.raises(ParseError, match=re.escape(error)):
        parse_message(data)


def test_four_digit_status_code() -> None:
    data = raw("kamailio_200_register.sip").replace(b"SIP/2.0 200 OK", b"SIP/2.0 2000 OK", 1)
    with pytest.raises(ParseError, match="malformed status line"):
        parse_message(data)


@pytest.mark.parametrize(
    "line",
    [
        b"Via SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx",
        b": no name",
        b"Bad Header: x",
        b"X-\xc3\xa9: y",
    ],
)
def test_header_line_without_colon_or_with_bad_name(line: bytes) -> None:
    data = raw("kamailio_407_invite.sip").replace(b"\r\nServer:", b"\r\n" + line + b"\r\nServer:")
    with pytest.raises(ParseError, match=r"^malformed header line "):
        parse_message(data)


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_required_header(name: str) -> None:
    data = without_header(raw("kamailio_invite_from_baresip.sip"), name.encode())
    with pytest.raises(ParseError, match=rf"^missing {name} header$") as info:
        parse_message(data)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(("compact", "name"), [(b"v", "Via"), (b"i", "Call-ID"), (b"t", "To")])
def test_missing_required_header_in_compact_form(compact: bytes, name: str) -> None:
    data = without_header(raw("edge_compact.sip"), compact)
    with pytest.raises(ParseError, match=rf"^missing {name} header$"):
        parse_message(data)


@pytest.mark.parametrize("value", [b"INVITE", b"1", b"x INVITE", b"1 INVITE extra", b"-1 INVITE"])
def test_bad_cseq(value: bytes) -> None:
    data = replace_header(raw("kamailio_407_invite.sip"), b"CSeq", value)
    with pytest.raises(ParseError, match=rf"^malformed CSeq {re.escape(repr(value.decode()))}$"):
        parse_message(data)


def test_header_section_not_utf8() -> None:
    data = raw("kamailio_407_invite.sip").replace(b"Server: kamailio", b"Server: kam\xffilio", 1)
    with pytest.raises(ParseError, match=r"^header section is not UTF-8: "):
        parse_message(data)


def test_binary_body_is_fine() -> None:
    data = replace_header(raw("kamailio_ack_for_486.sip"), b"Content-Length", b"4")
    msg = parse_message(data + b"\xff\x00\r\n")
    assert msg.body == b"\xff\x00\r\n"


def _padded_to(size: int) -> bytes:
    """A real message padded to ``size`` bytes with X-Pad lines, each within the line cap."""
    base = raw("kamailio_407_invite.sip")
    filler = size - len(base)
    lines = []
    while filler > 0:
        width = min(MAX_HEADER_LINE, filler - 2)
        lines.append(b"X-Pad: " + b"a" * (width - 7) + b"\r\n")
        filler -= width + 2
    data = base.replace(b"\r\nServer:", b"\r\n" + b"".join(lines) + b"Server:", 1)
    assert len(data) == size
    return data


def test_message_of_max_size_is_accepted() -> None:
    msg = parse_message(_padded_to(MAX_MESSAGE))
    pads = msg.headers.get_all("X-Pad")
    assert len(pads) == 4 and max(len(p) for p in pads) == MAX_HEADER_LINE - 7


def test_message_too_large() -> None:
    with pytest.raises(
        ParseError, match=rf"^message of {MAX_MESSAGE + 1} bytes is too large$"
    ) as info:
        parse_message(_padded_to(MAX_MESSAGE + 1))
    assert info.value.status_hint == 513


# -- Headers, canonical_name, split_list ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("v", "Via"),
        ("V", "Via"),
        ("i", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("l", "Content-Length"),
        ("k", "Supported"),
        ("x", "Session-Expires"),
        (" record-route ", "Record-Route"),
        ("X-Custom", "X-Custom"),
        ("x-custom", "x-custom"),
    ],
)
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("", []),
        ("a", ["a"]),
        ("a, b,c ,  d", ["a", "b", "c", "d"]),
        ("a,,b,", ["a", "b"]),
        ('"Doe, John" <sip:j@x>, <sip:k@y>', ['"Doe, John" <sip:j@x>', "<sip:k@y>"]),
        ('"a \\", b" <sip:a@b>, c', ['"a \\", b" <sip:a@b>', "c"]),
        ('"back\\\\", c', ['"back\\\\"', "c"]),
        ("<sip:a@b;x=1,2>;q=1, <sip:c@d>", ["<sip:a@b;x=1,2>;q=1", "<sip:c@d>"]),
        ('Digest realm="a,b", nonce="c"', ['Digest realm="a,b"', 'nonce="c"']),
    ],
)
def test_split_list(value: str, parts: list[str]) -> None:
    assert split_list(value) == parts


def test_headers_multimap() -> None:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    h.add("Max-Forwards", "70")
    h.add("v", "SIP/2.0/UDP b;branch=z9hG4bK2, SIP/2.0/UDP c;branch=z9hG4bK3")
    h.add("WWW-Authenticate", 'Digest realm="a", nonce="1"')
    h.add("www-authenticate", 'Digest realm="b", nonce="2"')
    assert h.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get("X-Missing") is None
    assert h.get("X-Missing", "dflt") == "dflt"
    assert h.get_all("via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    # Not a list header: each line is one value even with commas inside.
    assert h.get_all("WWW-Authenticate") == [
        'Digest realm="a", nonce="1"',
        'Digest realm="b", nonce="2"',
    ]
    assert "v" in h and "Via" in h and "Route" not in h and 42 not in h

    copy = h.copy()
    h.set("Via", "SIP/2.0/TCP z;branch=z9hG4bK9")
    assert h.items == [
        ("Via", "SIP/2.0/TCP z;branch=z9hG4bK9"),
        ("Max-Forwards", "70"),
        ("WWW-Authenticate", 'Digest realm="a", nonce="1"'),
        ("www-authenticate", 'Digest realm="b", nonce="2"'),
    ]
    assert len(copy.get_all("Via")) == 3
    h.set("Route", "<sip:p;lr>")
    assert h.items[-1] == ("Route", "<sip:p;lr>")
    h.remove("www-authenticate")
    assert [n for n, _ in h] == ["Via", "Max-Forwards", "Route"]


# -- StreamParser (TCP framing) ------------------------------------------------------------------


def test_stream_two_messages_in_one_chunk() -> None:
    a, b = raw("kamailio_401_register.sip"), raw("kamailio_invite_from_baresip.sip")
    parser = StreamParser()
    assert parser.feed(a + b) == [a, b]
    assert parser.feed(b"") == []


def test_stream_message_split_byte_by_byte() -> None:
    data = raw("fritzbox_invite.sip")
    parser = StreamParser()
    for i in range(len(data) - 1):
        assert parser.feed(data[i : i + 1]) == [], f"framed early at byte {i}"
    assert parser.feed(data[-1:]) == [data]
    assert parse_message(data).body == (SDP_DIR / "fritzbox.sdp").read_bytes()


def test_stream_keepalives_between_messages() -> None:
    a, b = raw("kamailio_200_register.sip"), raw("kamailio_407_invite.sip")
    parser = StreamParser()
    assert parser.feed(b"\r\n\r\n") == []
    assert parser.feed(a + b"\r\n\r\n\r\n") == [a]
    assert parser.feed(b"\r\n") == []
    assert parser.feed(b) == [b]


def test_stream_body_split_across_chunks() -> None:
    data = raw("asterisk_invite_offer.sip")
    cut = data.index(b"\r\n\r\n") + 4 + 100
    parser = StreamParser()
    assert parser.feed(data[:cut]) == []
    assert parser.feed(data[cut:-1]) == []
    assert parser.feed(data[-1:] + b"\r\n\r\n") == [data]


def test_stream_compact_content_length() -> None:
    data = raw("edge_compact.sip")
    parser = StreamParser()
    assert parser.feed(data + data[:20]) == [data]
    assert parser.feed(data[20:]) == [data]


def test_stream_content_length_not_last_header() -> None:
    data = raw("kamailio_invite_from_linphone.sip")
    parser = StreamParser()
    assert parser.feed(data) == [data]


def test_stream_complete_messages_larger_than_the_limit() -> None:
    # The cap is on one message, not on a segment: a segment may bring many whole messages.
    data = raw("kamailio_401_register.sip")
    parser = StreamParser(max_message=len(data))
    assert parser.feed(data * 3) == [data, data, data]


def test_stream_overflow() -> None:
    parser = StreamParser(max_message=1000)
    parser.feed(b"INVITE sip:a@b SIP/2.0\r\n")
    with pytest.raises(ParseError, match=r"^stream buffer overflow: no message boundary found$"):
        parser.feed(b"X-Junk: " + b"a" * 1000)
    # The buffer was dropped: the next message frames from scratch.
    data = raw("kamailio_200_register.sip")
    assert parser.feed(data) == [data]


def test_stream_default_limit_is_one_message() -> None:
    parser = StreamParser()
    parser.feed(b"a" * MAX_MESSAGE)
    with pytest.raises(ParseError, match="stream buffer overflow"):
        parser.feed(b"a")
