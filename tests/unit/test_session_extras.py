"""Delayed offers, in-dialog challenges and 2xx retransmission over TCP, in virtual time."""

from __future__ import annotations

from intercom import sdp
from intercom.sip.events import CallAnswered, CallUpdated
from intercom.sip.message import SipRequest, SipResponse
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply
from tests.unit.test_incoming_call import DOOR, PBX, events, ring

ANSWER = sdp.build("192.0.2.30", 7100, [sdp.PCMU], session_id=9)


def _setup(**kw):  # type: ignore[no-untyped-def]
    kw.setdefault("domain", "pbx.example")
    kw.setdefault("allow_incoming", ("100",))
    kw.setdefault("answer_after", 0.0)
    net = Net()
    door = net.add(make_agent(5062, 5060, **kw))
    return net, door, ScriptedPeer(net, PBX)


def test_invite_without_sdp_gets_an_offer_and_the_ack_brings_the_answer() -> None:
    net, _door, pbx = _setup()
    caller, _handle = ring(net, _door, pbx, body=b"")
    net.run(0.1)
    (ok,) = pbx.take()
    assert isinstance(ok, SipResponse) and ok.status == 200
    offer = sdp.parse_audio(ok.body)
    assert [c.name for c in offer.codecs][:2] == ["PCMU", "PCMA"]  # a full offer, not an answer
    assert not events(net, CallAnswered), "no media to start before the answer"
    ack = caller.ack(same_branch=False)
    ack = (
        ack.replace(
            b"Content-Length: 0",
            b"Content-Type: application/sdp\r\n" + f"Content-Length: {len(ANSWER)}".encode(),
        )
        + ANSWER
    )
    pbx.send(ack, DOOR)
    (answered,) = events(net, CallAnswered)
    assert answered.remote_sdp == ANSWER and answered.incoming


def test_reinvite_without_sdp_takes_the_answer_from_the_ack() -> None:
    net, _door, pbx = _setup()
    caller, _handle = ring(net, _door, pbx)
    net.run(0.1)
    pbx.take()
    pbx.send(caller.ack(same_branch=False), DOOR)
    pbx.send(caller.in_dialog("INVITE", 2, headers=[("Contact", "<sip:100@127.0.0.1:5060>")]), DOOR)
    (ok,) = pbx.take()
    assert ok.status == 200 and ok.body  # our offer
    ack = caller.in_dialog("ACK", 2, headers=[("Content-Type", "application/sdp")], body=ANSWER)
    pbx.send(ack, DOOR)
    (updated,) = events(net, CallUpdated)
    assert updated.remote_sdp == ANSWER


def test_our_bye_challenged_with_407_is_sent_again_with_credentials() -> None:
    net, door, pbx = _setup(password="secret")
    caller, handle = ring(net, door, pbx)
    net.run(0.1)
    pbx.take()
    pbx.send(caller.ack(same_branch=False), DOOR)
    door.hangup(handle, net.now)
    net.settle()
    (bye,) = pbx.take_requests("BYE")
    challenge = 'Digest realm="pbx.example", nonce="abc123", qop="auth"'
    pbx.send(reply(bye, 407, headers=[("Proxy-Authenticate", challenge)]), DOOR)
    (again,) = pbx.take_requests("BYE")
    assert isinstance(again, SipRequest)
    assert again.cseq[0] == bye.cseq[0] + 1 and again.call_id == bye.call_id
    auth = again.headers.get("Proxy-Authorization") or ""
    assert 'nonce="abc123"' in auth and f'uri="{again.uri}"' in auth
    pbx.send(reply(again, 407, headers=[("Proxy-Authenticate", challenge)]), DOOR)
    assert pbx.take_requests("BYE") == []  # only one retry: no loop on wrong credentials


def test_2xx_is_retransmitted_until_acked_even_over_tcp() -> None:
    net, _door, pbx = _setup(transport="tcp")
    _caller, _handle = ring(net, _door, pbx)
    net.run(0.1)
    net.run(2.0)
    oks = [m for m in pbx.take() if isinstance(m, SipResponse) and m.status == 200]
    assert len(oks) >= 3  # at 0, 0.5 and 1.5 s: the 2xx is end-to-end (RFC 3261 13.3.1.4)


def test_registered_stays_true_during_a_refresh() -> None:
    net, door, pbx = _setup(expires=60)
    door.register(net.now)
    net.settle()
    (reg,) = pbx.take_requests("REGISTER")
    pbx.send(
        reply(reg, 200, headers=[("Contact", f"{reg.headers.get('Contact')};expires=60")]), DOOR
    )
    assert door.registered
    net.run(30.1)  # the refresh goes at half the granted 60 s
    (refresh,) = pbx.take_requests("REGISTER")
    assert door.registered, "a refresh in flight does not make the door unregistered"
    pbx.send(reply(refresh, 200, headers=[("Expires", "60")]), DOOR)
    assert door.registered
