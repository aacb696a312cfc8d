"""Registration against a scripted registrar, in virtual time.

The registrar is played by the test: it reads each REGISTER the door sends and answers by hand
(401/407 challenges, 423, 403, silence...). The digest itself is computed by the agent; these
tests check where it goes and that the nonce count climbs, not the hash.
"""

from __future__ import annotations

import pytest

from intercom.sip.address import NameAddr, Via
from intercom.sip.events import RegistrationChanged
from intercom.sip.message import SipRequest
from intercom.sip.registration import BACKOFF_CAP, RegState
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply

DOOR = ("127.0.0.1", 5062)
PBX = ("127.0.0.1", 5060)
CHALLENGE_QOP = 'Digest realm="pbx", nonce="n1", qop="auth", algorithm=MD5, opaque="op"'
CHALLENGE_PLAIN = 'Digest realm="pbx", nonce="n1", algorithm=MD5'


def setup(**kw):
    kw.setdefault("domain", "pbx.example")
    kw.setdefault("password", "secret")
    net = Net()
    door = net.add(make_agent(5062, 5060, **kw))
    pbx = ScriptedPeer(net, PBX)
    return net, door, pbx


def take_register(pbx: ScriptedPeer) -> SipRequest:
    req = pbx.take_one("REGISTER")
    assert isinstance(req, SipRequest)
    return req


def ok(req: SipRequest, expires: int = 300, **kw) -> bytes:
    contact = req.headers.get("Contact")
    headers = [("Contact", f"{contact};expires={expires}")] if contact else []
    return reply(req, 200, to_tag="reg", headers=headers, **kw)


def reg_events(net: Net) -> list[RegistrationChanged]:
    return [e for e in net.events[DOOR] if isinstance(e, RegistrationChanged)]


def states(net: Net) -> list[str]:
    return [e.state for e in reg_events(net)]


def auth_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    out = {}
    for part in value[len("Digest ") :].split(","):
        name, _, v = part.strip().partition("=")
        out[name] = v.strip('"')
    return out


def branch(req: SipRequest) -> str:
    b = Via.parse(req.vias[0]).branch
    assert b is not None
    return b


def register_ok(net: Net, door, pbx: ScriptedPeer, expires: int = 300) -> SipRequest:
    door.register(net.now)
    net.settle()
    req = take_register(pbx)
    pbx.send(ok(req, expires), DOOR)
    assert door.registered
    return req


# ------------------------------------------------------------------------------------------------
# The REGISTER itself


def test_register_request_shape():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    req = take_register(pbx)
    assert req.uri == "sip:pbx.example"  # no user part: FRITZ!Box ignores the others
    assert req.to == "<sip:u5062@pbx.example>"
    assert NameAddr.parse(req.from_).tag
    assert NameAddr.parse(req.from_).uri.user == "u5062"
    assert req.headers.get("CSeq") == "1 REGISTER"
    assert req.headers.get("Expires") == "300"
    assert req.headers.get("Max-Forwards") == "70"
    assert req.headers.get_all("Contact") == ["<sip:u5062@127.0.0.1:5062>"]  # nothing exotic
    assert "+sip.ice" not in req.to_bytes().decode()
    assert "Authorization" not in req.headers
    via = Via.parse(req.vias[0])
    assert (via.transport, via.host, via.port) == ("UDP", "127.0.0.1", 5062)
    assert "rport" in via.params and via.branch.startswith("z9hG4bK")
    assert states(net) == ["registering"]
    assert not door.registered


def test_200_registers_once_and_says_so_once():
    net, door, pbx = setup()
    register_ok(net, door, pbx, expires=300)
    assert [(e.state, e.code, e.expires) for e in reg_events(net)] == [
        ("registering", None, None),
        ("registered", 200, 300),
    ]
    net.run(150.0)
    refresh = take_register(pbx)
    pbx.send(ok(refresh, 300), DOOR)
    assert states(net) == ["registering", "registered"]  # a refresh is not news


# ------------------------------------------------------------------------------------------------
# Digest challenges


def test_401_with_qop_is_answered_on_the_same_call_id_with_cseq_plus_one():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    first = take_register(pbx)
    pbx.send(reply(first, 401, to_tag="r1", headers=[("WWW-Authenticate", CHALLENGE_QOP)]), DOOR)
    second = take_register(pbx)
    assert second.call_id == first.call_id
    assert NameAddr.parse(second.from_).tag == NameAddr.parse(first.from_).tag
    assert second.headers.get("CSeq") == "2 REGISTER"
    assert branch(second) != branch(first)
    assert second.uri == "sip:pbx.example"
    assert "Proxy-Authorization" not in second.headers
    params = auth_params(second.headers.get("Authorization"))
    assert params["username"] == "u5062"
    assert params["realm"] == "pbx"
    assert params["nonce"] == "n1"
    assert params["uri"] == "sip:pbx.example"
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["opaque"] == "op"
    assert len(params["response"]) == 32
    assert net.sent_at(DOOR, "REGISTER") == [0.0, 0.0]

    pbx.send(ok(second, 120), DOOR)
    assert door.registered
    assert states(net) == ["registering", "registered"]

    # The refresh reuses the challenge: nonce count 2, same cnonce, no round trip.
    net.run(60.0)
    third = take_register(pbx)
    assert net.sent_at(DOOR, "REGISTER")[-1] == 60.0
    assert third.headers.get("CSeq") == "3 REGISTER"
    third_params = auth_params(third.headers.get("Authorization"))
    assert third_params["nc"] == "00000002"
    assert third_params["cnonce"] == params["cnonce"]
    assert third_params["response"] != params["response"]


def test_401_without_qop_gets_a_plain_digest_answer():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    first = take_register(pbx)
    pbx.send(reply(first, 401, to_tag="r", headers=[("WWW-Authenticate", CHALLENGE_PLAIN)]), DOOR)
    params = auth_params(take_register(pbx).headers.get("Authorization"))
    assert params["uri"] == "sip:pbx.example"
    assert params["algorithm"] == "MD5"
    assert "qop" not in params and "nc" not in params and "cnonce" not in params


def test_407_to_register_is_answered_with_proxy_authorization():
    net, door, pbx = setup(auth_username="door-auth")
    door.register(0.0)
    net.settle()
    first = take_register(pbx)
    pbx.send(reply(first, 407, to_tag="r", headers=[("Proxy-Authenticate", CHALLENGE_QOP)]), DOOR)
    second = take_register(pbx)
    assert "Authorization" not in second.headers
    params = auth_params(second.headers.get("Proxy-Authorization"))
    assert params["username"] == "door-auth"
    assert params["uri"] == "sip:pbx.example"
    assert second.headers.get("CSeq") == "2 REGISTER"
    pbx.send(ok(second), DOOR)
    assert door.registered


def test_second_401_after_credentials_fails_with_backoff_and_no_immediate_retry():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    challenge = [("WWW-Authenticate", CHALLENGE_QOP)]
    pbx.send(reply(take_register(pbx), 401, to_tag="r", headers=challenge), DOOR)
    pbx.send(reply(take_register(pbx), 401, to_tag="r", headers=challenge), DOOR)
    failed = reg_events(net)[-1]
    assert (failed.state, failed.code, failed.retry_in) == ("failed", 401, 30.0)
    assert "password" in failed.reason
    assert door.registration.state is RegState.BACKOFF
    net.run(29.9)
    assert pbx.take() == []  # no hammering: fail2ban would ban the door
    net.run(30.0)
    retry = take_register(pbx)
    assert net.sent_at(DOOR, "REGISTER") == [0.0, 0.0, 30.0]
    assert "Authorization" not in retry.headers  # a fresh start
    assert states(net) == ["registering", "failed", "registering"]


def test_stale_nonce_is_retried_without_counting_as_a_failure():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(
        reply(take_register(pbx), 401, to_tag="r", headers=[("WWW-Authenticate", CHALLENGE_QOP)]),
        DOOR,
    )
    answered = take_register(pbx)
    stale = 'Digest realm="pbx", nonce="n2", qop="auth", algorithm=MD5, stale=true'
    pbx.send(reply(answered, 401, to_tag="r", headers=[("WWW-Authenticate", stale)]), DOOR)
    again = take_register(pbx)
    params = auth_params(again.headers.get("Authorization"))
    assert (params["nonce"], params["nc"]) == ("n2", "00000001")
    assert again.headers.get("CSeq") == "3 REGISTER"
    assert "failed" not in states(net)
    # Still one real failure allowed: a plain 401 now means the password is wrong.
    pbx.send(reply(again, 401, to_tag="r", headers=[("WWW-Authenticate", CHALLENGE_QOP)]), DOOR)
    assert states(net) == ["registering", "failed"]


def test_stale_nonce_does_not_use_up_the_one_credential_retry():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    stale = 'Digest realm="pbx", nonce="n2", qop="auth", algorithm=MD5, stale=true'
    pbx.send(
        reply(take_register(pbx), 401, to_tag="r", headers=[("WWW-Authenticate", stale)]), DOOR
    )
    answered = take_register(pbx)
    # The PBX forgot the nonce (a restart): a plain challenge still gets one answer.
    pbx.send(reply(answered, 401, to_tag="r", headers=[("WWW-Authenticate", CHALLENGE_QOP)]), DOOR)
    again = take_register(pbx)
    assert auth_params(again.headers.get("Authorization"))["nonce"] == "n1"
    pbx.send(ok(again), DOOR)
    assert states(net) == ["registering", "registered"]


def test_stale_nonce_then_200_registers():
    net, door, pbx = setup()
    register_ok(net, door, pbx, expires=60)
    pbx.take()
    net.run(30.0)
    refresh = take_register(pbx)
    stale = 'Digest realm="pbx", nonce="n9", algorithm=MD5, stale=true'
    pbx.send(reply(refresh, 401, to_tag="r", headers=[("WWW-Authenticate", stale)]), DOOR)
    answered = take_register(pbx)
    assert auth_params(answered.headers.get("Authorization"))["nonce"] == "n9"
    pbx.send(ok(answered, 60), DOOR)
    assert door.registered
    assert states(net) == ["registering", "registered"]


def test_challenge_without_a_password_fails():
    net, door, pbx = setup(password=None)
    door.register(0.0)
    net.settle()
    pbx.send(
        reply(take_register(pbx), 401, to_tag="r", headers=[("WWW-Authenticate", CHALLENGE_QOP)]),
        DOOR,
    )
    failed = reg_events(net)[-1]
    assert (failed.state, failed.code) == ("failed", 401)
    assert "password" in failed.reason
    assert pbx.take() == []


def test_unusable_challenge_fails_without_resending():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(reply(take_register(pbx), 401, to_tag="r"), DOOR)  # no WWW-Authenticate at all
    assert reg_events(net)[-1].state == "failed"
    assert pbx.take() == []


# ------------------------------------------------------------------------------------------------
# Expiry: 423 and refresh


def test_423_min_expires_is_obeyed():
    net, door, pbx = setup(expires=60)
    door.register(0.0)
    net.settle()
    first = take_register(pbx)
    assert first.headers.get("Expires") == "60"
    pbx.send(reply(first, 423, to_tag="r", headers=[("Min-Expires", "600")]), DOOR)
    second = take_register(pbx)
    assert second.headers.get("Expires") == "600"
    assert second.headers.get("CSeq") == "2 REGISTER"
    assert second.call_id == first.call_id
    pbx.send(reply(second, 200, to_tag="r", headers=[("Expires", "600")]), DOOR)
    assert [(e.state, e.expires) for e in reg_events(net)] == [
        ("registering", None),
        ("registered", 600),
    ]
    net.run(300.0)
    refresh = take_register(pbx)
    assert net.sent_at(DOOR, "REGISTER")[-1] == 300.0
    assert refresh.headers.get("Expires") == "600"  # the larger value sticks


def test_423_without_min_expires_fails():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(reply(take_register(pbx), 423, to_tag="r"), DOOR)
    failed = reg_events(net)[-1]
    assert (failed.state, failed.code, failed.retry_in) == ("failed", 423, 30.0)


@pytest.mark.parametrize(
    ("headers", "refresh_at"),
    [
        # The Contact's expires parameter wins over the Expires header.
        ([("Contact", "<sip:u5062@127.0.0.1:5062>;expires=120"), ("Expires", "3600")], 60.0),
        # Another device's binding is not ours.
        (
            [
                ("Contact", "<sip:u5062@192.0.2.99:5060>;expires=3600"),
                ("Contact", "<sip:u5062@127.0.0.1:5062>;expires=90"),
            ],
            45.0,
        ),
        ([("Expires", "1800")], 900.0),
        ([], 150.0),  # nothing said: what we asked for
        ([("Expires", "4")], 5.0),  # never sooner than MIN_REFRESH
    ],
)
def test_refresh_at_half_the_granted_expiry(headers, refresh_at):
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(reply(take_register(pbx), 200, to_tag="r", headers=headers), DOOR)
    net.run(refresh_at - 0.01)
    assert pbx.take() == []
    net.run(refresh_at)
    refresh = take_register(pbx)
    assert refresh.headers.get("CSeq") == "2 REGISTER"
    assert refresh.headers.get("Expires") == "300"


def test_registered_event_carries_the_granted_expiry():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(
        reply(
            take_register(pbx),
            200,
            to_tag="r",
            headers=[("Contact", "<sip:u5062@127.0.0.1:5062>;expires=77")],
        ),
        DOOR,
    )
    assert reg_events(net)[-1].expires == 77
    assert door.registration.granted == 77


# ------------------------------------------------------------------------------------------------
# Failures and back-off


def test_403_backs_off_exponentially_and_caps():
    net, door, pbx = setup()

    def forbid(peer, msg, src):
        peer.send(reply(msg, 403, to_tag="r"), src)

    pbx.script = forbid
    door.register(0.0)
    net.run(4000.0)
    failed = [e for e in reg_events(net) if e.state == "failed"]
    delays = [e.retry_in for e in failed]
    assert delays[:7] == [30.0, 60.0, 120.0, 240.0, 480.0, BACKOFF_CAP, BACKOFF_CAP]
    assert all(e.code == 403 for e in failed)
    assert net.sent_at(DOOR, "REGISTER")[:7] == [0.0, 30.0, 90.0, 210.0, 450.0, 930.0, 1830.0]
    assert states(net)[:4] == ["registering", "failed", "registering", "failed"]


def test_5xx_backs_off_like_a_timeout():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(reply(take_register(pbx), 503, to_tag="r"), DOOR)
    failed = reg_events(net)[-1]
    assert (failed.state, failed.code, failed.retry_in) == ("failed", 503, 5.0)


def test_no_answer_fails_after_64_t1_then_retries_until_the_pbx_returns():
    down = True
    net = Net(drop=lambda src, dst, data: down)
    door = net.add(make_agent(5062, 5060, domain="pbx.example"))

    def registrar(peer, msg, src):
        if isinstance(msg, SipRequest):
            peer.send(ok(msg, 300), src)

    ScriptedPeer(net, PBX, registrar)
    door.register(0.0)
    net.run(31.9)
    assert net.sent_at(DOOR, "REGISTER") == [
        0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5
    ]  # fmt: skip
    assert states(net) == ["registering"]
    net.run(32.0)
    failed = reg_events(net)[-1]
    assert (failed.state, failed.code, failed.retry_in) == ("failed", None, 5.0)
    assert "no answer" in failed.reason
    net.run(36.9)
    assert net.sent_at(DOOR, "REGISTER")[-1] == 31.5
    net.run(37.0)
    assert net.sent_at(DOOR, "REGISTER")[-1] == 37.0  # first retry after 5 s
    net.run(69.0)
    assert reg_events(net)[-1].retry_in == 10.0  # doubled
    net.run(79.0)
    assert net.sent_at(DOOR, "REGISTER")[-1] == 79.0
    assert not door.registered

    # The PBX is back: the next attempt registers.
    down = False
    net.run(79.0 + 32.0 + 20.0)
    assert door.registered
    assert states(net)[-2:] == ["registering", "registered"]
    assert reg_events(net)[-1].expires == 300
    assert door.registration.failures == 0


def test_pbx_restart_after_registration_is_recovered():
    down = False
    net = Net(drop=lambda src, dst, data: down)
    door = net.add(make_agent(5062, 5060, domain="pbx.example", expires=60))

    def registrar(peer, msg, src):
        peer.send(ok(msg, 60), src)

    ScriptedPeer(net, PBX, registrar)
    door.register(0.0)
    net.settle()
    assert door.registered
    down = True
    net.run(30.0 + 32.0)  # the refresh at 30 s is never answered
    assert states(net)[-1] == "failed"
    down = False
    net.run(30.0 + 32.0 + 5.0)
    assert door.registered
    assert states(net)[-3:] == ["failed", "registering", "registered"]


# ------------------------------------------------------------------------------------------------
# NAT: the address the registrar saw


def test_via_received_and_rport_update_the_contact_and_remove_the_old_one():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    first = take_register(pbx)
    nat_via = first.vias[0].replace(";rport;", ";rport=40000;received=203.0.113.7;")
    pbx.send(ok(first, 300, via=nat_via), DOOR)
    second = take_register(pbx)
    assert second.headers.get_all("Contact") == [
        "<sip:u5062@203.0.113.7:40000>",
        "<sip:u5062@127.0.0.1:5062>;expires=0",
    ]
    assert second.headers.get("CSeq") == "2 REGISTER"
    assert second.headers.get("Expires") == "300"
    assert not door.registered
    pbx.send(
        ok(
            second, 300, via=second.vias[0].replace(";rport;", ";rport=40000;received=203.0.113.7;")
        ),
        DOOR,
    )
    assert door.registered
    assert pbx.take() == []  # settled: no third REGISTER
    assert states(net) == ["registering", "registered"]
    net.run(150.0)
    refresh = take_register(pbx)
    assert refresh.headers.get_all("Contact") == ["<sip:u5062@203.0.113.7:40000>"]
    # Calls use the public address too.
    door.call(["100"], net.now)
    net.settle()
    invite = pbx.take_requests("INVITE")[0]
    assert invite.headers.get("Contact") == "<sip:u5062@203.0.113.7:40000>"


def test_via_received_equal_to_the_local_address_changes_nothing():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    first = take_register(pbx)
    same = first.vias[0].replace(";rport;", ";rport=5062;received=127.0.0.1;")
    pbx.send(ok(first, 300, via=same), DOOR)
    assert door.registered
    assert pbx.take() == []


# ------------------------------------------------------------------------------------------------
# Un-registering


def test_unregister_sends_expires_0_and_ends_unregistered():
    net, door, pbx = setup()
    register_ok(net, door, pbx)
    door.unregister(10.0)
    net.now = 10.0
    net.settle()
    bye = take_register(pbx)
    assert bye.headers.get("Expires") == "0"
    assert bye.headers.get("CSeq") == "2 REGISTER"
    assert bye.headers.get_all("Contact") == ["<sip:u5062@127.0.0.1:5062>"]
    pbx.send(ok(bye, 0), DOOR)
    assert reg_events(net)[-1].state == "unregistered"
    assert door.registration.state is RegState.UNREGISTERED
    assert not door.registered
    net.run(10000.0)
    assert pbx.take() == []  # no refresh, no retry


def test_unregister_answered_with_a_challenge_is_authenticated_once():
    net, door, pbx = setup()
    register_ok(net, door, pbx)
    door.unregister(1.0)
    net.settle()
    first = take_register(pbx)
    pbx.send(reply(first, 401, to_tag="r", headers=[("WWW-Authenticate", CHALLENGE_QOP)]), DOOR)
    second = take_register(pbx)
    assert second.headers.get("Expires") == "0"
    assert auth_params(second.headers.get("Authorization"))["uri"] == "sip:pbx.example"
    pbx.send(ok(second, 0), DOOR)
    assert states(net) == ["registering", "registered", "unregistered"]


def test_unregister_without_answer_still_ends_unregistered():
    net, door, pbx = setup()
    register_ok(net, door, pbx)
    net.drop = lambda src, dst, data: True
    door.unregister(0.0)
    net.run(32.0)
    assert reg_events(net)[-1].state == "unregistered"
    assert "no answer" in reg_events(net)[-1].reason


def test_unregister_during_backoff_stops_the_retries():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(reply(take_register(pbx), 403, to_tag="r"), DOOR)
    door.unregister(1.0)
    net.settle()
    assert states(net) == ["registering", "failed", "unregistered"]
    net.run(5000.0)
    assert pbx.take() == []


def test_unregister_while_the_first_register_is_in_flight():
    """The late 200 to the first REGISTER must not be taken for the answer to the un-REGISTER."""
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    first = take_register(pbx)
    door.unregister(0.1)
    net.settle()
    un = take_register(pbx)
    assert un.headers.get("Expires") == "0"
    pbx.send(ok(first, 300), DOOR)
    assert states(net) == ["registering"]  # still waiting for the un-REGISTER's answer
    pbx.send(ok(un, 0), DOOR)
    assert states(net) == ["registering", "unregistered"]
    assert door.registration.state is RegState.UNREGISTERED
    net.run(1000.0)
    assert pbx.take() == []


def test_unregister_twice_sends_one_unregister():
    net, door, pbx = setup()
    register_ok(net, door, pbx)
    door.unregister(1.0)
    door.unregister(1.0)
    net.settle()
    un = take_register(pbx)
    pbx.send(ok(un, 0), DOOR)
    assert states(net) == ["registering", "registered", "unregistered"]


def test_register_again_after_unregister_says_registered_again():
    net, door, pbx = setup()
    register_ok(net, door, pbx)
    door.unregister(1.0)
    net.settle()
    pbx.send(ok(take_register(pbx), 0), DOOR)
    register_ok(net, door, pbx)
    assert states(net) == ["registering", "registered", "unregistered", "registering", "registered"]


def test_register_during_backoff_replaces_the_pending_retry():
    net, door, pbx = setup()
    door.register(0.0)
    net.settle()
    pbx.send(reply(take_register(pbx), 403, to_tag="r"), DOOR)
    net.run(10.0)
    door.register(10.0)
    net.settle()
    pbx.send(ok(take_register(pbx), 300), DOOR)
    assert door.registered
    net.run(100.0)
    # Only the refresh at 10 + 150 is due; the back-off retry at 30 s was dropped.
    assert net.sent_at(DOOR, "REGISTER") == [0.0, 10.0]
