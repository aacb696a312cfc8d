"""SIP URIs, name-addr values and Via headers, mostly as found in tests/data/sip/."""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError

import pytest

from intercom.errors import ParseError
from intercom.sip.address import NameAddr, SipUri, Via, tag_of

# -- SipUri --------------------------------------------------------------------------------------

# (text, scheme, user, host, port, params as ordered pairs, headers); str() gives text back.
URIS = [
    ("sip:9999@192.168.115.149", "sip", "9999", "192.168.115.149", None, [], ""),
    ("sip:621@127.0.0.1:48174", "sip", "621", "127.0.0.1", 48174, [], ""),
    (
        "sip:127.0.0.1:49487;lr;ftag=d19e4c3eb1c77fc4",
        "sip",
        None,
        "127.0.0.1",
        49487,
        [("lr", None), ("ftag", "d19e4c3eb1c77fc4")],
        "",
    ),
    (
        "sip:620-0x559d72763f10@127.0.0.1:45659",
        "sip",
        "620-0x559d72763f10",
        "127.0.0.1",
        45659,
        [],
        "",
    ),
    (
        "sip:622@127.0.0.1:49087;transport=udp",
        "sip",
        "622",
        "127.0.0.1",
        49087,
        [("transport", "udp")],
        "",
    ),
    ("sip:**9@192.168.178.1:5060", "sip", "**9", "192.168.178.1", 5060, [], ""),
    ("sip:192.168.1.10:5060", "sip", None, "192.168.1.10", 5060, [], ""),
    ("sip:620@fritz.box", "sip", "620", "fritz.box", None, [], ""),
    (
        "sip:alice@[2001:db8::10]:5060;transport=udp",
        "sip",
        "alice",
        "[2001:db8::10]",
        5060,
        [("transport", "udp")],
        "",
    ),
    ("sip:[2001:db8::1];lr", "sip", None, "[2001:db8::1]", None, [("lr", None)], ""),
    (
        "sip:[2001:db8::1]:5060;transport=tcp;lr",
        "sip",
        None,
        "[2001:db8::1]",
        5060,
        [("transport", "tcp"), ("lr", None)],
        "",
    ),
    (
        "sip:alice:secretword@atlanta.com;transport=tcp",
        "sip",
        "alice:secretword",
        "atlanta.com",
        None,
        [("transport", "tcp")],
        "",
    ),
    (
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip",
        "+1-212-555-1212:1234",
        "gateway.com",
        None,
        [("user", "phone")],
        "",
    ),
    (
        "sips:alice@atlanta.com;maddr=239.255.255.1;ttl=15;method=INVITE",
        "sips",
        "alice",
        "atlanta.com",
        None,
        [("maddr", "239.255.255.1"), ("ttl", "15"), ("method", "INVITE")],
        "",
    ),
    (
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip",
        None,
        "atlanta.com",
        None,
        [("method", "REGISTER")],
        "?to=alice%40atlanta.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip",
        "alice",
        "atlanta.com",
        None,
        [],
        "?subject=project%20x&priority=urgent",
    ),
    ("tel:+1-201-555-0123", "tel", None, "+1-201-555-0123", None, [], ""),
    (
        "tel:7042;phone-context=example.com",
        "tel",
        None,
        "7042",
        None,
        [("phone-context", "example.com")],
        "",
    ),
]


@pytest.mark.parametrize(
    ("text", "scheme", "user", "host", "port", "params", "headers"), URIS, ids=[u[0] for u in URIS]
)
def test_uri_parse_and_str(
    text: str,
    scheme: str,
    user: str | None,
    host: str,
    port: int | None,
    params: list[tuple[str, str | None]],
    headers: str,
) -> None:
    uri = SipUri.parse(text)
    assert (uri.scheme, uri.user, uri.host, uri.port) == (scheme, user, host, port)
    assert list(uri.params.items()) == params  # order kept, not just the same set
    assert uri.headers == headers
    assert str(uri) == text
    assert SipUri.parse(str(uri)) == uri


def test_uri_normalization() -> None:
    uri = SipUri.parse("  SIP:Alice@Example.COM;Transport=TCP;LR  ")
    assert (uri.scheme, uri.user, uri.host) == ("sip", "Alice", "Example.COM")
    assert list(uri.params.items()) == [("transport", "TCP"), ("lr", None)]
    assert uri.transport == "tcp"
    assert str(uri) == "sip:Alice@Example.COM;transport=TCP;lr"


def test_uri_params_with_spaces_and_empty_parts() -> None:
    uri = SipUri.parse("sip:a@b;;x = 1;;y")
    assert list(uri.params.items()) == [("x", "1"), ("y", None)]
    assert str(uri) == "sip:a@b;x=1;y"


@pytest.mark.parametrize(
    ("text", "transport"),
    [
        ("sip:a@b", "udp"),
        ("sip:a@b;transport=UDP", "udp"),
        ("sip:a@b;transport=tcp", "tcp"),
        ("sip:a@b;transport=TLS", "tls"),
        ("sip:a@b;transport", "udp"),
        ("sip:[::1]:5070;transport=ws", "ws"),
    ],
)
def test_uri_transport(text: str, transport: str) -> None:
    assert SipUri.parse(text).transport == transport


def test_uri_with_and_without_params() -> None:
    uri = SipUri.parse("sip:door@192.168.1.50:5060;transport=udp;lr?subject=x")
    changed = uri.with_params(transport="tcp", ob=None)
    assert str(changed) == "sip:door@192.168.1.50:5060;transport=tcp;lr;ob?subject=x"
    assert str(uri) == "sip:door@192.168.1.50:5060;transport=udp;lr?subject=x"
    assert str(uri.without_params()) == "sip:door@192.168.1.50:5060"
    with pytest.raises(FrozenInstanceError):
        uri.host = "x"  # type: ignore[misc]


def test_uri_built_from_fields() -> None:
    uri = SipUri(user="door", host="[2001:db8::5]", port=5062, params={"transport": "tcp"})
    assert str(uri) == "sip:door@[2001:db8::5]:5062;transport=tcp"
    assert str(SipUri(host="pbx.example.com")) == "sip:pbx.example.com"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "malformed SIP URI ''"),
        ("http://example.com", "malformed SIP URI 'http://example.com'"),
        ("mailto:alice@example.com", "malformed SIP URI"),
        ("alice@example.com", "malformed SIP URI"),
        ("sip:", "SIP URI without host 'sip:'"),
        ("sip:alice@", "SIP URI without host"),
        ("sip:alice@;transport=tcp", "SIP URI without host"),
        ("sip:alice@host:", "bad port in 'sip:alice@host:'"),
        ("sip:alice@host:0", "bad port"),
        ("sip:alice@host:65536", "bad port"),
        ("sip:alice@host:50x", "bad port"),
        ("sip:alice@host:-1", "bad port"),
        ("sip:[::1]:abc", "bad port in 'sip:[::1]:abc'"),
    ],
)
def test_uri_errors(text: str, error: str) -> None:
    with pytest.raises(ParseError, match=re.escape(error)):
        SipUri.parse(text)


@pytest.mark.parametrize("text", ["sip:alice@[2001:db8::1", "sip:[2001:db8::1;lr"])
def test_uri_unclosed_ipv6_bracket(text: str) -> None:
    # A ValueError from str.index() here would escape the transport's ParseError handler.
    with pytest.raises(ParseError, match=re.escape(f"unbalanced [] in SIP URI {text!r}")):
        SipUri.parse(text)


def test_uri_junk_after_ipv6_host() -> None:
    with pytest.raises(ParseError):
        SipUri.parse("sip:alice@[2001:db8::1]junk")


# -- NameAddr ------------------------------------------------------------------------------------

# (header value, display, uri, uri params, header params); all from tests/data/sip/.
NAME_ADDRS = [
    (
        '"1001"<sip:1001@192.168.115.149>;tag=yudievxj',
        "1001",
        "sip:1001@192.168.115.149",
        {},
        {"tag": "yudievxj"},
    ),
    ("<sip:9999@192.168.115.149>", None, "sip:9999@192.168.115.149", {}, {}),
    ("sip:621@127.0.0.1;tag=busy486", None, "sip:621@127.0.0.1", {}, {"tag": "busy486"}),
    ("sip:621@127.0.0.1", None, "sip:621@127.0.0.1", {}, {}),
    (
        '<sip:622@127.0.0.1:49087;transport=udp>;expires=600;+sip.instance="<urn:uuid:93b40606-9eab-00bc-940e-75fd97737f16>"',
        None,
        "sip:622@127.0.0.1:49087;transport=udp",
        {"transport": "udp"},
        {"expires": "600", "+sip.instance": '"<urn:uuid:93b40606-9eab-00bc-940e-75fd97737f16>"'},
    ),
    (
        "<sip:127.0.0.1:49487;lr;ftag=d19e4c3eb1c77fc4>",
        None,
        "sip:127.0.0.1:49487;lr;ftag=d19e4c3eb1c77fc4",
        {"lr": None, "ftag": "d19e4c3eb1c77fc4"},
        {},
    ),
    (
        "Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Alice",
        "sip:alice@atlanta.example.com",
        {},
        {"tag": "1928301774"},
    ),
    (
        '"Smith, John \\"JJ\\"" <sip:john@example.com>;tag=a6c85cf',
        'Smith, John "JJ"',
        "sip:john@example.com",
        {},
        {"tag": "a6c85cf"},
    ),
    (
        '"Desk, 2nd floor" <sip:bob@192.0.2.4>;expires=3600;q=0.7',
        "Desk, 2nd floor",
        "sip:bob@192.0.2.4",
        {},
        {"expires": "3600", "q": "0.7"},
    ),
    (
        "<sip:bob@[2001:db8::4]:5070;transport=tcp>;q=0.3",
        None,
        "sip:bob@[2001:db8::4]:5070;transport=tcp",
        {"transport": "tcp"},
        {"q": "0.3"},
    ),
    (
        "sip:bob@cell.example.com;expires=60",
        None,
        "sip:bob@cell.example.com",
        {},
        {"expires": "60"},
    ),
    ('"" <sip:anon@example.com>', None, "sip:anon@example.com", {}, {}),
    ('"a<b>c" <sip:x@example.com>', "a<b>c", "sip:x@example.com", {}, {}),
]


@pytest.mark.parametrize(
    ("text", "display", "uri", "uri_params", "params"), NAME_ADDRS, ids=range(len(NAME_ADDRS))
)
def test_name_addr_parse(
    text: str,
    display: str | None,
    uri: str,
    uri_params: dict[str, str | None],
    params: dict[str, str | None],
) -> None:
    addr = NameAddr.parse(text)
    assert addr.display == display
    assert str(addr.uri) == uri
    assert addr.uri.params == uri_params
    assert addr.params == params
    assert addr.tag == params.get("tag")
    assert tag_of(text) == params.get("tag")


@pytest.mark.parametrize(
    "text",
    [
        '"Door" <sip:621@127.0.0.1:49487>;tag=abc123',
        "<sip:621@127.0.0.1:48174>;expires=300",
        '"Smith, John \\"JJ\\"" <sip:john@example.com>;tag=a6c85cf',
        '"Front Desk" <sip:201@192.168.1.10>;tag=2a7c9e1f-3b5d-4f80-a2c4-6e8f0a1b3c5d',
        '<sip:622@127.0.0.1:49087;transport=udp>;expires=600;+sip.instance="<urn:uuid:93b40606>"',
        "<sip:[2001:db8::1]:5060;transport=tcp;lr>",
        "<sip:proxy1.example.com;lr;ftag=a6c85cf>",
        '"Back\\\\slash" <sip:b@example.com>',
    ],
)
def test_name_addr_str_round_trip(text: str) -> None:
    assert str(NameAddr.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        (
            '"1001"<sip:1001@192.168.115.149>;tag=yudievxj',
            '"1001" <sip:1001@192.168.115.149>;tag=yudievxj',
        ),
        ("Bob <sip:bob@biloxi.example.com>", '"Bob" <sip:bob@biloxi.example.com>'),
        ("sip:621@127.0.0.1;tag=busy486", "<sip:621@127.0.0.1>;tag=busy486"),
        ("<sip:a@b> ; Tag = x ;; lr", "<sip:a@b>;tag=x;lr"),
    ],
)
def test_name_addr_str_normalizes(text: str, normalized: str) -> None:
    assert str(NameAddr.parse(text)) == normalized


def test_with_tag() -> None:
    to = NameAddr.parse("<sip:9999@192.168.115.149>")
    tagged = to.with_tag("chdmsspj")
    assert str(tagged) == "<sip:9999@192.168.115.149>;tag=chdmsspj"
    assert tagged.tag == "chdmsspj"
    assert to.tag is None and str(to) == "<sip:9999@192.168.115.149>"
    # Replacing a tag keeps its position among the parameters.
    other = NameAddr.parse('"X" <sip:a@b>;tag=old;x=1').with_tag("new")
    assert str(other) == '"X" <sip:a@b>;tag=new;x=1'


def test_name_addr_built_from_fields() -> None:
    addr = NameAddr(SipUri(user="door", host="192.168.1.50"), display='Door "Main"')
    assert str(addr) == '"Door \\"Main\\"" <sip:door@192.168.1.50>'
    assert NameAddr.parse(str(addr)) == addr


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("*", "wildcard contact is not a name-addr"),
        ('"Bob" <sip:bob@example.com', "unbalanced <> in"),
        ('"Bob <sip:bob@example.com>', "unbalanced <> in"),
        ("<http://example.com>", "malformed SIP URI"),
        ("<>", "malformed SIP URI"),
        ("", "malformed SIP URI"),
        ("Bob <sip:@>", "SIP URI without host"),
    ],
)
def test_name_addr_errors(text: str, error: str) -> None:
    with pytest.raises(ParseError, match=error):
        NameAddr.parse(text)


def test_display_name_ending_in_escaped_backslash() -> None:
    addr = NameAddr.parse('"Dept\\\\" <sip:d@example.com>;tag=1')
    assert addr.display == "Dept\\"
    assert addr.tag == "1"


# -- Via -----------------------------------------------------------------------------------------

OZ_B1 = "z9hG4bKf76d02e1-1bda-4435-a38d-2577c0f1b73a"

# (value, transport, host, port, params as ordered pairs, str() of the parsed value)
VIAS = [
    (
        f"SIP/2.0/UDP 192.168.115.149:5920;branch={OZ_B1};rport",
        "UDP",
        "192.168.115.149",
        5920,
        [("branch", OZ_B1), ("rport", None)],
        None,
    ),
    (
        f"SIP/2.0/UDP 192.168.115.149:5920;branch={OZ_B1};rport=5920; received=192.168.115.149",
        "UDP",
        "192.168.115.149",
        5920,
        [("branch", OZ_B1), ("rport", "5920"), ("received", "192.168.115.149")],
        f"SIP/2.0/UDP 192.168.115.149:5920;branch={OZ_B1};rport=5920;received=192.168.115.149",
    ),
    (
        "SIP/2.0/UDP 127.0.0.1:48174;rport=48174;branch=z9hG4bK426a02dad3e8;received=127.0.0.1",
        "UDP",
        "127.0.0.1",
        48174,
        [("rport", "48174"), ("branch", "z9hG4bK426a02dad3e8"), ("received", "127.0.0.1")],
        None,
    ),
    (
        "SIP/2.0/UDP 127.0.0.1:45659;received=127.0.0.1;branch=z9hG4bKbd8fbad1164411ef;rport=45659",
        "UDP",
        "127.0.0.1",
        45659,
        [("received", "127.0.0.1"), ("branch", "z9hG4bKbd8fbad1164411ef"), ("rport", "45659")],
        None,
    ),
    (
        "SIP/2.0/UDP 127.0.0.1:49487;branch=z9hG4bK56fb.a5dda76edc7a44d385c54f3816ffab40.0",
        "UDP",
        "127.0.0.1",
        49487,
        [("branch", "z9hG4bK56fb.a5dda76edc7a44d385c54f3816ffab40.0")],
        None,
    ),
    (
        "SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKnashds8;received=2001:db8::9:255;"
        "rport=50311",
        "TCP",
        "[2001:db8::9:1]",
        5061,
        [("branch", "z9hG4bKnashds8"), ("received", "2001:db8::9:255"), ("rport", "50311")],
        None,
    ),
    (
        "SIP/2.0/UDP [2001:db8::20];branch=z9hG4bK6b5c1f0e2d",
        "UDP",
        "[2001:db8::20]",
        None,
        [("branch", "z9hG4bK6b5c1f0e2d")],
        None,
    ),
    (
        "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK77asjd",
        "UDP",
        "192.0.2.4",
        None,
        [("branch", "z9hG4bK77asjd")],
        None,
    ),
    (
        "SIP / 2.0 / tcp host.example.com:5070 ; branch = z9hG4bKx ;rport",
        "TCP",
        "host.example.com",
        5070,
        [("branch", "z9hG4bKx"), ("rport", None)],
        "SIP/2.0/TCP host.example.com:5070;branch=z9hG4bKx;rport",
    ),
    (
        "SIP/2.0/UDP 192.168.1.10:5060 ;branch=z9hG4bK74bf9",
        "UDP",
        "192.168.1.10",
        5060,
        [("branch", "z9hG4bK74bf9")],
        "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK74bf9",
    ),
]


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "params", "out"), VIAS, ids=range(len(VIAS))
)
def test_via_parse_and_str(
    text: str,
    transport: str,
    host: str,
    port: int | None,
    params: list[tuple[str, str | None]],
    out: str | None,
) -> None:
    via = Via.parse(text)
    assert (via.transport, via.host, via.port) == (transport, host, port)
    assert list(via.params.items()) == params
    assert via.branch == dict(params).get("branch")
    assert str(via) == (text if out is None else out)


def test_via_received_and_rport() -> None:
    via = Via.parse(VIAS[1][0])
    assert via.params["received"] == "192.168.115.149"
    assert via.params["rport"] == "5920"
    request_via = Via.parse(VIAS[0][0])
    assert "rport" in request_via.params and request_via.params["rport"] is None
    assert "received" not in request_via.params


def test_via_built_from_fields() -> None:
    via = Via("UDP", "192.168.1.50", 5060, {"branch": "z9hG4bKabc", "rport": None})
    assert str(via) == "SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bKabc;rport"
    assert Via.parse(str(via)) == via
    assert Via("TCP", "[::1]", None).branch is None
    assert str(Via("TCP", "[::1]", None)) == "SIP/2.0/TCP [::1]"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "malformed Via ''"),
        ("SIP/2.0/UDP", "malformed Via 'SIP/2.0/UDP'"),
        ("SIP/2.0/UDP ;branch=z9hG4bKx", "malformed Via"),
        ("SIP/3.0/UDP host", "malformed Via"),
        ("SIP/2.0 host;branch=z9hG4bKx", "malformed Via"),
        ("SIP/2.0/U-D-P host", "malformed Via"),
        ("sip:alice@example.com", "malformed Via"),
        ("SIP/2.0/UDP host:port", "bad port in 'SIP/2.0/UDP host:port'"),
        ("SIP/2.0/UDP host:0;branch=z9hG4bKx", "bad port"),
        ("SIP/2.0/UDP host:70000", "bad port"),
        ("SIP/2.0/UDP [::1]:x;branch=z9hG4bKx", "bad port"),
    ],
)
def test_via_errors(text: str, error: str) -> None:
    with pytest.raises(ParseError, match=re.escape(error)):
        Via.parse(text)


def test_via_unclosed_ipv6_bracket() -> None:
    text = "SIP/2.0/UDP [2001:db8::1;branch=z9hG4bKx"
    with pytest.raises(ParseError, match=re.escape(f"unbalanced [] in Via {text!r}")):
        Via.parse(text)
