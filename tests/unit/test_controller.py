"""The intercom's call state table: SIP core events in, the state the outside world sees out.

First the table itself, row by row; then the same table fed by real events from two user agents
talking to each other on the in-memory network, and from a door talking to a scripted PBX.
"""

from __future__ import annotations

import pytest

from intercom.controller import (
    CALL_STATES,
    ERROR_REASONS,
    TRANSITIONS,
    CallStateMachine,
    describe,
    event_name,
)
from intercom.sip.events import (
    END_REASONS,
    CallAnswered,
    CallCalling,
    CallEnded,
    CallRinging,
    CallUpdated,
    DtmfReceived,
    IncomingCall,
    InfoReceived,
    RegistrationChanged,
)
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply

T = "sip:100@pbx.example"
CALLING = CallCalling(1, T)
RINGING = CallRinging(1, T, 180)
ANSWERED = CallAnswered(1, T, 200, b"v=0 local", b"v=0 remote")
INCOMING = IncomingCall(2, "sip:100@pbx.example", True)


def ended(reason: str, code: int | None = None) -> CallEnded:
    return CallEnded(1, reason, code, T)


def run(events, start: str = "idle") -> list[str]:
    machine = CallStateMachine(start)
    return [machine.feed(e) for e in events]


# ------------------------------------------------------------------------------------------------
# The table


def test_outgoing_call_calling_ringing_in_call_ended():
    assert run([CALLING, RINGING, ANSWERED, ended("remote_hangup")]) == [
        "calling",
        "ringing",
        "in_call",
        "ended",
    ]


def test_answer_without_ringing():
    assert run([CALLING, ANSWERED, ended("local_hangup")]) == ["calling", "in_call", "ended"]


@pytest.mark.parametrize("reason", ["auth_failed", "timeout", "error"])
def test_setup_problems_end_in_error(reason):
    assert run([CALLING, ended(reason, 407)]) == ["calling", "error"]
    assert run([CALLING, RINGING, ended(reason)]) == ["calling", "ringing", "error"]


@pytest.mark.parametrize("reason", ["busy", "rejected", "not_found", "unavailable", "no_answer"])
def test_callee_answers_end_in_ended(reason):
    assert run([CALLING, RINGING, ended(reason)]) == ["calling", "ringing", "ended"]


def test_error_reasons_are_end_reasons():
    assert ERROR_REASONS <= END_REASONS


def test_incoming_call_rings_then_talks():
    answered = CallAnswered(2, "sip:100@pbx.example", 200, b"l", b"r", incoming=True)
    assert run([INCOMING, answered, CallEnded(2, "remote_hangup")]) == [
        "ringing",
        "in_call",
        "ended",
    ]
    assert run([INCOMING, CallEnded(2, "cancelled", 487)]) == ["ringing", "ended"]


@pytest.mark.parametrize("start", ["idle", "ended", "error"])
def test_a_new_call_starts_from_any_idle_like_state(start):
    assert run([CALLING], start) == ["calling"]
    assert run([INCOMING], start) == ["ringing"]


def test_sequential_next_target_goes_back_to_calling():
    assert run([CALLING, RINGING, CallCalling(1, "sip:101@pbx.example")]) == [
        "calling",
        "ringing",
        "calling",
    ]


def test_events_that_change_nothing():
    during_call = [
        RINGING,  # a second fork ringing
        CallUpdated(1, b"v=0"),
        InfoReceived(1, "application/dtmf-relay", b"Signal=1"),
        RegistrationChanged("registered", 200, expires=300),
        RegistrationChanged("failed", 403, "forbidden", retry_in=30.0),
        INCOMING,  # refused with 486 anyway
        CALLING,
    ]
    assert run(during_call, "in_call") == ["in_call"] * len(during_call)
    assert run([RegistrationChanged("registering")]) == ["idle"]
    assert run([ended("local_hangup")]) == ["idle"]  # nothing to end


@pytest.mark.parametrize("start", ["calling", "ringing", "in_call"])
def test_a_registration_failure_is_not_a_call_failure(start):
    failed = RegistrationChanged("failed", None, "no answer from the PBX", retry_in=5.0)
    assert run([failed, RegistrationChanged("unregistered")], start) == [start, start]


def test_in_call_that_fails_does_not_stay_in_call():
    """A call that was up and ended with an error (a 2xx never ACKed) must leave in_call."""
    assert run([ended("error", 408)], "in_call") == ["error"]


def test_every_state_in_the_table_is_a_known_state():
    for (state, _event), new in TRANSITIONS.items():
        assert state in CALL_STATES
        assert new in CALL_STATES


def test_event_names_and_descriptions():
    assert [event_name(e) for e in (CALLING, RINGING, ANSWERED, ended("busy"), INCOMING)] == [
        "calling",
        "ringing",
        "answered",
        "ended",
        "incoming",
    ]
    assert event_name(RegistrationChanged("registered")) == "registered"
    assert describe(RINGING) == {"event": "ringing", "target": T, "code": 180}
    assert describe(ended("busy", 486)) == {
        "event": "ended",
        "target": T,
        "code": 486,
        "reason": "busy",
    }
    assert describe(INCOMING) == {"event": "incoming", "target": "sip:100@pbx.example"}
    assert describe(RegistrationChanged("failed", 403, "forbidden", retry_in=60.0)) == {
        "event": "failed",
        "code": 403,
        "reason": "forbidden",
        "retry_in": 60.0,
    }
    assert describe(RegistrationChanged("registered", 200, expires=300)) == {
        "event": "registered",
        "code": 200,
        "expires": 300,
    }


def test_describe_names_a_dtmf_digit_only_when_asked() -> None:
    """Hidden by default: keyed one by one into a log, the digits would spell the door code."""
    dtmf = DtmfReceived(1, "7", "rfc4733")
    assert describe(dtmf) == {"event": "dtmf", "method": "rfc4733"}
    assert describe(dtmf, show_digits=True) == {"event": "dtmf", "digit": "7", "method": "rfc4733"}


def test_intercom_ring_prints_no_digit_while_a_door_code_is_set() -> None:
    import io

    from intercom.cli import _Printer

    for as_json in (True, False):
        hidden, shown = io.StringIO(), io.StringIO()
        _Printer(as_json, hidden)(DtmfReceived(1, "7", "info"))
        _Printer(as_json, shown, show_digits=True)(DtmfReceived(1, "7", "info"))
        assert "dtmf" in hidden.getvalue() and "digit" not in hidden.getvalue()
        assert "digit" in shown.getvalue() and "7" in shown.getvalue()


# ------------------------------------------------------------------------------------------------
# Fed by real agents


DOOR = ("127.0.0.1", 5062)
PHONE = ("127.0.0.1", 5064)


def test_door_calls_a_phone_agent_and_both_tables_agree():
    net = Net()
    # Each agent's "proxy" is the other one: a call straight from door to phone.
    door = net.add(make_agent(5062, 5064))
    phone = net.add(make_agent(5064, 5062, allow_incoming=("u5062",), answer_after=3.0))
    handle = door.call(["u5064"], 0.0)
    door_sm, phone_sm = CallStateMachine(), CallStateMachine()
    door_states: list[str] = []
    phone_states: list[str] = []

    def pump(until: float) -> None:
        net.run(until)
        while net.events[DOOR]:
            door_states.append(door_sm.feed(net.events[DOOR].pop(0)))
        while net.events[PHONE]:
            phone_states.append(phone_sm.feed(net.events[PHONE].pop(0)))

    pump(1.0)
    assert door_states == ["calling", "ringing"]
    assert phone_states == ["ringing"]
    pump(3.0)
    assert door_states[-1] == "in_call"
    assert phone_states[-1] == "in_call"
    pump(20.0)
    assert net.sent_at(PHONE, "SIP/2.0 200") == [3.0]  # the ACK arrived: no retransmission
    door.hangup(handle, 20.0)
    pump(100.0)
    assert door_states == ["calling", "ringing", "in_call", "ended"]
    assert phone_states == ["ringing", "in_call", "ended"]
    assert door.active_calls() == [] and phone.active_calls() == []


def test_refused_credentials_show_as_error():
    net = Net()
    door = net.add(make_agent(5062, 5060, password="wrong", domain="pbx.example"))
    pbx = ScriptedPeer(net, ("127.0.0.1", 5060))
    challenge = [("Proxy-Authenticate", 'Digest realm="pbx", nonce="n", qop="auth"')]

    def refuse(peer, msg, src):
        if getattr(msg, "method", None) == "INVITE":
            peer.send(reply(msg, 407, to_tag="x", headers=challenge), src)

    pbx.script = refuse
    door.call(["100"], 0.0)
    net.settle()
    machine = CallStateMachine()
    states = [machine.feed(e) for e in net.events[DOOR]]
    assert states == ["calling", "error"]
    assert describe(net.events[DOOR][-1])["reason"] == "auth_failed"
