"""Bad input never raises out of the agent: it is counted, dropped, or answered with 400.

Every case feeds bytes straight into ``receive_datagram`` and checks three things: no exception,
``agent.dropped`` counts it, and no event reaches the user. A seeded fuzz loop then mutates real
messages and feeds them to agents in every state, and checks that the agent still works after.
"""

from __future__ import annotations

import random

import pytest

from intercom.sip.events import CallEnded, RegistrationChanged
from intercom.sip.message import MAX_MESSAGE, SipResponse, parse_message
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply, request

DOOR = ("127.0.0.1", 5062)
PBX = ("127.0.0.1", 5060)

VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-rob"
GOOD_OPTIONS = request(
    "OPTIONS",
    "sip:u5062@127.0.0.1:5062",
    via=VIA,
    from_="<sip:pbx@pbx.example>;tag=p",
    to="<sip:u5062@pbx.example>",
    call_id="rob@pbx",
    cseq=1,
)
GOOD_INVITE = request(
    "INVITE",
    "sip:u5062@127.0.0.1:5062",
    via=VIA,
    from_="<sip:100@pbx.example>;tag=p",
    to="<sip:u5062@pbx.example>",
    call_id="rob-inv@pbx",
    cseq=1,
    headers=[("Contact", "<sip:100@127.0.0.1:5060>"), ("Content-Type", "application/sdp")],
    body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
    b"m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
)


def fresh():
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("100",), domain="pbx.example"))
    return net, door


def feed(door, data: bytes):
    door.receive_datagram(data, PBX, 0.0)
    sent = door.datagrams_to_send()
    events = []
    while (ev := door.next_event()) is not None:
        events.append(ev)
    return sent, events


def start_lines(sent) -> list[str]:
    return [data.split(b"\r\n", 1)[0].decode() for data, _addr in sent]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\xff\xfe garbage \x80\x81", id="binary"),
        pytest.param(b"hello world\r\n\r\n", id="text"),
        pytest.param(b"INVITE\r\n\r\n", id="request-line-only"),
        pytest.param(b"SIP/2.0 OK\r\n\r\n", id="bad-status-line"),
        pytest.param(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n", id="short-response"),
        pytest.param(b"\x00" * (MAX_MESSAGE + 1), id="huge-garbage"),
        pytest.param(GOOD_OPTIONS.replace(b"Via: ", b"Via : \x00"), id="nul-in-via"),
    ],
)
def test_garbage_is_dropped_silently(data):
    _net, door = fresh()
    sent, events = feed(door, data)
    assert door.dropped == 1
    assert sent == []
    assert events == []


def test_keepalive_crlf_is_not_counted():
    _net, door = fresh()
    assert feed(door, b"\r\n\r\n") == ([], [])
    assert door.dropped == 0


def test_truncated_body_gets_400_with_the_request_headers():
    _net, door = fresh()
    sent, events = feed(door, GOOD_INVITE[:-20])  # Content-Length says more than arrived
    assert door.dropped == 1
    assert events == []
    ((data, addr),) = sent
    assert addr == PBX
    resp = parse_message(data)
    assert isinstance(resp, SipResponse)
    assert (resp.status, resp.reason) == (400, "Bad Request")
    assert resp.vias == [VIA]
    assert resp.call_id == "rob-inv@pbx"
    assert resp.headers.get("CSeq") == "1 INVITE"
    assert resp.from_ == "<sip:100@pbx.example>;tag=p"


def test_truncated_headers_get_400():
    _net, door = fresh()
    cut = GOOD_OPTIONS[: GOOD_OPTIONS.index(b"Call-ID")]
    sent, events = feed(door, cut)
    assert start_lines(sent) == ["SIP/2.0 400 Bad Request"]
    assert door.dropped == 1
    assert events == []


def test_request_missing_call_id_gets_400():
    _net, door = fresh()
    data = b"\r\n".join(line for line in GOOD_OPTIONS.split(b"\r\n") if b"Call-ID" not in line)
    sent, events = feed(door, data)
    assert start_lines(sent) == ["SIP/2.0 400 Bad Request"]
    assert f"\r\nVia: {VIA}\r\n".encode() in sent[0][0]
    assert b"Call-ID" not in sent[0][0]
    assert door.dropped == 1
    assert events == []


def test_malformed_request_without_via_gets_nothing():
    _net, door = fresh()
    data = b"\r\n".join(line for line in GOOD_OPTIONS.split(b"\r\n") if b"Via" not in line)
    sent, events = feed(door, data)
    assert (sent, events, door.dropped) == ([], [], 1)


def test_malformed_ack_gets_no_answer():
    _net, door = fresh()
    data = GOOD_OPTIONS.replace(b"OPTIONS", b"ACK").replace(b"CSeq: 1", b"CSeq: x")
    sent, events = feed(door, data)
    assert (sent, events, door.dropped) == ([], [], 1)


def test_huge_request_with_a_via_gets_513():
    _net, door = fresh()
    data = GOOD_OPTIONS.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * MAX_MESSAGE + b"\r\n\r\n")
    sent, events = feed(door, data)
    assert start_lines(sent) == ["SIP/2.0 513 Message Too Large"]
    assert door.dropped == 1
    assert events == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("From", "garbage"),
        ("From", "<sip:100@pbx.example;tag=p"),  # unbalanced <>
        ("From", "<sip:100@[::1>;tag=p"),  # unbalanced []
        ("To", "<sip:u5062@[::1>"),
        ("Via", "SIP/2.0/UDP [::1;branch=z9hG4bK-x"),
        ("Via", "SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bK-x"),
        ("Via", "nonsense"),
    ],
)
def test_malformed_header_values_get_400_not_an_exception(name, value):
    _net, door = fresh()
    lines = GOOD_INVITE.split(b"\r\n")
    fixed = [
        f"{name}: {value}".encode() if line.startswith(name.encode() + b":") else line
        for line in lines
    ]
    sent, events = feed(door, b"\r\n".join(fixed))
    assert start_lines(sent) == ["SIP/2.0 400 Bad Request"]
    assert door.dropped == 1
    assert events == []
    assert door.active_calls() == []
    assert door.txns.servers == {}  # no state kept for it


def test_invite_with_a_malformed_contact_gets_400():
    _net, door = fresh()
    sent, events = feed(door, GOOD_INVITE.replace(b"<sip:100@127.0.0.1:5060>", b"<sip:1@[::1>"))
    assert start_lines(sent) == ["SIP/2.0 400 Bad Request"]
    assert events == []
    assert door.active_calls() == []


@pytest.mark.parametrize(
    ("status", "method"),
    [(200, "OPTIONS"), (200, "INVITE"), (180, "INVITE"), (487, "INVITE"), (200, "REGISTER")],
)
def test_response_to_nothing_is_counted_and_dropped(status, method):
    _net, door = fresh()
    resp = (
        f"SIP/2.0 {status} Whatever\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-nobody\r\n"
        "From: <sip:u5062@pbx.example>;tag=a\r\n"
        "To: <sip:100@pbx.example>;tag=b\r\n"
        "Call-ID: nobody@pi\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:100@127.0.0.1:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    sent, events = feed(door, resp)
    assert (sent, events) == ([], [])
    assert door.dropped == 1


def test_response_with_a_bad_via_is_dropped():
    _net, door = fresh()
    data = reply(parse_message(GOOD_OPTIONS), 200, to_tag="x", via="SIP/2.0/UDP [::1;branch=z")
    sent, events = feed(door, data)
    assert (sent, events, door.dropped) == ([], [], 1)


# ------------------------------------------------------------------------------------------------
# Fuzz: mutated real messages, fed to agents in every state


def _mutations(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:  # truncate
        return data[: rng.randrange(len(data))]
    if kind == 1:  # flip some bytes
        b = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:  # delete a line
        lines = data.split(b"\r\n")
        del lines[rng.randrange(len(lines))]
        return b"\r\n".join(lines)
    if kind == 3:  # duplicate a line
        lines = data.split(b"\r\n")
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return b"\r\n".join(lines)
    if kind == 4:  # insert a special character somewhere
        i = rng.randrange(len(data))
        return (
            data[:i] + rng.choice([b"<", b">", b"[", b"]", b";", b",", b'"', b":", b"@"]) + data[i:]
        )
    if kind == 5:  # swap two lines
        lines = data.split(b"\r\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"\r\n".join(lines)
    # replace a header value by junk
    lines = data.split(b"\r\n")
    i = rng.randrange(1, len(lines))
    name = lines[i].split(b":", 1)[0]
    lines[i] = name + b": " + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(12)))
    return b"\r\n".join(lines)


def _scenario(state: str):
    """A door and a scripted PBX with the door in ``state``; returns the messages of that state."""
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("100",), domain="pbx.example"))
    pbx = ScriptedPeer(net, PBX)
    samples = [GOOD_OPTIONS, GOOD_INVITE]
    if state in ("registering", "outgoing", "answered"):
        door.register(0.0)
        door.call(["100"], 0.0)
        net.settle()
        for msg in pbx.take():
            samples.append(reply(msg, 100))
            samples.append(reply(msg, 180, to_tag="t"))
            samples.append(reply(msg, 407, to_tag="t", headers=[
                ("Proxy-Authenticate", 'Digest realm="r", nonce="n", qop="auth"')
            ]))  # fmt: skip
            contact = [("Contact", "<sip:100@127.0.0.1:5060>")]
            ok = reply(msg, 200, to_tag="t", headers=contact)
            samples.append(ok)
            if state == "answered":
                pbx.send(ok, DOOR)
    elif state == "incoming":
        pbx.send(GOOD_INVITE, DOOR)
    return net, door, pbx, samples


@pytest.mark.parametrize("state", ["idle", "registering", "outgoing", "answered", "incoming"])
def test_fuzzed_messages_never_raise_and_the_agent_keeps_working(state):
    rng = random.Random(f"pi-intercom-{state}")
    net, door, pbx, samples = _scenario(state)
    now = net.now
    for _ in range(400):
        data = _mutations(rng, rng.choice(samples))
        door.receive_datagram(data, PBX, now)
        now += 0.05
        door.handle_timer(now)
        net.now = now
        net.settle()
    # Time runs on without an exception, and every timer is finite.
    net.run(now + 120.0)
    # The agent still works: a clean OPTIONS gets its 200.
    pbx.take()
    fresh_options = GOOD_OPTIONS.replace(b"z9hG4bK-rob", b"z9hG4bK-after-fuzz").replace(
        b"rob@pbx", b"after@pbx"
    )
    pbx.send(fresh_options, DOOR)
    assert [m.status for m in pbx.take() if isinstance(m, SipResponse)] == [200]
    for ev in net.events[DOOR]:
        assert isinstance(ev, (RegistrationChanged, CallEnded)) or ev.call >= 1


def _busy_scenario():
    """A door registering (with a password), calling, and ringing for a caller, all at once."""
    net = Net()
    door = net.add(
        make_agent(
            5062,
            5060,
            allow_incoming=("100",),
            domain="pbx.example",
            password="pw",
            answer_after=0.2,
        )
    )
    pbx = ScriptedPeer(net, PBX)
    door.register(0.0)
    door.call(["100"], 0.0)
    net.settle()
    samples = []
    invite = None
    for msg in pbx.take():
        if msg.method == "REGISTER":
            nat = msg.vias[0].replace(";rport", ";rport=4000;received=10.0.0.9")
            samples += [
                reply(msg, 401, to_tag="t", headers=[("WWW-Authenticate", CHALLENGE_STALE)]),
                reply(msg, 423, to_tag="t", headers=[("Min-Expires", "600")]),
                reply(msg, 200, to_tag="t", via=nat, headers=[("Expires", "30")]),
            ]
        else:
            invite = msg
            samples += [
                reply(msg, 183, to_tag="t"),
                reply(msg, 486, to_tag="t"),
                reply(msg, 407, to_tag="t", headers=[("Proxy-Authenticate", CHALLENGE_SHA)]),
                reply(
                    msg,
                    200,
                    to_tag="t",
                    headers=[
                        ("Contact", "<sip:100@127.0.0.1:5060>"),
                        ("Record-Route", "<sip:127.0.0.1:5060;lr>"),
                    ],
                    body=GOOD_INVITE.split(b"\r\n\r\n", 1)[1],
                ),
            ]
    assert invite is not None
    from_tag = invite.from_.split("tag=")[1]

    def in_dialog(method: str, cseq: int, body: bytes = b"") -> bytes:
        return request(
            method,
            "sip:u5062@127.0.0.1:5062",
            via=f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{method}-{cseq}",
            from_=f"{invite.to};tag=t",
            to=f"<sip:u5062@pbx.example>;tag={from_tag}",
            call_id=invite.call_id,
            cseq=cseq,
            headers=[("Contact", "<sip:100@127.0.0.1:5060>"), ("Content-Type", "application/sdp")],
            body=body,
        )

    offer = GOOD_INVITE.split(b"\r\n\r\n", 1)[1]
    samples += [
        GOOD_INVITE,
        GOOD_INVITE.replace(b"INVITE", b"CANCEL", 2).split(b"\r\n\r\n")[0] + b"\r\n\r\n",
        in_dialog("BYE", 5),
        in_dialog("INVITE", 3, offer),
        in_dialog("UPDATE", 4, offer),
        in_dialog("INFO", 6, b"Signal=1"),
        in_dialog("ACK", 3),
    ]
    return net, door, pbx, samples


CHALLENGE_STALE = 'Digest realm="r", nonce="n", qop="auth,auth-int", opaque="o", stale=true'
CHALLENGE_SHA = 'Digest realm="r", nonce="n", algorithm=SHA-256'


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_dialog_traffic_never_raises(seed):
    rng = random.Random(seed)
    net, door, _pbx, samples = _busy_scenario()
    now = 0.0
    for _ in range(300):
        data = rng.choice(samples)
        if rng.random() < 0.7:
            data = _mutations(rng, data)
        door.receive_datagram(data, PBX, now)
        now += rng.choice([0.01, 0.1, 1.0, 5.0])
        door.handle_timer(now)
        net.now = now
        net.settle()
    net.run(now + 120.0)
    assert door.dropped > 0  # the mutations did reach the parser's error paths


def test_offer_that_cannot_be_read_gets_488():
    net, _door = fresh()
    pbx = ScriptedPeer(net, PBX)
    bad = GOOD_INVITE.replace(b"m=audio 7000 RTP/AVP 0", b"m=audio xxxx RTP/AVP 0")
    pbx.send(bad, DOOR)
    net.run(5.0)  # answer_after: the answer timer must not raise
    assert [m.status for m in pbx.take()] == [100, 180, 488, 488, 488]  # timer G: no ACK
    assert net.sent_at(DOOR, "SIP/2.0 488") == [2.0, 2.5, 3.5]
    assert [type(e) for e in net.events[DOOR]][-1] is CallEnded
