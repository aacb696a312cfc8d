"""RFC 3261 section 17 transactions (with RFC 6026), in virtual time.

The transaction layer is driven alone first (an outbox that records the virtual time of every
send, and a timer queue advanced deadline by deadline), then through a user agent on the
in-memory network, where a loss test drops a packet, advances ``now`` to the next timer and
asserts the retransmission.
"""

from __future__ import annotations

import pytest

from intercom.errors import LocalProtocolError
from intercom.sip.message import SipRequest, SipResponse, parse_message
from intercom.sip.timers import Timers
from intercom.sip.transaction import (
    T1,
    T2,
    T4,
    Outbox,
    State,
    TransactionLayer,
    response_to,
)
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply, request

PEER = ("192.0.2.10", 5060)
BRANCH = "z9hG4bK-txn-1"


class Driver:
    """A transaction layer with a virtual clock and a recording outbox."""

    def __init__(self, *, reliable: bool = False) -> None:
        self.now = 0.0
        self.timers = Timers()
        self.sent: list[tuple[float, bytes, tuple[str, int]]] = []
        self.outbox = Outbox(on_send=lambda data, addr: self.sent.append((self.now, data, addr)))
        self.layer = TransactionLayer(self.outbox, self.timers, reliable=reliable)
        self.responses: list[tuple[float, int]] = []
        self.timeouts: list[float] = []

    def send(self, req: SipRequest):
        return self.layer.send_request(
            req,
            PEER,
            self.now,
            lambda resp, now: self.responses.append((now, resp.status)),
            self.timeouts.append,
        )

    def advance(self, until: float) -> None:
        """Fire every timer due up to ``until``, each at its own deadline."""
        while (deadline := self.timers.next_deadline()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            self.timers.run_due(self.now)
        self.now = max(self.now, until)

    def at(self, when: float) -> Driver:
        self.advance(when)
        return self

    def times(self, start: str) -> list[float]:
        return [t for t, data, _ in self.sent if data.startswith(start.encode())]

    def wire(self, start: str) -> list[bytes]:
        return [data for _, data, _ in self.sent if data.startswith(start.encode())]


def make_request(method: str, branch: str = BRANCH, cseq: int = 1) -> SipRequest:
    data = request(
        method,
        "sip:100@pbx.example",
        via=f"SIP/2.0/UDP 192.0.2.1:5062;rport;branch={branch}",
        from_="<sip:door@pbx.example>;tag=door1",
        to="<sip:100@pbx.example>",
        call_id="txn-call@pi",
        cseq=cseq,
        headers=[("Route", "<sip:192.0.2.10;lr>"), ("Contact", "<sip:door@192.0.2.1:5062>")],
    )
    req = parse_message(data)
    assert isinstance(req, SipRequest)
    return req


def response(req: SipRequest, status: int, to_tag: str | None = "far1") -> SipResponse:
    resp = parse_message(reply(req, status, to_tag=to_tag if status > 100 else None))
    assert isinstance(resp, SipResponse)
    return resp


# ------------------------------------------------------------------------------------------------
# INVITE client transaction (17.1.1)


def test_invite_client_timer_a_doubles_until_timer_b_times_out():
    d = Driver()
    txn = d.send(make_request("INVITE"))
    d.advance(100.0)
    assert d.times("INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert d.timeouts == [64 * T1] == [32.0]
    assert txn.state is State.TERMINATED
    assert d.layer.clients == {}
    assert len(d.timers) == 0  # nothing left to fire


def test_invite_client_retransmits_the_same_bytes():
    d = Driver()
    d.send(make_request("INVITE"))
    d.advance(4.0)
    first, *again = d.wire("INVITE")
    assert again and all(data == first for data in again)


def test_invite_client_provisional_stops_timer_a_and_disarms_timer_b():
    d = Driver()
    req = make_request("INVITE")
    txn = d.send(req)
    d.advance(1.0)
    txn.receive(response(req, 180), d.now)
    d.advance(200.0)
    assert d.times("INVITE") == [0.0, 0.5]  # nothing after the 180
    assert d.timeouts == []  # timer B guards only the Calling state
    assert txn.state is State.PROCEEDING
    assert d.responses == [(1.0, 180)]


def test_invite_client_non_2xx_is_acked_with_the_to_tag_and_branch_then_timer_d():
    d = Driver()
    req = make_request("INVITE")
    txn = d.send(req)
    d.advance(0.2)
    txn.receive(response(req, 180), d.now)
    d.advance(3.0)
    busy = response(req, 486, to_tag="busy-tag")
    txn.receive(busy, d.now)
    assert d.responses == [(0.2, 180), (3.0, 486)]
    (ack_bytes,) = d.wire("ACK")
    ack = parse_message(ack_bytes)
    assert ack_bytes.startswith(b"ACK sip:100@pbx.example SIP/2.0\r\n")
    assert ack.vias == [req.vias[0]]  # the INVITE's branch: hop-by-hop ACK
    assert ack.to == "<sip:100@pbx.example>;tag=busy-tag"
    assert ack.from_ == req.from_
    assert ack.call_id == req.call_id
    assert ack.headers.get("CSeq") == "1 ACK"
    assert ack.headers.get_all("Route") == ["<sip:192.0.2.10;lr>"]
    assert ack.body == b""
    assert txn.state is State.COMPLETED

    # A retransmitted 486 is ACKed again and not passed up.
    d.advance(5.0)
    txn.receive(busy, d.now)
    assert d.wire("ACK") == [ack_bytes, ack_bytes]
    assert d.times("ACK") == [3.0, 5.0]
    assert d.responses == [(0.2, 180), (3.0, 486)]

    # Timer D: 32 s over UDP, then the transaction is gone.
    d.advance(3.0 + 32.0 - 0.01)
    assert txn.state is State.COMPLETED
    d.advance(3.0 + 32.0)
    assert txn.state is State.TERMINATED
    assert d.layer.match_response(busy) is None
    assert d.times("INVITE") == [0.0]  # timer A stopped at the 180


def test_invite_client_2xx_is_left_to_the_tu_and_absorbed_for_64_t1():
    d = Driver()
    req = make_request("INVITE")
    txn = d.send(req)
    ok = response(req, 200)
    d.advance(0.1)
    txn.receive(ok, d.now)
    assert txn.state is State.ACCEPTED
    assert d.wire("ACK") == []  # the ACK for a 2xx is end-to-end: the TU's job
    d.advance(2.0)
    txn.receive(ok, d.now)  # retransmitted 2xx: handed to the TU so it can ACK again
    assert d.responses == [(0.1, 200), (2.0, 200)]
    txn.receive(response(req, 486), d.now)  # anything else is ignored in Accepted
    assert d.responses == [(0.1, 200), (2.0, 200)]
    d.advance(0.1 + 32.0)
    assert txn.state is State.TERMINATED
    assert d.times("INVITE") == [0.0]
    assert d.timeouts == []


# ------------------------------------------------------------------------------------------------
# Non-INVITE client transaction (17.1.2)


def test_non_invite_client_timer_e_doubles_capped_at_t2_then_timer_f():
    d = Driver()
    txn = d.send(make_request("OPTIONS"))
    d.advance(100.0)
    assert d.times("OPTIONS") == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    gaps = [b - a for a, b in zip(d.times("OPTIONS"), d.times("OPTIONS")[1:], strict=False)]
    assert max(gaps) == T2
    assert d.timeouts == [32.0]
    assert txn.state is State.TERMINATED


def test_non_invite_client_proceeding_retransmits_every_t2():
    d = Driver()
    req = make_request("REGISTER")
    txn = d.send(req)
    d.advance(0.2)
    txn.receive(response(req, 100), d.now)
    d.advance(100.0)
    # The timer E already armed for 0.5 fires, then every T2 until timer F at 32 s.
    assert d.times("REGISTER") == [0, 0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert d.timeouts == [32.0]


def test_non_invite_client_final_stops_retransmission_and_absorbs_for_t4():
    d = Driver()
    req = make_request("BYE")
    txn = d.send(req)
    d.advance(1.0)
    ok = response(req, 200)
    txn.receive(ok, d.now)
    txn.receive(ok, d.now)  # a retransmitted final is absorbed
    assert d.responses == [(1.0, 200)]
    assert txn.state is State.COMPLETED
    d.advance(1.0 + T4 - 0.01)
    assert txn.state is State.COMPLETED
    d.advance(1.0 + T4)
    assert txn.state is State.TERMINATED
    d.advance(100.0)
    assert d.times("BYE") == [0.0, 0.5]
    assert d.timeouts == []


def test_client_matching_uses_branch_and_method():
    d = Driver()
    req = make_request("INVITE")
    txn = d.send(req)
    ok = response(req, 200)
    assert d.layer.match_response(ok) is txn
    cancel_answer = parse_message(ok.to_bytes().replace(b"1 INVITE", b"1 CANCEL"))
    assert d.layer.match_response(cancel_answer) is None
    other = parse_message(ok.to_bytes().replace(BRANCH.encode(), b"z9hG4bK-other"))
    assert d.layer.match_response(other) is None


# ------------------------------------------------------------------------------------------------
# Server transactions (17.2)


def test_non_invite_server_resends_its_last_response_to_retransmissions():
    d = Driver()
    req = make_request("OPTIONS")
    server = d.layer.create_server(req, PEER, d.now)
    assert d.layer.match_request(req) is server
    server.retransmitted(req, d.now)
    assert d.sent == []  # nothing to repeat yet
    server.respond(response_to(req, 200, "OK", to_tag="me"), d.now)
    d.advance(3.0)
    server.retransmitted(make_request("OPTIONS"), d.now)
    d.advance(9.0)
    server.retransmitted(make_request("OPTIONS"), d.now)
    sent = d.wire("SIP/2.0 200")
    assert len(sent) == 3 and len(set(sent)) == 1
    assert d.times("SIP/2.0 200") == [0.0, 3.0, 9.0]
    assert all(addr == PEER for _, _, addr in d.sent)
    # Timer J: 64*T1 over UDP, then a retransmission is a new request.
    d.advance(32.0)
    assert d.layer.match_request(req) is None
    with pytest.raises(LocalProtocolError):
        server.respond(response_to(req, 500, "Server Internal Error"), d.now)


def test_non_invite_server_provisional_then_final():
    d = Driver()
    req = make_request("REGISTER")
    server = d.layer.create_server(req, PEER, d.now)
    server.respond(response_to(req, 100, "Trying"), d.now)
    server.retransmitted(req, d.now)
    assert [data.split(b"\r\n")[0] for data in d.wire("SIP/2.0")] == [b"SIP/2.0 100 Trying"] * 2
    server.respond(response_to(req, 200, "OK", to_tag="x"), d.now)
    with pytest.raises(LocalProtocolError):
        server.respond(response_to(req, 200, "OK", to_tag="x"), d.now)


def test_invite_server_timer_g_until_timer_h():
    d = Driver()
    req = make_request("INVITE")
    server = d.layer.create_server(req, PEER, d.now)
    d.advance(1.0)
    server.respond(response_to(req, 486, "Busy Here", to_tag="me"), d.now)
    d.advance(200.0)
    times = [t - 1.0 for t in d.times("SIP/2.0 486")]
    assert times == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert server.state is State.TERMINATED
    assert d.layer.match_request(req) is None


def test_invite_server_ack_stops_timer_g_and_timer_i_absorbs_acks():
    d = Driver()
    req = make_request("INVITE")
    server = d.layer.create_server(req, PEER, d.now)
    server.respond(response_to(req, 100, "Trying"), d.now)
    server.respond(response_to(req, 404, "Not Found", to_tag="me"), d.now)
    d.advance(2.0)
    assert d.times("SIP/2.0 404") == [0.0, 0.5, 1.5]
    ack = make_request("ACK")  # same branch: the hop-by-hop ACK for our 404
    assert d.layer.match_request(ack) is server
    server.retransmitted(ack, d.now)
    assert server.state is State.CONFIRMED
    server.retransmitted(ack, d.now)  # absorbed
    d.advance(2.0 + T4 - 0.01)
    assert server.state is State.CONFIRMED
    d.advance(2.0 + T4)
    assert server.state is State.TERMINATED
    d.advance(100.0)
    assert d.times("SIP/2.0 404") == [0.0, 0.5, 1.5]
    assert len(d.sent) == 4  # the 100 and three 404s


def test_invite_server_resends_the_provisional_to_a_retransmitted_invite():
    d = Driver()
    req = make_request("INVITE")
    server = d.layer.create_server(req, PEER, d.now)
    server.respond(response_to(req, 180, "Ringing", to_tag="me"), d.now)
    d.advance(0.5)
    server.retransmitted(req, d.now)
    assert d.times("SIP/2.0 180") == [0.0, 0.5]


def test_invite_server_2xx_is_not_retransmitted_by_the_transaction():
    d = Driver()
    req = make_request("INVITE")
    server = d.layer.create_server(req, PEER, d.now)
    server.respond(response_to(req, 200, "OK", to_tag="me"), d.now)
    assert server.state is State.ACCEPTED
    server.retransmitted(req, d.now)  # RFC 6026: absorbed, the TU retransmits the 2xx
    d.advance(10.0)
    assert d.times("SIP/2.0 200") == [0.0]
    # The ACK for a 2xx is end-to-end: never matched to the INVITE server transaction.
    assert d.layer.match_request(make_request("ACK")) is None
    d.advance(32.0)
    assert server.state is State.TERMINATED


def test_impossible_transition_raises():
    d = Driver()
    req = make_request("INVITE")
    server = d.layer.create_server(req, PEER, d.now)
    server.respond(response_to(req, 486, "Busy Here", to_tag="me"), d.now)
    with pytest.raises(LocalProtocolError):
        server._go(State.PROCEEDING)


# ------------------------------------------------------------------------------------------------
# Reliable transport: timers A, E and G never run; B, F and H still do; D, I, J and K are zero.


def test_tcp_invite_client_never_retransmits_but_times_out():
    d = Driver(reliable=True)
    d.send(make_request("INVITE"))
    d.advance(100.0)
    assert d.times("INVITE") == [0.0]
    assert d.timeouts == [32.0]


def test_tcp_non_invite_client_never_retransmits_and_completes_at_once():
    d = Driver(reliable=True)
    req = make_request("OPTIONS")
    txn = d.send(req)
    d.advance(100.0)
    assert d.times("OPTIONS") == [0.0]
    assert d.timeouts == [32.0]

    d2 = Driver(reliable=True)
    txn = d2.send(req)
    txn.receive(response(req, 200), 0.0)
    d2.advance(0.0)  # timer K is zero
    assert txn.state is State.TERMINATED


def test_tcp_invite_client_non_2xx_ack_once_and_timer_d_zero():
    d = Driver(reliable=True)
    req = make_request("INVITE")
    txn = d.send(req)
    txn.receive(response(req, 486), d.now)
    assert len(d.wire("ACK")) == 1
    d.advance(0.0)
    assert txn.state is State.TERMINATED


def test_tcp_invite_server_never_retransmits_the_final():
    d = Driver(reliable=True)
    req = make_request("INVITE")
    server = d.layer.create_server(req, PEER, d.now)
    server.respond(response_to(req, 603, "Decline", to_tag="me"), d.now)
    d.advance(31.0)
    assert d.times("SIP/2.0 603") == [0.0]
    assert server.state is State.COMPLETED  # waiting for the ACK, until timer H
    d.advance(32.0)
    assert server.state is State.TERMINATED


# ------------------------------------------------------------------------------------------------
# Through the user agent, on the in-memory network

DOOR = ("127.0.0.1", 5062)
PBX = ("127.0.0.1", 5060)


def test_agent_invite_loss_retransmits_at_timer_a():
    net = Net(drop=lambda src, dst, data: data.startswith(b"INVITE") and net.now == 0.0)
    door = net.add(make_agent(5062, 5060))
    pbx = ScriptedPeer(net, PBX)
    door.call(["100"], 0.0)
    net.settle()
    assert pbx.take() == []  # the first INVITE was lost
    assert door.get_timer() == 0.5
    net.run(0.5)
    (invite,) = pbx.take()
    assert isinstance(invite, SipRequest) and invite.method == "INVITE"
    assert net.sent_at(DOOR, "INVITE") == [0.0, 0.5]
    pbx.send(reply(invite, 100), DOOR)
    net.run(60.0)
    assert net.sent_at(DOOR, "INVITE") == [0.0, 0.5]


def test_agent_invite_unanswered_times_out_after_64_t1():
    net = Net()
    door = net.add(make_agent(5062, 5060))
    pbx = ScriptedPeer(net, PBX)
    handle = door.call(["100"], 0.0, ring_timeout=100.0)
    net.run(40.0)
    assert net.sent_at(DOOR, "INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    ended = [e for e in net.events[DOOR] if type(e).__name__ == "CallEnded"]
    assert [(e.call, e.reason) for e in ended] == [(handle, "timeout")]
    assert net.sent_at(DOOR, "CANCEL") == []  # nothing to cancel: nobody ever answered
    assert len(pbx.history) == 7


def test_agent_over_tcp_sends_each_request_once():
    net = Net()
    door = net.add(make_agent(5062, 5060, transport="tcp"))
    ScriptedPeer(net, PBX)
    door.register(0.0)
    door.call(["100"], 0.0, ring_timeout=100.0)
    net.run(31.0)
    assert net.sent_at(DOOR, "INVITE") == [0.0]
    assert net.sent_at(DOOR, "REGISTER") == [0.0]
    invite = net.messages(DOOR, "INVITE")[0]
    assert invite.vias[0].startswith("SIP/2.0/TCP 127.0.0.1:5062;")
    assert invite.headers.get("Contact") == "<sip:u5062@127.0.0.1:5062;transport=tcp>"


def test_agent_non_invite_server_absorbs_a_retransmitted_options():
    net = Net()
    net.add(make_agent(5062, 5060))
    pbx = ScriptedPeer(net, PBX)
    options = request(
        "OPTIONS",
        "sip:u5062@127.0.0.1:5062",
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-opt-1",
        from_="<sip:pbx@127.0.0.1>;tag=p1",
        to="<sip:u5062@127.0.0.1>",
        call_id="opt-1@pbx",
        cseq=7,
    )
    pbx.send(options, DOOR)
    net.run(0.5)
    pbx.send(options, DOOR)
    first, second = pbx.take()
    assert isinstance(first, SipResponse) and first.status == 200
    assert first.to_bytes() == second.to_bytes()  # the same response, same To tag
    assert net.sent_at(DOOR, "SIP/2.0 200") == [0.0, 0.5]


def test_agent_refuses_an_invite_statelessly_once_per_copy():
    """A refusal is answered once per copy of the request, keeps no state and is never
    retransmitted by the door (issue 10, finding 8: 10 retransmissions made it an amplifier)."""
    net = Net()
    door = net.add(make_agent(5062, 5060))  # allows nobody
    pbx = ScriptedPeer(net, PBX)
    invite = request(
        "INVITE",
        "sip:u5062@127.0.0.1:5062",
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-inv-403",
        from_="<sip:stranger@127.0.0.1>;tag=s1",
        to="<sip:u5062@127.0.0.1>",
        call_id="inv-403@pbx",
        cseq=1,
        headers=[("Contact", "<sip:stranger@127.0.0.1:5060>")],
    )
    pbx.send(invite, DOOR)
    assert door.txns.servers == {}  # nothing kept
    assert len(door.timers) == 0  # and nothing to fire
    net.run(100.0)
    assert net.sent_at(DOOR, "SIP/2.0 403") == [0]
    # The PBX did not hear it and sends the INVITE again: the same 403, same To tag.
    net.now = 100.5
    pbx.send(invite, DOOR)
    first, second = [m for m in pbx.take() if isinstance(m, SipResponse)]
    assert first.to_bytes() == second.to_bytes()
    # Its ACK finds nothing to match and is not an error.
    to_tag = first.to.split("tag=")[1]
    ack = request(
        "ACK",
        "sip:u5062@127.0.0.1:5062",
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-inv-403",
        from_="<sip:stranger@127.0.0.1>;tag=s1",
        to=f"<sip:u5062@127.0.0.1>;tag={to_tag}",
        call_id="inv-403@pbx",
        cseq=1,
    )
    pbx.send(ack, DOOR)
    net.run(300.0)
    assert net.sent_at(DOOR, "SIP/2.0 403") == [0, 100.5]
    assert door.txns.servers == {}
    assert door.dropped == 0
