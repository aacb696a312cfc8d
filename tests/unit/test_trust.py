"""Trust comes from where a message came from (issue 10, findings 2, 3, 8, 11; delivery 1).

The door at 127.0.0.1:5062, its PBX at 127.0.0.1:5060; a stranger on the LAN is 127.0.0.2. All in
virtual time, on the in-memory network of tests/unit/sipnet.py.
"""

from __future__ import annotations

import logging
import tracemalloc

from intercom.sip.address import NameAddr
from intercom.sip.events import CallAnswered, CallEnded, InfoReceived, RegistrationChanged
from intercom.sip.message import SipResponse
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply, request

DOOR = ("127.0.0.1", 5062)
PBX = ("127.0.0.1", 5060)
STRANGER = ("127.0.0.2", 5070)

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite_from(src, user: str, host: str, *, n: int = 1, contact: str | None = None) -> bytes:
    contact = contact or f"<sip:{user}@{src[0]}:{src[1]}>"
    return request(
        "INVITE",
        "sip:u5062@127.0.0.1:5062",
        via=f"SIP/2.0/UDP {src[0]}:{src[1]};rport;branch=z9hG4bK-t{n}",
        from_=f"<sip:{user}@{host}>;tag=from{n}",
        to="<sip:u5062@127.0.0.1>",
        call_id=f"trust-{n}@{host}",
        cseq=1,
        headers=[("Contact", contact), ("Content-Type", "application/sdp")],
        body=SDP,
    )


def nothing_held(door) -> bool:
    return (
        door.txns.servers == {}
        and door.txns.clients == {}
        and door.incoming == {}
        and len(door.timers) == 0
    )


# ------------------------------------------------------------------------------------------------
# Closed (sip.register: true): strangers are not answered at all


def test_a_strangers_invite_with_a_forged_allowed_from_is_dropped_unanswered():
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("620",), register=True))
    stranger = ScriptedPeer(net, STRANGER)
    stranger.send(invite_from(STRANGER, "620", "evil"), DOOR)
    stranger.send(invite_from(STRANGER, "620", "127.0.0.1", n=2), DOOR)  # even the PBX's host
    net.run(60.0)
    assert stranger.take() == []  # no 100, no 180, no 403: nothing
    assert net.events[DOOR] == []
    assert nothing_held(door)
    assert door.untrusted == 2


def test_a_strangers_options_register_and_garbage_get_nothing():
    net = Net()
    door = net.add(make_agent(5062, 5060, register=True))
    stranger = ScriptedPeer(net, STRANGER)
    options = request(
        "OPTIONS",
        "sip:u5062@127.0.0.1:5062",
        via="SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-so",
        from_="<sip:scan@evil>;tag=s",
        to="<sip:u5062@127.0.0.1>",
        call_id="scan@evil",
        cseq=1,
    )
    for data in (options, b"garbage\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nVia: x\r\n\r\n"):
        stranger.send(data, DOOR)
    assert stranger.take() == [] and stranger.unparsed == []
    assert door.untrusted == 3 and door.dropped == 0  # dropped before any parsing
    assert nothing_held(door)


def test_trusted_sources_may_send_requests_too():
    net = Net()
    net.add(make_agent(5062, 5060, allow_incoming=("620",), trusted_sources=("127.0.0.2",)))
    sbc = ScriptedPeer(net, STRANGER)
    sbc.send(invite_from(STRANGER, "620", "pbx.example"), DOOR)
    assert [m.status for m in sbc.take()] == [100, 180]  # an entry without host: via the PBX


def test_the_pbx_names_resolved_addresses_are_trusted():
    net = Net()
    door = net.add(make_agent(5062, 5060, register=True))
    pbx_addr = ("127.0.0.9", 5060)
    pbx = ScriptedPeer(net, pbx_addr)
    options = request(
        "OPTIONS",
        "sip:u5062@127.0.0.1:5062",
        via="SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bK-po",
        from_="<sip:pbx@pbx.example>;tag=p",
        to="<sip:u5062@pbx.example>",
        call_id="po@pbx",
        cseq=1,
    )
    pbx.send(options, DOOR)
    assert pbx.take() == []  # 127.0.0.9 is nobody yet
    door.resolved("127.0.0.1", frozenset({"127.0.0.1", "127.0.0.9"}))  # the PBX's name
    pbx.send(options, DOOR)
    (ok,) = pbx.take()
    assert isinstance(ok, SipResponse) and ok.status == 200


# ------------------------------------------------------------------------------------------------
# Open (sip.register: false): anyone may try, but a bare user name means "via the PBX"


def test_an_allow_entry_without_host_matches_only_calls_through_the_pbx():
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("620",), register=False))
    stranger = ScriptedPeer(net, STRANGER)
    stranger.send(invite_from(STRANGER, "620", "evil"), DOOR)
    (refused,) = stranger.take()
    assert isinstance(refused, SipResponse) and refused.status == 403
    assert nothing_held(door)  # answered once, statelessly
    net.run(60.0)
    assert stranger.take() == []  # and never again: no retransmitted 403 to amplify

    pbx = ScriptedPeer(net, PBX)
    pbx.send(invite_from(PBX, "620", "pbx.example", n=2), DOOR)
    assert [m.status for m in pbx.take()] == [100, 180]


def test_a_full_uri_entry_matches_user_and_host():
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("sip:620@127.0.0.2",), register=False))
    stranger = ScriptedPeer(net, STRANGER)
    stranger.send(invite_from(STRANGER, "620", "127.0.0.2"), DOOR)
    assert [m.status for m in stranger.take()] == [100, 180]
    assert door.active_calls() == [1]


# ------------------------------------------------------------------------------------------------
# Digest: only the PBX gets one, only for the registrar's realm


def _answered_call_with(net, door, peer, *, contact: str | None = None):
    """An incoming call from ``peer`` answered by the door; returns the caller's To tag."""
    peer.send(invite_from(peer.addr, "620", peer.addr[0], contact=contact), DOOR)
    net.run(net.now + 3.0)  # answer_after 2 s
    got = peer.take()
    ok = next(m for m in got if isinstance(m, SipResponse) and m.status == 200)
    to_tag = NameAddr.parse(ok.to).tag
    ack = request(
        "ACK",
        "sip:u5062@127.0.0.1:5062",
        via=f"SIP/2.0/UDP {peer.addr[0]}:{peer.addr[1]};branch=z9hG4bK-ack1",
        from_=f"<sip:620@{peer.addr[0]}>;tag=from1",
        to=f"<sip:u5062@127.0.0.1>;tag={to_tag}",
        call_id=f"trust-1@{peer.addr[0]}",
        cseq=1,
    )
    peer.send(ack, DOOR)
    assert isinstance(net.events[DOOR][-1], CallAnswered)
    return to_tag


def test_a_strangers_401_to_the_doors_bye_gets_no_authorization():
    net = Net()
    door = net.add(
        make_agent(
            5062,
            5060,
            allow_incoming=("sip:620@127.0.0.2",),
            register=False,
            password="door-secret",
        )
    )
    door.core.registrar_realm = "pbx.example"  # it even names the registrar's realm
    stranger = ScriptedPeer(net, STRANGER)
    _answered_call_with(net, door, stranger)
    door.hangup(1, net.now)
    net.settle()
    (bye,) = stranger.take_requests("BYE")
    challenge = 'Digest realm="pbx.example", nonce="chosen-by-the-stranger", qop="auth"'
    stranger.send(reply(bye, 401, headers=[("WWW-Authenticate", challenge)]), DOOR)
    net.run(net.now + 40.0)
    again = stranger.take_requests("BYE")
    assert all(
        r.headers.get("Authorization") is None and r.headers.get("Proxy-Authorization") is None
        for r in again
    )
    assert not any(b"response=" in data for _s, _d, data in net.wire)


def _challenged_call(challenge: str, realm: str | None = None):
    """The door rings 621 through the PBX, which answers 407 with ``challenge``; the door has
    seen the registrar's ``realm`` (if any). Returns (net, door, pbx, call handle)."""
    net = Net()
    door = net.add(make_agent(5062, 5060, password="door-secret"))
    door.core.registrar_realm = realm
    pbx = ScriptedPeer(net, PBX)
    handle = door.call(["621"], net.now)
    net.settle()
    (invite,) = pbx.take_requests("INVITE")
    pbx.send(reply(invite, 407, to_tag="t", headers=[("Proxy-Authenticate", challenge)]), DOOR)
    return net, door, pbx, handle


def test_a_challenge_for_another_realm_than_the_registrars_is_not_answered():
    net, _door, pbx, handle = _challenged_call(
        'Digest realm="elsewhere", nonce="n"', realm="pbx.example"
    )
    net.run(net.now + 40.0)
    assert [r for r in pbx.take_requests("INVITE") if r.headers.get("Proxy-Authorization")] == []
    ended = [e for e in net.events[DOOR] if isinstance(e, CallEnded)]
    assert ended == [CallEnded(handle, "auth_failed", 407, "sip:621@127.0.0.1")]


def test_the_pbxs_challenge_for_its_realm_is_answered():
    _net, _door, pbx, _handle = _challenged_call(
        'Digest realm="pbx.example", nonce="n"', realm="pbx.example"
    )
    (again,) = pbx.take_requests("INVITE")
    assert again.headers.get("Proxy-Authorization", "").startswith("Digest ")


# ------------------------------------------------------------------------------------------------
# Inside a dialog: only its other end


def test_a_strangers_info_with_the_right_tags_is_not_taken():
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("620",)))
    pbx = ScriptedPeer(net, PBX)
    to_tag = _answered_call_with(net, door, pbx)
    info = request(
        "INFO",
        "sip:u5062@127.0.0.1:5062",
        via="SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-info",
        from_="<sip:620@127.0.0.1>;tag=from1",
        to=f"<sip:u5062@127.0.0.1>;tag={to_tag}",
        call_id="trust-1@127.0.0.1",
        cseq=2,
        headers=[("Content-Type", "application/dtmf-relay")],
        body=b"Signal=1\r\nDuration=160\r\n",
    )
    stranger = ScriptedPeer(net, STRANGER)
    stranger.send(info, DOOR)  # sniffed tags, sent from elsewhere
    assert [e for e in net.events[DOOR] if isinstance(e, InfoReceived)] == []
    assert stranger.take() == []
    pbx.send(info.replace(b"127.0.0.2:5070", b"127.0.0.1:5060"), DOOR)  # the real peer
    assert [e.body for e in net.events[DOOR] if isinstance(e, InfoReceived)] == [
        b"Signal=1\r\nDuration=160\r\n"
    ]


def test_a_response_from_a_stranger_with_the_right_branch_is_dropped():
    net = Net()
    door = net.add(make_agent(5062, 5060))
    pbx = ScriptedPeer(net, PBX)
    door.register(net.now)
    net.settle()
    (register,) = pbx.take_requests("REGISTER")
    ok = reply(register, 200, headers=[("Contact", "<sip:u5062@127.0.0.1:5062>;expires=300")])
    net.agents[DOOR].receive_datagram(ok, ("127.0.0.3", 5060), net.now)  # a sniffer's forgery
    assert not door.registered
    pbx.send(ok, DOOR)
    assert door.registered


# ------------------------------------------------------------------------------------------------
# Unanswerable challenges end cleanly (finding 11)


def test_a_challenge_with_only_auth_conf_fails_the_registration_instead_of_hanging():
    net = Net()
    door = net.add(make_agent(5062, 5060, password="door-secret"))
    pbx = ScriptedPeer(net, PBX)
    door.register(net.now)
    net.settle()
    (register,) = pbx.take_requests("REGISTER")
    challenge = 'Digest realm="pbx.example", nonce="n", qop="auth-conf"'
    pbx.send(reply(register, 401, headers=[("WWW-Authenticate", challenge)]), DOOR)
    states = [e.state for e in net.events[DOOR] if isinstance(e, RegistrationChanged)]
    assert states == ["registering", "failed"]
    assert door.registration is not None and door.registration.state.value == "backoff"


def test_a_challenge_with_only_auth_conf_ends_a_call_as_auth_failed():
    net, _door, _pbx, handle = _challenged_call(
        'Digest realm="pbx.example", nonce="n", qop="auth-conf"'
    )
    ended = [e for e in net.events[DOOR] if isinstance(e, CallEnded)]
    assert ended == [CallEnded(handle, "auth_failed", 407, "sip:621@127.0.0.1")]


# ------------------------------------------------------------------------------------------------
# Memory stays where it was (finding 2)


def _hostile(n: int) -> bytes:
    kinds = [
        # ² passes str.isdigit() but not int(): a port in the Contact, a CSeq.
        invite_from(PBX, "620", "pbx.example", n=n, contact="<sip:620@127.0.0.1:²>"),
        invite_from(PBX, "620", "pbx.example", n=n).replace(b"CSeq: 1 ", b"CSeq: \xc2\xb2 "),
        invite_from(PBX, "620", "pbx.example", n=n).replace(b"CSeq: 1 ", b"CSeq: 1\xd9\xa3 "),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK" + str(n).encode(),
        invite_from(PBX, "nobody", "pbx.example", n=n),  # not allowed: 403, stateless
        b"\x00\xff" * 50,
    ]
    return kinds[n % len(kinds)]


def test_hostile_datagrams_from_the_pbx_address_leave_no_state_and_no_growth(caplog):
    caplog.set_level(logging.CRITICAL, logger="intercom")  # pytest keeps every record it sees
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("620",)))
    for n in range(600):  # warm-up: caches, the log limiter, interned strings
        door.receive_datagram(_hostile(n), PBX, float(n))
    door.datagrams_to_send()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(600, 20_600):
            door.receive_datagram(_hostile(n), PBX, float(n))
            door.datagrams_to_send()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 200_000, f"{grown} bytes more after 20,000 hostile datagrams"
    assert nothing_held(door)
    assert door.incoming == {} and door.core.sessions == {}


def test_a_request_with_the_same_branch_from_elsewhere_is_not_a_retransmission():
    net = Net()
    net.add(make_agent(5062, 5060, allow_incoming=("620",), trusted_sources=("127.0.0.2",)))
    pbx = ScriptedPeer(net, PBX)
    data = invite_from(PBX, "620", "pbx.example")
    pbx.send(data, DOOR)
    assert [m.status for m in pbx.take()] == [100, 180]
    other = ScriptedPeer(net, STRANGER)
    other.send(data, DOOR)
    assert other.take() == []  # the 180 is not repeated to whoever copies the request


def test_a_full_uri_entry_is_not_matched_by_a_forged_from_sent_from_elsewhere():
    """Review finding: with register false, a stranger at 127.0.0.3 claiming
    From: sip:620@127.0.0.2 was answered as the allowed phone. The host must be the source."""
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("sip:620@127.0.0.2",), register=False))
    forger = ScriptedPeer(net, ("127.0.0.3", 5070))
    forger.send(invite_from(("127.0.0.3", 5070), "620", "127.0.0.2"), DOOR)
    assert [m.status for m in forger.take()] == [403]
    assert nothing_held(door)


def test_a_full_uri_entry_with_a_host_name_matches_only_through_the_pbx():
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("sip:620@fritz.box",), register=False))
    stranger = ScriptedPeer(net, STRANGER)
    stranger.send(invite_from(STRANGER, "620", "fritz.box"), DOOR)
    assert [m.status for m in stranger.take()] == [403]
    pbx = ScriptedPeer(net, PBX)
    pbx.send(invite_from(PBX, "620", "fritz.box", n=2), DOOR)
    assert [m.status for m in pbx.take()] == [100, 180]
    assert door.active_calls() == [1]


# ------------------------------------------------------------------------------------------------
# A malformed Record-Route refuses the dialog at its start, never breaks it later


def test_an_invite_with_a_malformed_record_route_is_refused_and_the_next_call_rings():
    net = Net()
    door = net.add(make_agent(5062, 5060, allow_incoming=("620",)))
    pbx = ScriptedPeer(net, PBX)
    bad = invite_from(PBX, "620", "pbx.example").replace(
        b"Content-Type:", b"Record-Route: x\r\nContent-Type:"
    )
    pbx.send(bad, DOOR)
    assert [m.status for m in pbx.take()] == [400]
    net.run(10.0)  # past answer_after: nothing was kept to answer
    assert nothing_held(door) and net.events[DOOR] == []
    pbx.send(invite_from(PBX, "620", "pbx.example", n=2), DOOR)
    assert [m.status for m in pbx.take()] == [100, 180]  # not 486: no call hangs


def test_a_2xx_with_a_malformed_record_route_ends_the_call_and_is_forgotten():
    net = Net()
    door = net.add(make_agent(5062, 5060))
    pbx = ScriptedPeer(net, PBX)
    for round_ in range(10):  # more than MAX_CALLS: none may stay behind
        handle = door.call(["621"], net.now)
        net.settle()
        (invite,) = pbx.take_requests("INVITE")
        pbx.send(
            reply(
                invite,
                200,
                to_tag=f"t{round_}",
                headers=[("Contact", "<sip:621@127.0.0.1:5070>"), ("Record-Route", "x")],
                body=SDP,
            ),
            DOOR,
        )
        ended = [e for e in net.events[DOOR] if isinstance(e, CallEnded) and e.call == handle]
        assert [e.reason for e in ended] == ["error"]
        net.run(net.now + 40.0)
        pbx.take()
    assert door.calls == {} and door.txns.clients == {} and len(door.timers) == 0


def test_calls_that_ended_do_not_crowd_out_the_next_one():
    """Bench finding: an ended dialog lingers 32 s (for a retransmitted 2xx) and counted against
    the 16-dialog cap, so the 17th call answered within 32 s was hung up at once and reported as
    no_answer after the ring time-out. Ended dialogs now make room."""
    net = Net()
    door = net.add(make_agent(5062, 5060))
    pbx = ScriptedPeer(net, PBX)
    for n in range(40):
        handle = door.call(["621"], net.now)
        net.settle()
        (invite,) = pbx.take_requests("INVITE")
        ok = reply(
            invite,
            200,
            to_tag=f"t{n}",
            headers=[("Contact", "<sip:621@127.0.0.1:5060>")],
            body=SDP,
        )
        pbx.send(ok, DOOR)
        answered = [e for e in net.events[DOOR] if isinstance(e, CallAnswered) and e.call == handle]
        assert len(answered) == 1, f"call {n} was not answered"
        door.hangup(handle, net.now)
        net.settle()
        for bye in pbx.take_requests("BYE"):
            pbx.send(reply(bye, 200), DOOR)
        net.run(net.now + 0.5)  # 40 calls well within 32 s
    assert len(door.core.sessions) <= 16
