"""Calls to the door, from a scripted PBX, in virtual time.

The PBX sends crafted INVITEs, CANCELs, ACKs and in-dialog requests; the tests assert the door's
answers on the wire (start lines, tags, headers, times) and the events it hands up.
"""

from __future__ import annotations

import itertools

from intercom import sdp
from intercom.sip.address import NameAddr, Via
from intercom.sip.events import CallAnswered, CallEnded, IncomingCall, InfoReceived
from intercom.sip.message import SipResponse
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, request

DOOR = ("127.0.0.1", 5062)
PBX = ("127.0.0.1", 5060)
CALLER_SDP = sdp.build("192.0.2.20", 7000, [sdp.PCMU], session_id=7)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
_seq = itertools.count(1)


def setup(**kw):
    kw.setdefault("domain", "pbx.example")
    kw.setdefault("allow_incoming", ("100", "sip:boss@pbx.example"))
    net = Net()
    door = net.add(make_agent(5062, 5060, **kw))
    pbx = ScriptedPeer(net, PBX)
    return net, door, pbx


class Caller:
    """One call from the PBX to the door: builds its INVITE, CANCEL, ACK and in-dialog requests."""

    def __init__(self, user: str = "100", host: str = "pbx.example", **invite_kw) -> None:
        n = next(_seq)
        self.branch = f"z9hG4bK-in-{n}"
        self.call_id = f"in-{n}@pbx"
        self.from_ = f"<sip:{user}@{host}>;tag=caller{n}"
        self.to = "<sip:u5062@pbx.example>"
        self.to_tag: str | None = None
        self.invite_kw = invite_kw

    def invite(self, *, body: bytes = CALLER_SDP, headers=None) -> bytes:
        if headers is None:
            headers = [("Contact", "<sip:100@127.0.0.1:5060>")]
        if body:
            headers = [*headers, ("Content-Type", "application/sdp")]
        return request(
            "INVITE",
            "sip:u5062@127.0.0.1:5062",
            via=f"SIP/2.0/UDP 127.0.0.1:5060;rport;branch={self.branch}",
            from_=self.from_,
            to=self.to,
            call_id=self.call_id,
            cseq=1,
            headers=headers,
            body=body,
        )

    def cancel(self) -> bytes:
        return request(
            "CANCEL",
            "sip:u5062@127.0.0.1:5062",
            via=f"SIP/2.0/UDP 127.0.0.1:5060;rport;branch={self.branch}",
            from_=self.from_,
            to=self.to,
            call_id=self.call_id,
            cseq=1,
        )

    def ack(self, *, same_branch: bool) -> bytes:
        """The ACK: same branch for a non-2xx (hop by hop), a new one for a 2xx (end to end)."""
        branch = self.branch if same_branch else f"z9hG4bK-ack-{next(_seq)}"
        return request(
            "ACK",
            "sip:u5062@127.0.0.1:5062",
            via=f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}",
            from_=self.from_,
            to=f"{self.to};tag={self.to_tag}",
            call_id=self.call_id,
            cseq=1,
        )

    def in_dialog(self, method: str, cseq: int, **kw) -> bytes:
        return request(
            method,
            "sip:u5062@127.0.0.1:5062",
            via=f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ind-{next(_seq)}",
            from_=self.from_,
            to=f"{self.to};tag={self.to_tag}",
            call_id=self.call_id,
            cseq=cseq,
            **kw,
        )

    def learn_tag(self, resp: SipResponse) -> None:
        self.to_tag = NameAddr.parse(resp.to).tag


def statuses(msgs) -> list[int]:
    return [m.status for m in msgs]


def events(net: Net, kind=None) -> list:
    return [e for e in net.events[DOOR] if kind is None or isinstance(e, kind)]


def ring(net, door, pbx, caller: Caller | None = None, **invite_kw):
    """An allowed caller's INVITE, answered with 100 and 180."""
    caller = caller or Caller()
    pbx.send(caller.invite(**invite_kw), DOOR)
    got = pbx.take()
    assert statuses(got) == [100, 180]
    caller.learn_tag(got[1])
    (incoming,) = events(net, IncomingCall)
    return caller, incoming.call


# ------------------------------------------------------------------------------------------------
# Out of any call


def test_options_gets_200_with_allow():
    net, _door, pbx = setup()
    pbx.send(
        request(
            "OPTIONS",
            "sip:u5062@127.0.0.1:5062",
            via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-o1",
            from_="<sip:pbx@pbx.example>;tag=q",
            to="<sip:u5062@pbx.example>",
            call_id="o1@pbx",
            cseq=1,
        ),
        DOOR,
    )
    (ok,) = pbx.take()
    assert isinstance(ok, SipResponse)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.headers.get("Allow") == ALLOW
    assert ok.headers.get("Accept") == "application/sdp"
    assert NameAddr.parse(ok.to).tag
    assert ok.headers.get("CSeq") == "1 OPTIONS"
    assert ok.call_id == "o1@pbx"
    assert events(net) == []


def test_unknown_method_out_of_dialog_gets_501():
    net, _door, pbx = setup()
    pbx.send(
        request(
            "SUBSCRIBE",
            "sip:u5062@127.0.0.1:5062",
            via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-s1",
            from_="<sip:pbx@pbx.example>;tag=q",
            to="<sip:u5062@pbx.example>",
            call_id="s1@pbx",
            cseq=3,
            headers=[("Event", "presence")],
        ),
        DOOR,
    )
    (resp,) = pbx.take()
    assert (resp.status, resp.reason) == (501, "Not Implemented")
    assert resp.headers.get("Allow") == ALLOW
    assert resp.headers.get("CSeq") == "3 SUBSCRIBE"
    assert events(net) == []


def test_bye_and_info_for_an_unknown_dialog_get_481():
    net, _door, pbx = setup()
    caller = Caller()
    caller.to_tag = "nosuchtag"
    pbx.send(caller.in_dialog("BYE", 2), DOOR)
    pbx.send(caller.in_dialog("INFO", 3, body=b"Signal=1\r\n"), DOOR)
    caller.to_tag = None  # a BYE without a To tag cannot belong to any dialog either
    pbx.send(
        request(
            "BYE",
            "sip:u5062@127.0.0.1:5062",
            via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-bye-notag",
            from_=caller.from_,
            to=caller.to,
            call_id=caller.call_id,
            cseq=4,
        ),
        DOOR,
    )
    got = pbx.take()
    assert [(r.status, r.headers.get("CSeq")) for r in got] == [
        (481, "2 BYE"),
        (481, "3 INFO"),
        (481, "4 BYE"),
    ]
    assert got[0].reason == "Call/Transaction Does Not Exist"
    assert events(net) == []


def test_cancel_for_an_unknown_invite_gets_481():
    _net, _door, pbx = setup()
    pbx.send(Caller().cancel(), DOOR)
    (resp,) = pbx.take()
    assert (resp.status, resp.headers.get("CSeq")) == (481, "1 CANCEL")


# ------------------------------------------------------------------------------------------------
# Who may call


def test_invite_from_an_allowed_caller_rings_then_answers_after_answer_after():
    net, door, pbx = setup(answer_after=2.0)
    caller = Caller()
    pbx.send(caller.invite(), DOOR)
    trying, ringing = pbx.take()
    assert (trying.status, trying.reason) == (100, "Trying")
    assert NameAddr.parse(trying.to).tag is None
    assert (ringing.status, ringing.reason) == (180, "Ringing")
    to_tag = NameAddr.parse(ringing.to).tag
    assert to_tag
    assert ringing.headers.get("Contact") == "<sip:u5062@127.0.0.1:5062>"
    for resp in (trying, ringing):
        assert resp.call_id == caller.call_id
        assert resp.headers.get("CSeq") == "1 INVITE"
        assert Via.parse(resp.vias[0]).params["rport"] == "5060"  # stamped from the source
    (incoming,) = events(net)
    assert incoming == IncomingCall(incoming.call, "sip:100@pbx.example", True, "100")

    net.run(1.99)
    assert pbx.take() == []
    net.run(2.0)
    (ok,) = pbx.take()
    assert (ok.status, ok.reason) == (200, "OK")
    assert NameAddr.parse(ok.to).tag == to_tag  # the same tag as the 180
    assert ok.headers.get("Contact") == "<sip:u5062@127.0.0.1:5062>"
    assert ok.headers.get("Content-Type") == "application/sdp"
    answer = sdp.parse_audio(ok.body)
    assert (answer.address, answer.port) == ("127.0.0.1", 6062)
    answered = events(net)[-1]
    assert answered == CallAnswered(incoming.call, "sip:100@pbx.example", 200, ok.body,
                                    CALLER_SDP, incoming=True)  # fmt: skip

    # The 2xx is retransmitted (T1 doubling) until the ACK comes.
    net.run(6.0)
    assert net.sent_at(DOOR, "SIP/2.0 200") == [2.0, 2.5, 3.5, 5.5]
    pbx.take()
    caller.learn_tag(ok)
    pbx.send(caller.ack(same_branch=False), DOOR)
    net.run(60.0)
    assert net.sent_at(DOOR, "SIP/2.0 200") == [2.0, 2.5, 3.5, 5.5]
    assert pbx.take() == []
    assert events(net, CallEnded) == []
    assert door.active_calls() == [incoming.call]


def test_allow_list_takes_full_uris_too():
    net, door, pbx = setup()
    ring(net, door, pbx, Caller("boss", "pbx.example"))
    _net2, _door2, pbx2 = setup()
    pbx2.send(Caller("boss", "evil.example").invite(), DOOR)
    assert statuses(pbx2.take()) == [403]


def test_invite_from_anyone_else_gets_403_and_no_event():
    net, door, pbx = setup()
    caller = Caller("200")
    pbx.send(caller.invite(), DOOR)
    (forbidden,) = pbx.take()
    assert (forbidden.status, forbidden.reason) == (403, "Forbidden")
    assert NameAddr.parse(forbidden.to).tag
    assert events(net) == []
    assert door.active_calls() == []
    caller.learn_tag(forbidden)
    pbx.send(caller.ack(same_branch=True), DOOR)
    net.run(100.0)
    assert net.sent_at(DOOR, "SIP/2.0 403") == [0.0]  # the ACK stopped timer G
    assert door.dropped == 0


def test_invite_while_an_incoming_call_is_up_gets_486():
    net, door, pbx = setup()
    _caller, handle = ring(net, door, pbx)
    pbx.send(Caller().invite(), DOOR)
    (busy,) = pbx.take()
    assert (busy.status, busy.reason) == (486, "Busy Here")
    assert door.active_calls() == [handle]
    assert len(events(net, IncomingCall)) == 1


def test_invite_while_an_outgoing_call_is_up_gets_486():
    net, door, pbx = setup()
    door.call(["100"], 0.0)
    net.settle()
    pbx.take()
    pbx.send(Caller().invite(), DOOR)
    (busy,) = pbx.take()
    assert busy.status == 486
    assert events(net, IncomingCall) == []


def test_retransmitted_invite_while_ringing_gets_the_180_again():
    net, door, pbx = setup(answer_after=None)
    caller, _handle = ring(net, door, pbx)
    net.run(0.5)
    pbx.send(caller.invite(), DOOR)
    (again,) = pbx.take()
    assert again.status == 180 and NameAddr.parse(again.to).tag == caller.to_tag
    assert len(events(net, IncomingCall)) == 1


# ------------------------------------------------------------------------------------------------
# CANCEL, hang-ups, answer_after


def test_cancel_gets_200_and_the_invite_487():
    net, door, pbx = setup(answer_after=5.0)
    caller, handle = ring(net, door, pbx)
    net.run(1.0)
    pbx.send(caller.cancel(), DOOR)
    cancel_ok, terminated = pbx.take()
    assert (cancel_ok.status, cancel_ok.headers.get("CSeq")) == (200, "1 CANCEL")
    assert (terminated.status, terminated.reason) == (487, "Request Terminated")
    assert terminated.headers.get("CSeq") == "1 INVITE"
    assert NameAddr.parse(terminated.to).tag == caller.to_tag
    assert events(net)[-1] == CallEnded(handle, "cancelled", 487, "sip:100@pbx.example")
    pbx.send(caller.ack(same_branch=True), DOOR)
    net.run(100.0)
    assert net.sent_at(DOOR, "SIP/2.0 200") == [1.0]  # the CANCEL's; never answered at 5 s
    assert net.sent_at(DOOR, "SIP/2.0 487") == [1.0]
    assert door.active_calls() == []
    # A new call is welcome again.
    pbx.send(Caller().invite(), DOOR)
    assert statuses(pbx.take()) == [100, 180]


def test_answer_after_none_never_answers_until_told():
    net, door, pbx = setup(answer_after=None)
    _caller, handle = ring(net, door, pbx)
    net.run(170.0)
    assert pbx.take() == []
    assert events(net, CallAnswered) == []
    door.answer(handle, net.now)
    net.settle()
    (ok,) = pbx.take()
    assert ok.status == 200 and ok.body.startswith(b"v=0")
    assert isinstance(events(net)[-1], CallAnswered)


def test_local_hangup_while_ringing_sends_480():
    net, door, pbx = setup(answer_after=None)
    caller, handle = ring(net, door, pbx)
    door.hangup(handle, 1.0)
    net.settle()
    (resp,) = pbx.take()
    assert (resp.status, NameAddr.parse(resp.to).tag) == (480, caller.to_tag)
    assert events(net)[-1] == CallEnded(handle, "local_hangup", None, "sip:100@pbx.example")


def test_bye_from_the_caller_ends_the_call():
    net, door, pbx = setup(answer_after=0.0)
    caller, handle = ring(net, door, pbx)
    net.run(0.0)
    pbx.take()
    pbx.send(caller.ack(same_branch=False), DOOR)
    net.run(30.0)
    pbx.send(caller.in_dialog("BYE", 2), DOOR)
    (ok,) = pbx.take()
    assert (ok.status, ok.headers.get("CSeq")) == (200, "2 BYE")
    assert events(net)[-1] == CallEnded(handle, "remote_hangup", None, "sip:100@pbx.example")
    assert door.active_calls() == []


def test_our_bye_in_an_incoming_call_follows_the_dialog():
    net, door, pbx = setup(answer_after=0.0)
    caller = Caller()
    rr = ["<sip:127.0.0.1:5060;lr>", "<sip:edge.example;lr>"]
    headers = [("Record-Route", r) for r in rr] + [("Contact", "<sip:100@192.0.2.20:5070>")]
    pbx.send(caller.invite(headers=headers), DOOR)
    net.run(0.0)
    trying, ringing, ok = pbx.take()
    assert ringing.headers.get_all("Record-Route") == rr
    assert ok.headers.get_all("Record-Route") == rr
    assert trying.headers.get_all("Record-Route") == []
    caller.learn_tag(ok)
    pbx.send(caller.ack(same_branch=False), DOOR)
    handle = events(net, IncomingCall)[0].call
    door.hangup(handle, 10.0)
    net.settle()
    (bye,) = pbx.take()
    assert bye.method == "BYE"
    assert bye.uri == "sip:100@192.0.2.20:5070"
    assert bye.headers.get_all("Route") == rr  # the UAS keeps the Record-Route order
    assert bye.to == caller.from_
    assert bye.from_ == f"{caller.to};tag={caller.to_tag}"
    assert bye.headers.get("CSeq") == "1 BYE"
    assert events(net)[-1] == CallEnded(handle, "local_hangup", None, "sip:100@pbx.example")


def test_2xx_never_acked_ends_the_call_at_64_t1():
    net, door, pbx = setup(answer_after=1.0)
    _caller, handle = ring(net, door, pbx)
    net.run(40.0)
    times = net.sent_at(DOOR, "SIP/2.0 200")
    assert times == [1.0, 1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert net.sent_at(DOOR, "BYE")[0] == 33.0
    assert events(net)[-1] == CallEnded(handle, "error", 408, "sip:100@pbx.example")


def test_offer_without_a_common_codec_gets_488():
    net, door, pbx = setup(answer_after=0.0)
    g722 = sdp.build("192.0.2.20", 7000, [sdp.Codec(9, "G722", 8000)], session_id=1)
    _caller, handle = ring(net, door, pbx, body=g722)
    net.run(0.0)
    (resp,) = pbx.take()
    assert (resp.status, resp.reason) == (488, "Not Acceptable Here")
    assert events(net)[-1] == CallEnded(handle, "error", 488, "sip:100@pbx.example")


def test_invite_without_contact_is_refused_with_400_not_left_ringing():
    net, door, pbx = setup(answer_after=1.0)
    caller = Caller()
    pbx.send(caller.invite(headers=[]), DOOR)
    net.run(10.0)  # the answer timer must not blow up
    got = pbx.take()
    assert statuses(got)[-1] == 400
    assert door.active_calls() == []
    assert events(net, IncomingCall) == []
    pbx.send(Caller().invite(), DOOR)  # and the door is not left "busy"
    assert statuses(pbx.take()) == [100, 180]


# ------------------------------------------------------------------------------------------------
# In the call


def test_info_in_the_call_is_handed_up():
    net, door, pbx = setup(answer_after=0.0)
    caller, handle = ring(net, door, pbx)
    net.run(0.0)
    pbx.take()
    pbx.send(caller.ack(same_branch=False), DOOR)
    pbx.send(
        caller.in_dialog(
            "INFO",
            2,
            headers=[("Content-Type", "application/dtmf-relay")],
            body=b"Signal=5\r\nDuration=160\r\n",
        ),
        DOOR,
    )
    (ok,) = pbx.take()
    assert (ok.status, ok.headers.get("CSeq")) == (200, "2 INFO")
    assert events(net)[-1] == InfoReceived(
        handle, "application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"
    )


def test_reinvite_before_our_2xx_is_acked_gets_500_retry_after():
    net, door, pbx = setup(answer_after=0.0)
    caller, _handle = ring(net, door, pbx)
    net.run(0.0)
    pbx.take()
    pbx.send(
        caller.in_dialog(
            "INVITE",
            2,
            headers=[("Contact", "<sip:100@127.0.0.1:5060>"), ("Content-Type", "application/sdp")],
            body=CALLER_SDP,
        ),
        DOOR,
    )
    (resp,) = pbx.take()
    assert resp.status == 500 and resp.headers.get("Retry-After") == "1"


def test_incoming_request_for_a_call_is_matched_by_both_tags():
    net, door, pbx = setup(answer_after=0.0)
    caller, handle = ring(net, door, pbx)
    net.run(0.0)
    pbx.take()
    wrong = Caller()
    wrong.call_id, wrong.to_tag = caller.call_id, caller.to_tag  # other From tag
    pbx.send(wrong.in_dialog("BYE", 2), DOOR)
    (resp,) = pbx.take()
    assert resp.status == 481
    assert events(net, CallEnded) == []
    assert door.active_calls() == [handle]


def test_an_incoming_call_never_answered_rings_at_most_the_ring_limit():
    """Every pending incoming call has a lifetime (issue 10, delivery 3): with answer_after null
    and a caller that never gives up, the door ends the ringing with 480 and forgets it."""
    net, door, pbx = setup(answer_after=None, incoming_ring_limit=180.0)
    _caller, handle = ring(net, door, pbx)
    net.run(179.0)
    assert door.active_calls() == [handle]
    net.run(181.0)
    assert door.active_calls() == []
    assert events(net)[-1] == CallEnded(handle, "no_answer", None, "sip:100@pbx.example")
    assert [m.status for m in pbx.take() if isinstance(m, SipResponse)][-1] == 480
    net.run(400.0)
    assert door.txns.servers == {} and len(door.timers) == 0
