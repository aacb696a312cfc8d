"""Outgoing calls through a scripted PBX, in virtual time.

The PBX is played by the test: it reads each request the door sends and answers with crafted
responses (challenges, provisional and final responses, 2xx with Record-Route, a 200 that crosses
our CANCEL, a second fork...) and crafted in-dialog requests (BYE, re-INVITE). Every assertion is
about the wire: start lines, header values and the virtual time of each message.
"""

from __future__ import annotations

import itertools

import pytest

from intercom import sdp
from intercom.sip.address import NameAddr, Via
from intercom.sip.events import (
    CallAnswered,
    CallCalling,
    CallEnded,
    CallRinging,
    CallUpdated,
)
from intercom.sip.message import SipRequest, SipResponse
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply, request

DOOR = ("127.0.0.1", 5062)
PBX = ("127.0.0.1", 5060)
PHONE_SDP = sdp.build("192.0.2.20", 7000, [sdp.PCMU], session_id=42)
#: A B2BUA PBX (Asterisk, FRITZ!Box) puts itself in Contact; a proxy passes the phone's through.
PHONE_CONTACT = "<sip:100@127.0.0.1:5060>"
REMOTE_CONTACT = "<sip:100@192.0.2.20:5070>"
CHALLENGE = 'Digest realm="pbx", nonce="abc", qop="auth", algorithm=MD5'
_branches = itertools.count(1)


def setup(**kw):
    kw.setdefault("domain", "pbx.example")
    kw.setdefault("password", "secret")
    net = Net()
    door = net.add(make_agent(5062, 5060, **kw))
    pbx = ScriptedPeer(net, PBX)
    return net, door, pbx


def take(pbx: ScriptedPeer, method: str) -> SipRequest:
    got = pbx.take()
    reqs = [m for m in got if isinstance(m, SipRequest) and m.method == method]
    assert len(reqs) == 1, f"expected one {method}, got {[str(m) for m in got]}"
    return reqs[0]


def branch(msg: SipRequest | SipResponse) -> str:
    return Via.parse(msg.vias[0]).branch or ""


def tag(header: str) -> str | None:
    return NameAddr.parse(header).tag


def events(net: Net, kind=None) -> list:
    evs = net.events[DOOR]
    return [e for e in evs if kind is None or isinstance(e, kind)]


def answer(invite: SipRequest, to_tag: str = "phone1", record_route=(), contact=PHONE_CONTACT):
    headers = [("Record-Route", rr) for rr in record_route]
    headers += [("Contact", contact), ("Content-Type", "application/sdp")]
    return reply(invite, 200, to_tag=to_tag, headers=headers, body=PHONE_SDP)


def in_dialog(invite: SipRequest, method: str, cseq: int, to_tag: str = "phone1", **kw) -> bytes:
    """A request from the phone inside the dialog that ``invite`` created with ``to_tag``."""
    return request(
        method,
        "sip:u5062@127.0.0.1:5062",
        via=f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-pbx-{next(_branches)}",
        from_=f"{invite.to};tag={to_tag}",
        to=invite.from_,
        call_id=invite.call_id,
        cseq=cseq,
        **kw,
    )


def ringing_call(net, door, pbx, *, targets=("100",), **kw) -> tuple[int, SipRequest]:
    """A call whose single leg got 100 and 180 from the PBX."""
    handle = door.call(list(targets), net.now, **kw)
    net.settle()
    invite = take(pbx, "INVITE")
    pbx.send(reply(invite, 100), DOOR)
    pbx.send(reply(invite, 180, to_tag="phone1"), DOOR)
    return handle, invite


def answered_call(net, door, pbx, **kw) -> tuple[int, SipRequest]:
    handle, invite = ringing_call(net, door, pbx, **kw)
    pbx.send(answer(invite), DOOR)
    take(pbx, "ACK")
    return handle, invite


# ------------------------------------------------------------------------------------------------
# The ladder of the seed document


def test_seed_ladder_407_then_ringing_then_200_through_record_route():
    net, door, pbx = setup()
    handle = door.call(["100"], 0.0)
    net.settle()
    invite1 = take(pbx, "INVITE")
    assert invite1.uri == "sip:100@pbx.example"
    assert invite1.headers.get("CSeq") == "1 INVITE"
    assert invite1.to == "<sip:100@pbx.example>"
    assert invite1.headers.get("Contact") == "<sip:u5062@127.0.0.1:5062>"
    assert invite1.headers.get("Content-Type") == "application/sdp"
    assert invite1.body.startswith(b"v=0\r\n")
    assert events(net) == [CallCalling(handle, "sip:100@pbx.example")]

    pbx.send(reply(invite1, 100), DOOR)
    pbx.send(reply(invite1, 407, to_tag="t407", headers=[("Proxy-Authenticate", CHALLENGE)]), DOOR)

    got = pbx.take()
    assert [m.method for m in got] == ["ACK", "INVITE"]
    ack407, invite2 = got
    # The ACK for the 407: hop by hop, the INVITE's branch, the 407's To tag.
    assert ack407.uri == invite1.uri
    assert branch(ack407) == branch(invite1)
    assert ack407.to == "<sip:100@pbx.example>;tag=t407"
    assert ack407.headers.get("CSeq") == "1 ACK"
    assert ack407.call_id == invite1.call_id
    assert ack407.from_ == invite1.from_
    # The new INVITE: credentials, CSeq 2, same Call-ID and From tag, a new branch.
    assert invite2.uri == "sip:100@pbx.example"
    assert invite2.headers.get("CSeq") == "2 INVITE"
    assert invite2.call_id == invite1.call_id
    assert invite2.from_ == invite1.from_
    assert invite2.to == invite1.to  # no tag from the 407
    assert branch(invite2) != branch(invite1)
    assert invite2.body == invite1.body
    proxy_auth = invite2.headers.get("Proxy-Authorization")
    assert proxy_auth.startswith("Digest ")
    assert 'uri="sip:100@pbx.example"' in proxy_auth
    assert "nc=00000001" in proxy_auth
    assert "Authorization" not in invite2.headers

    net.run(0.3)
    pbx.send(reply(invite2, 100), DOOR)
    pbx.send(reply(invite2, 180, to_tag="phone1"), DOOR)
    assert events(net)[-1] == CallRinging(handle, "sip:100@pbx.example", 180)

    net.run(4.0)
    record_route = ["<sip:proxy2.example;lr>", "<sip:127.0.0.1:5060;lr>"]
    pbx.send(answer(invite2, record_route=record_route, contact=REMOTE_CONTACT), DOOR)
    ack = take(pbx, "ACK")
    # The ACK for the 200: end to end, to the 200's Contact, through the route set.
    assert ack.uri == "sip:100@192.0.2.20:5070"
    assert ack.headers.get_all("Route") == ["<sip:127.0.0.1:5060;lr>", "<sip:proxy2.example;lr>"]
    assert ack.to == "<sip:100@pbx.example>;tag=phone1"
    assert ack.from_ == invite2.from_
    assert ack.headers.get("CSeq") == "2 ACK"
    assert branch(ack) != branch(invite2)
    assert ack.body == b""
    assert net.sent_at(DOOR, "ACK")[-1] == 4.0
    answered = events(net)[-1]
    assert isinstance(answered, CallAnswered)
    assert (answered.call, answered.target, answered.code) == (handle, "sip:100@pbx.example", 200)
    assert answered.remote_sdp == PHONE_SDP
    assert answered.local_sdp == invite2.body

    # Our BYE takes the same road, with the next CSeq.
    net.run(10.0)
    door.hangup(handle, 10.0)
    net.settle()
    bye = take(pbx, "BYE")
    assert bye.uri == "sip:100@192.0.2.20:5070"
    assert bye.headers.get_all("Route") == ["<sip:127.0.0.1:5060;lr>", "<sip:proxy2.example;lr>"]
    assert bye.headers.get("CSeq") == "3 BYE"
    assert bye.to == ack.to and bye.from_ == ack.from_ and bye.call_id == ack.call_id
    assert net.wire[-1][1] == PBX  # sent to the first route
    pbx.send(reply(bye, 200), DOOR)
    assert events(net)[-1] == CallEnded(handle, "local_hangup", None, "sip:100@pbx.example")
    net.run(100.0)
    assert door.active_calls() == []
    assert net.sent_at(DOOR, "INVITE") == [0.0, 0.0]  # timer A stopped at the 100


def test_401_to_invite_is_answered_with_authorization():
    net, door, pbx = setup()
    door.call(["100"], 0.0)
    net.settle()
    invite1 = take(pbx, "INVITE")
    pbx.send(reply(invite1, 401, to_tag="t", headers=[("WWW-Authenticate", CHALLENGE)]), DOOR)
    got = pbx.take()
    invite2 = got[-1]
    assert invite2.method == "INVITE"
    assert 'uri="sip:100@pbx.example"' in invite2.headers.get("Authorization")
    assert "Proxy-Authorization" not in invite2.headers


def test_second_407_after_credentials_ends_with_auth_failed():
    net, door, pbx = setup()
    handle = door.call(["100"], 0.0)
    net.settle()
    challenge = [("Proxy-Authenticate", CHALLENGE)]
    invite1 = take(pbx, "INVITE")
    pbx.send(reply(invite1, 407, to_tag="a", headers=challenge), DOOR)
    invite2 = pbx.take()[-1]
    pbx.send(reply(invite2, 407, to_tag="b", headers=challenge), DOOR)
    (ack,) = pbx.take()
    assert ack.method == "ACK" and tag(ack.to) == "b" and branch(ack) == branch(invite2)
    assert events(net)[-1] == CallEnded(handle, "auth_failed", 407, "sip:100@pbx.example")
    net.run(100.0)
    assert net.sent_at(DOOR, "INVITE") == [0.0, 0.0]


def test_407_without_a_password_ends_with_auth_failed():
    net, door, pbx = setup(password=None)
    handle = door.call(["100"], 0.0)
    net.settle()
    invite = take(pbx, "INVITE")
    pbx.send(reply(invite, 407, to_tag="a", headers=[("Proxy-Authenticate", CHALLENGE)]), DOOR)
    assert [m.method for m in pbx.take()] == ["ACK"]
    assert events(net)[-1] == CallEnded(handle, "auth_failed", 407, "sip:100@pbx.example")


def test_200_without_any_provisional():
    net, door, pbx = setup()
    handle = door.call(["100"], 0.0)
    net.settle()
    invite = take(pbx, "INVITE")
    net.run(0.2)
    pbx.send(answer(invite), DOOR)
    ack = take(pbx, "ACK")
    assert ack.uri == "sip:100@127.0.0.1:5060"
    assert ack.headers.get_all("Route") == []
    assert tag(ack.to) == "phone1"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert [type(e) for e in events(net)] == [CallCalling, CallAnswered]
    assert events(net)[-1].call == handle
    net.run(60.0)
    assert net.sent_at(DOOR, "INVITE") == [0.0]  # the 200 stopped timer A


def test_ack_without_record_route_goes_to_the_contact():
    net, door, pbx = setup()
    phone = ScriptedPeer(net, ("192.0.2.20", 5070))
    door.call(["100"], 0.0)
    net.settle()
    pbx.send(answer(take(pbx, "INVITE"), contact=REMOTE_CONTACT), DOOR)
    assert pbx.take() == []
    (ack,) = phone.take()
    assert ack.method == "ACK"
    assert ack.uri == "sip:100@192.0.2.20:5070"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (486, "busy"),
        (480, "unavailable"),
        (404, "not_found"),
        (603, "rejected"),
        (408, "unavailable"),
    ],
)
def test_final_failure_is_acked_and_ends_the_call(status, reason):
    net, door, pbx = setup()
    handle, invite = ringing_call(net, door, pbx)
    net.run(2.0)
    failure = reply(invite, status, to_tag="phone1")
    pbx.send(failure, DOOR)
    ack = take(pbx, "ACK")
    assert ack.uri == invite.uri
    assert branch(ack) == branch(invite)
    assert ack.to == "<sip:100@pbx.example>;tag=phone1"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert events(net)[-1] == CallEnded(handle, reason, status, "sip:100@pbx.example")
    # A retransmitted final response is ACKed again, and changes nothing else.
    net.run(2.5)
    pbx.send(failure, DOOR)
    take(pbx, "ACK")
    assert len(events(net, CallEnded)) == 1
    net.run(100.0)
    assert pbx.take() == []
    assert door.active_calls() == []


# ------------------------------------------------------------------------------------------------
# CANCEL


def test_ring_timeout_cancels_then_487_is_acked():
    net, door, pbx = setup()
    handle, invite = ringing_call(net, door, pbx, ring_timeout=20.0)
    net.run(19.9)
    assert pbx.take() == []
    net.run(20.0)
    cancel = take(pbx, "CANCEL")
    assert net.sent_at(DOOR, "CANCEL") == [20.0]
    assert cancel.uri == invite.uri
    assert cancel.vias == [invite.vias[0]]  # the INVITE's branch
    assert cancel.headers.get("CSeq") == "1 CANCEL"
    assert cancel.call_id == invite.call_id
    assert cancel.from_ == invite.from_
    assert cancel.to == invite.to
    assert events(net)[-1] == CallEnded(handle, "no_answer", None, None)
    pbx.send(reply(cancel, 200, to_tag="phone1"), DOOR)
    net.run(20.1)
    pbx.send(reply(invite, 487, to_tag="phone1"), DOOR)
    ack = take(pbx, "ACK")
    assert branch(ack) == branch(invite)
    assert ack.headers.get("CSeq") == "1 ACK"
    assert tag(ack.to) == "phone1"
    assert len(events(net, CallEnded)) == 1
    net.run(200.0)
    assert pbx.take() == []
    assert door.active_calls() == []
    assert door.calls == {}


def test_cancel_waits_for_a_provisional_response():
    net, door, pbx = setup()
    handle = door.call(["100"], 0.0, ring_timeout=2.0)
    net.settle()
    invite = take(pbx, "INVITE")
    net.run(2.9)
    assert net.sent_at(DOOR, "CANCEL") == []  # RFC 3261 9.1: not before a provisional
    assert events(net)[-1] == CallEnded(handle, "no_answer", None, None)
    assert [m.method for m in pbx.take()] == ["INVITE", "INVITE"]  # timer A at 0.5 and 1.5
    net.run(3.0)
    pbx.send(reply(invite, 100), DOOR)
    cancel = take(pbx, "CANCEL")
    assert net.sent_at(DOOR, "CANCEL") == [3.0]  # as soon as the 100 arrived
    assert branch(cancel) == branch(invite)
    pbx.send(reply(cancel, 200), DOOR)
    pbx.send(reply(invite, 487, to_tag="x"), DOOR)
    take(pbx, "ACK")
    net.run(100.0)
    assert door.active_calls() == []


def test_cancel_never_sendable_ends_with_the_invite_timeout():
    net, door, _pbx = setup()
    handle = door.call(["100"], 0.0, ring_timeout=5.0)
    net.run(200.0)
    assert net.sent_at(DOOR, "CANCEL") == []
    assert net.sent_at(DOOR, "INVITE")[-1] == 31.5
    assert events(net, CallEnded) == [CallEnded(handle, "no_answer", None, None)]
    assert door.active_calls() == []


def test_hangup_while_ringing_cancels():
    net, door, pbx = setup()
    handle, invite = ringing_call(net, door, pbx)
    net.run(3.0)
    door.hangup(handle, 3.0)
    net.settle()
    cancel = take(pbx, "CANCEL")
    assert branch(cancel) == branch(invite)
    assert events(net)[-1] == CallEnded(handle, "local_hangup", None, None)
    pbx.send(reply(cancel, 200), DOOR)
    pbx.send(reply(invite, 487, to_tag="phone1"), DOOR)
    take(pbx, "ACK")
    door.hangup(handle, 3.0)  # again: nothing more
    net.settle()
    assert pbx.take() == []
    assert len(events(net, CallEnded)) == 1


def test_200_crossing_our_cancel_is_acked_then_byed():
    net, door, pbx = setup()
    handle, invite = ringing_call(net, door, pbx)
    net.run(3.0)
    door.hangup(handle, 3.0)
    net.settle()
    cancel = take(pbx, "CANCEL")
    # The phone answered before the CANCEL reached it.
    pbx.send(answer(invite, record_route=["<sip:127.0.0.1:5060;lr>"], contact=REMOTE_CONTACT), DOOR)
    pbx.send(reply(cancel, 200), DOOR)
    got = pbx.take()
    assert [m.method for m in got] == ["ACK", "BYE"]
    ack, bye = got
    assert tag(ack.to) == "phone1" and ack.uri == "sip:100@192.0.2.20:5070"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert bye.uri == "sip:100@192.0.2.20:5070"
    assert bye.headers.get_all("Route") == ["<sip:127.0.0.1:5060;lr>"]
    assert bye.headers.get("CSeq") == "2 BYE"
    assert tag(bye.to) == "phone1"
    pbx.send(reply(bye, 200), DOOR)
    assert events(net, CallAnswered) == []
    assert events(net, CallEnded) == [CallEnded(handle, "local_hangup", None, None)]
    net.run(100.0)
    assert pbx.take() == []
    assert door.active_calls() == []


# ------------------------------------------------------------------------------------------------
# Several targets


def test_parallel_first_200_wins_and_the_other_leg_is_cancelled():
    net, door, pbx = setup()
    handle = door.call(["100", "101"], 0.0, strategy="parallel")
    net.settle()
    inv100, inv101 = pbx.take()
    assert (inv100.uri, inv101.uri) == ("sip:100@pbx.example", "sip:101@pbx.example")
    assert inv100.call_id != inv101.call_id
    assert [e.target for e in events(net, CallCalling)] == [inv100.uri, inv101.uri]
    for inv in (inv100, inv101):
        pbx.send(reply(inv, 180, to_tag=f"t{inv.uri[4:7]}"), DOOR)
    assert events(net, CallRinging) == [
        CallRinging(handle, "sip:100@pbx.example", 180),
        CallRinging(handle, "sip:101@pbx.example", 180),
    ]

    net.run(5.0)
    pbx.send(answer(inv101, to_tag="t101"), DOOR)
    got = pbx.take()
    assert sorted(m.method for m in got) == ["ACK", "CANCEL"]
    cancel = next(m for m in got if m.method == "CANCEL")
    assert cancel.call_id == inv100.call_id and branch(cancel) == branch(inv100)
    assert events(net)[-1] == CallAnswered(
        handle, "sip:101@pbx.example", 200, inv101.body, PHONE_SDP
    )

    pbx.send(reply(cancel, 200), DOOR)
    pbx.send(reply(inv100, 487, to_tag="t100"), DOOR)
    ack = take(pbx, "ACK")
    assert ack.call_id == inv100.call_id and branch(ack) == branch(inv100)
    assert events(net, CallEnded) == []  # the winner is still talking


def test_parallel_late_200_from_the_loser_is_acked_and_byed():
    net, door, pbx = setup()
    handle = door.call(["100", "101"], 0.0)
    net.settle()
    inv100, inv101 = pbx.take()
    pbx.send(reply(inv100, 180, to_tag="t100"), DOOR)
    pbx.send(reply(inv101, 180, to_tag="t101"), DOOR)
    pbx.send(answer(inv101, to_tag="t101"), DOOR)
    cancel = next(m for m in pbx.take() if m.method == "CANCEL")
    # 100 was picked up too, before the CANCEL arrived.
    pbx.send(answer(inv100, to_tag="t100"), DOOR)
    got = pbx.take()
    assert [m.method for m in got] == ["ACK", "BYE"]
    assert all(m.call_id == inv100.call_id and tag(m.to) == "t100" for m in got)
    pbx.send(reply(cancel, 200), DOOR)
    pbx.send(reply(got[1], 200), DOOR)
    assert len(events(net, CallAnswered)) == 1
    assert events(net, CallEnded) == []
    assert door.active_calls() == [handle]
    # The winner hangs up normally.
    door.hangup(handle, net.now)
    net.settle()
    bye = take(pbx, "BYE")
    assert bye.call_id == inv101.call_id
    pbx.send(reply(bye, 200), DOOR)
    assert events(net, CallEnded) == [
        CallEnded(handle, "local_hangup", None, "sip:101@pbx.example")
    ]
    net.run(100.0)
    assert door.active_calls() == []


def test_parallel_all_fail_reports_the_most_telling_reason():
    net, door, pbx = setup()
    handle = door.call(["100", "101"], 0.0)
    net.settle()
    inv100, inv101 = pbx.take()
    pbx.send(reply(inv100, 404, to_tag="a"), DOOR)
    assert events(net, CallEnded) == []  # 101 may still answer
    pbx.send(reply(inv101, 486, to_tag="b"), DOOR)
    assert events(net, CallEnded) == [CallEnded(handle, "busy", 486, "sip:101@pbx.example")]


def test_sequential_rings_the_next_target_after_the_ring_timeout():
    net, door, pbx = setup()
    handle = door.call(["100", "101"], 0.0, strategy="sequential", ring_timeout=10.0)
    net.settle()
    inv100 = take(pbx, "INVITE")
    assert inv100.uri == "sip:100@pbx.example"
    pbx.send(reply(inv100, 180, to_tag="t100"), DOOR)
    net.run(9.9)
    assert pbx.take() == []
    net.run(10.0)
    cancel = take(pbx, "CANCEL")  # and no INVITE to 101 yet
    assert branch(cancel) == branch(inv100)
    net.run(10.2)
    pbx.send(reply(cancel, 200), DOOR)
    pbx.send(reply(inv100, 487, to_tag="t100"), DOOR)
    got = pbx.take()
    assert [m.method for m in got] == ["ACK", "INVITE"]
    inv101 = got[1]
    assert inv101.uri == "sip:101@pbx.example"
    assert net.sent_at(DOOR, "INVITE") == [0.0, 10.2]
    assert [e.target for e in events(net, CallCalling)] == [inv100.uri, inv101.uri]
    assert events(net, CallEnded) == []
    # The second target gets its own ring timeout.
    pbx.send(reply(inv101, 180, to_tag="t101"), DOOR)
    net.run(20.1)
    assert pbx.take() == []
    net.run(20.2)
    cancel101 = take(pbx, "CANCEL")
    assert branch(cancel101) == branch(inv101)
    assert events(net, CallEnded) == [CallEnded(handle, "no_answer", None, None)]
    pbx.send(reply(cancel101, 200), DOOR)
    pbx.send(reply(inv101, 487, to_tag="t101"), DOOR)
    take(pbx, "ACK")
    net.run(200.0)
    assert door.active_calls() == []
    assert len(events(net, CallEnded)) == 1


def test_sequential_moves_on_at_once_after_a_failure():
    net, door, pbx = setup()
    handle = door.call(["100", "101"], 0.0, strategy="sequential", ring_timeout=10.0)
    net.settle()
    inv100 = take(pbx, "INVITE")
    net.run(1.0)
    assert [m.method for m in pbx.take()] == ["INVITE"]  # timer A at 0.5
    pbx.send(reply(inv100, 486, to_tag="t100"), DOOR)
    got = pbx.take()
    assert [m.method for m in got] == ["ACK", "INVITE"]
    inv101 = got[1]
    assert inv101.uri == "sip:101@pbx.example"
    assert net.sent_at(DOOR, "INVITE") == [0.0, 0.5, 1.0]
    pbx.send(answer(inv101, to_tag="t101"), DOOR)
    take(pbx, "ACK")
    assert events(net)[-1].target == "sip:101@pbx.example"
    assert isinstance(events(net)[-1], CallAnswered)
    # The first target's 486 did not cut the ring time of the second: it still has 10 s.
    assert events(net, CallEnded) == []
    assert handle in door.active_calls()


# ------------------------------------------------------------------------------------------------
# In the call


def test_bye_from_the_far_end_is_answered_and_ends_the_call():
    net, door, pbx = setup()
    handle, invite = answered_call(net, door, pbx)
    net.run(30.0)
    pbx.send(in_dialog(invite, "BYE", 101), DOOR)
    (ok,) = pbx.take()
    assert isinstance(ok, SipResponse)
    assert ok.status == 200 and ok.headers.get("CSeq") == "101 BYE"
    assert ok.call_id == invite.call_id
    assert events(net)[-1] == CallEnded(handle, "remote_hangup", None, "sip:100@pbx.example")
    net.run(100.0)
    assert door.active_calls() == []
    assert pbx.take() == []


def test_max_duration_sends_bye():
    net, door, pbx = setup()
    handle, _invite = answered_call(net, door, pbx, max_duration=60.0)
    net.run(59.9)
    assert pbx.take() == []
    net.run(60.0)
    bye = take(pbx, "BYE")
    assert net.sent_at(DOOR, "BYE") == [60.0]
    assert bye.headers.get("CSeq") == "2 BYE" and tag(bye.to) == "phone1"
    assert events(net)[-1] == CallEnded(handle, "max_duration", None, "sip:100@pbx.example")
    pbx.send(reply(bye, 200), DOOR)
    net.run(200.0)
    assert door.active_calls() == []


def test_our_bye_is_retransmitted_until_answered():
    net, door, pbx = setup()
    handle, _invite = answered_call(net, door, pbx)
    door.hangup(handle, net.now)
    net.run(2.0)
    assert net.sent_at(DOOR, "BYE") == [0.0, 0.5, 1.5]


def test_reinvite_mid_call_gets_a_200_with_sdp_and_the_call_goes_on():
    net, door, pbx = setup()
    handle, invite = answered_call(net, door, pbx)
    net.run(10.0)
    hold_sdp = sdp.build("192.0.2.21", 7002, [sdp.PCMU], session_id=42, version=2,
                         direction="sendonly")  # fmt: skip
    reinvite = in_dialog(
        invite,
        "INVITE",
        102,
        headers=[
            ("Contact", "<sip:100@127.0.0.1:5060;moved>"),
            ("Content-Type", "application/sdp"),
        ],
        body=hold_sdp,
    )
    pbx.send(reinvite, DOOR)
    (ok,) = pbx.take()
    assert isinstance(ok, SipResponse)
    assert ok.status == 200
    assert ok.headers.get("CSeq") == "102 INVITE"
    assert ok.headers.get("Contact") == "<sip:u5062@127.0.0.1:5062>"
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert b"a=recvonly" in ok.body  # the answer to sendonly
    assert tag(ok.to) == tag(invite.from_)  # our tag, from the dialog
    assert events(net)[-1] == CallUpdated(handle, hold_sdp)

    # The 200 is retransmitted (T1, doubling) until the ACK arrives.
    net.run(1.6 + 10.0)
    assert net.sent_at(DOOR, "SIP/2.0 200 OK") == [10.0, 10.5, 11.5]
    pbx.take()
    pbx.send(in_dialog(invite, "ACK", 102), DOOR)
    net.run(50.0)
    assert net.sent_at(DOOR, "SIP/2.0 200 OK") == [10.0, 10.5, 11.5]
    assert events(net, CallEnded) == []

    # The call goes on, and a BYE now goes to the new Contact.
    door.hangup(handle, net.now)
    net.settle()
    bye = take(pbx, "BYE")
    assert bye.uri == "sip:100@127.0.0.1:5060;moved"
    assert bye.headers.get("CSeq") == "2 BYE"


def test_reinvite_without_ack_ends_the_call_after_64_t1():
    net, door, pbx = setup()
    handle, invite = answered_call(net, door, pbx)
    pbx.send(
        in_dialog(
            invite,
            "INVITE",
            102,
            headers=[("Contact", PHONE_CONTACT), ("Content-Type", "application/sdp")],
            body=PHONE_SDP,
        ),
        DOOR,
    )
    net.run(40.0)
    times = net.sent_at(DOOR, "SIP/2.0 200 OK")
    assert times == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert net.sent_at(DOOR, "BYE")[0] == 32.0  # 64*T1 after the 200, not a timer later
    assert events(net)[-1] == CallEnded(handle, "error", 408, "sip:100@pbx.example")


def test_retransmitted_2xx_after_the_ack_is_acked_again():
    net, door, pbx = setup()
    _handle, invite = ringing_call(net, door, pbx)
    ok = answer(invite)
    pbx.send(ok, DOOR)
    first = take(pbx, "ACK")
    net.run(1.0)
    pbx.send(ok, DOOR)  # our ACK was lost: the phone sends its 200 again
    again = take(pbx, "ACK")
    assert again.to_bytes() == first.to_bytes()
    net.run(40.0)  # the INVITE transaction is gone by now
    pbx.send(ok, DOOR)
    assert take(pbx, "ACK").to_bytes() == first.to_bytes()
    assert len(events(net, CallAnswered)) == 1
    assert events(net, CallEnded) == []


def test_second_forked_2xx_is_acked_and_byed_and_the_first_stays_up():
    net, door, pbx = setup()
    handle, invite = ringing_call(net, door, pbx)
    pbx.send(answer(invite, to_tag="phone1"), DOOR)
    take(pbx, "ACK")
    net.run(0.2)
    pbx.send(answer(invite, to_tag="phone2", contact="<sip:100@127.0.0.1:5060;fork=2>"), DOOR)
    got = pbx.take()
    assert [m.method for m in got] == ["ACK", "BYE"]
    ack, bye = got
    assert tag(ack.to) == "phone2" and ack.uri == "sip:100@127.0.0.1:5060;fork=2"
    assert tag(bye.to) == "phone2" and bye.uri == "sip:100@127.0.0.1:5060;fork=2"
    pbx.send(reply(bye, 200), DOOR)
    assert len(events(net, CallAnswered)) == 1
    assert events(net, CallEnded) == []
    # The first phone is still connected: hanging up ends that dialog.
    door.hangup(handle, net.now)
    net.settle()
    bye1 = take(pbx, "BYE")
    assert tag(bye1.to) == "phone1"
    pbx.send(reply(bye1, 200), DOOR)
    assert events(net, CallEnded) == [
        CallEnded(handle, "local_hangup", None, "sip:100@pbx.example")
    ]
    net.run(100.0)
    assert door.active_calls() == []


def test_provisional_183_rings_once():
    net, door, pbx = setup()
    handle = door.call(["100"], 0.0)
    net.settle()
    invite = take(pbx, "INVITE")
    pbx.send(reply(invite, 183, to_tag="p"), DOOR)
    pbx.send(reply(invite, 180, to_tag="p"), DOOR)
    assert events(net, CallRinging) == [CallRinging(handle, "sip:100@pbx.example", 183)]


def test_call_with_no_targets_is_refused():
    _net, door, _pbx = setup()
    with pytest.raises(ValueError):
        door.call([], 0.0)


def test_cancel_without_a_final_response_gives_up_after_64_t1():
    net, door, pbx = setup()
    handle, _invite = ringing_call(net, door, pbx, ring_timeout=20.0)
    net.run(20.0)
    cancel = take(pbx, "CANCEL")
    pbx.send(reply(cancel, 200), DOOR)  # ... but the 487 never comes
    net.run(20.0 + 32.0)
    assert door.active_calls() == []
    assert door.txns.clients == {}  # the INVITE transaction is destroyed too (RFC 3261 9.1)
    assert events(net, CallEnded) == [CallEnded(handle, "no_answer", None, None)]
    net.run(1000.0)
    assert door.get_timer() is None


def test_retransmitted_bye_from_the_far_end_gets_the_same_200():
    net, door, pbx = setup()
    _handle, invite = answered_call(net, door, pbx)
    bye = in_dialog(invite, "BYE", 101)
    pbx.send(bye, DOOR)
    net.run(0.5)
    pbx.send(bye, DOOR)
    first, second = pbx.take()
    assert first.status == 200 and first.to_bytes() == second.to_bytes()
    assert len(events(net, CallEnded)) == 1


def test_in_dialog_request_with_an_old_cseq_gets_500():
    net, door, pbx = setup()
    _handle, invite = answered_call(net, door, pbx)
    pbx.send(in_dialog(invite, "INFO", 10), DOOR)
    pbx.send(in_dialog(invite, "INFO", 9), DOOR)
    assert [m.status for m in pbx.take()] == [200, 500]
    assert events(net, CallEnded) == []


def test_in_dialog_options_and_update():
    net, door, pbx = setup()
    _handle, invite = answered_call(net, door, pbx)
    pbx.send(in_dialog(invite, "OPTIONS", 5), DOOR)
    pbx.send(
        in_dialog(
            invite,
            "UPDATE",
            6,
            headers=[("Contact", PHONE_CONTACT), ("Content-Type", "application/sdp")],
            body=PHONE_SDP,
        ),
        DOOR,
    )
    options_ok, update_ok = pbx.take()
    assert options_ok.status == 200 and "INVITE" in options_ok.headers.get("Allow")
    assert update_ok.status == 200
    assert update_ok.headers.get("Content-Type") == "application/sdp"
    # Our answer, with our address and port, never the offer echoed back.
    assert update_ok.body != PHONE_SDP
    answer_sdp = sdp.parse_audio(update_ok.body)
    assert (answer_sdp.address, answer_sdp.port) == ("127.0.0.1", 6062)
    assert events(net)[-1] == CallUpdated(_handle, PHONE_SDP)
    assert events(net, CallEnded) == []
