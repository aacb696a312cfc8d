"""Smoke tests of the test peers themselves: the PBX, baresip and linphonec behave as the
acceptance tests of the intercom assume (401/407 challenges, 404/480/486, CANCEL, restart)."""

from __future__ import annotations

import itertools
import math
import re
import struct
import time
import wave
from pathlib import Path

import pytest

from tests.peers.baresip import Baresip
from tests.peers.fixtures import HandsetFactory, LinphoneFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers


def dominant_hz(path: Path) -> float:
    """Estimate the frequency of a mono 16-bit WAV from its zero crossings (enough for a sine)."""
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    samples = struct.unpack(f"<{len(raw) // 2}h", raw[: len(raw) // 2 * 2])
    if len(samples) < rate // 4:
        return 0.0
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


def challenge_header(log: str, code: int) -> str:
    """The authentication header of the first `code` (401 or 407) in a baresip SIP trace."""
    name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    match = re.search(rf"SIP/2.0 {code} .*?^{name}: (.*?)$", log, flags=re.S | re.M)
    assert match, f"no {code} with {name} in the trace"
    return match.group(1)


def test_register_through_401(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621")

    assert kamailio.registered("621")
    assert not kamailio.registered("620")
    assert kamailio.log_lines(r"PBX: 401 challenge REGISTER sip:621@")
    assert kamailio.log_lines(r"PBX: REGISTER ok sip:621@")
    assert 'qop="auth"' in challenge_header(phone.log_text(), 401)


def test_register_without_qop(kamailio_noqop: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621", pbx=kamailio_noqop)

    assert kamailio_noqop.registered("621")
    header = challenge_header(phone.log_text(), 401)
    assert header.startswith("Digest ") and "qop" not in header


def test_wrong_password_gets_403(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("622", password="not-the-password", wait=False)

    deadline = time.monotonic() + 5
    while phone.registration_status() != "ERR" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert phone.registration_status() == "ERR"
    assert not kamailio.registered("622")
    assert kamailio.log_lines(r"PBX: 403 REGISTER wrong password for 622")
    assert re.search(r"^SIP/2.0 403 Forbidden", phone.log_text(), flags=re.M)


def test_call_through_407_with_audio_and_dtmf(kamailio: Kamailio, handset: HandsetFactory) -> None:
    caller = handset("620", tone_hz=700)
    callee = handset("621", tone_hz=1200)

    caller.dial(kamailio.uri("621"))
    incoming = callee.wait_event("CALL_INCOMING")
    established_out = caller.wait_event("CALL_ESTABLISHED")
    established_in = callee.wait_event("CALL_ESTABLISHED")
    assert incoming["peeruri"] == f"sip:620@{kamailio.hostport}"
    assert established_out["id"] == established_in["id"]
    assert kamailio.log_lines(r"PBX: 407 challenge INVITE sip:621@")
    assert kamailio.log_lines(r"PBX: relay INVITE to 621")

    caller.send_dtmf("5")
    time.sleep(0.8)
    caller.hangup()
    closed = callee.wait_event("CALL_CLOSED")
    caller.wait_event("CALL_CLOSED")

    assert closed["id"] == established_in["id"]
    assert callee.dtmf_received() == "5"
    heard = [p for p in callee.recordings() if p.name.endswith("-dec.wav")]
    assert heard, "the callee recorded nothing"
    assert dominant_hz(heard[-1]) == pytest.approx(700, rel=0.05)
    assert kamailio.log_lines(r"PBX: in-dialog BYE")


def test_unknown_user_404_and_unregistered_user_480(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    caller = handset("620")

    caller.dial(kamailio.uri("999"))
    assert caller.wait_event("CALL_CLOSED")["param"].startswith("404")
    caller.dial(kamailio.uri("622"))
    assert caller.wait_event("CALL_CLOSED")["param"].startswith("480")
    assert kamailio.log_lines(r"PBX: 404 INVITE to unknown user 999")
    assert kamailio.log_lines(r"PBX: 480 INVITE to unregistered 622")


def test_busy_handset_answers_486(kamailio: Kamailio, handset: HandsetFactory) -> None:
    caller = handset("620")
    busy = handset("621", answer="busy")

    caller.dial(kamailio.uri("621"))
    closed = caller.wait_event("CALL_CLOSED")
    assert closed["param"].startswith("486")
    assert busy.wait_event("CALL_INCOMING")
    assert not busy.find_events("CALL_ESTABLISHED")
    (call,) = busy.calls()
    assert call.rejected and not call.cancelled
    assert kamailio.log_lines(r"PBX: reply 486 ")


def test_cancel_reaches_ringing_handset(kamailio: Kamailio, handset: HandsetFactory) -> None:
    caller = handset("620")
    ringing = handset("621", answer="manual")

    caller.dial(kamailio.uri("621"))
    ringing.wait_event("CALL_INCOMING")
    caller.wait_event("CALL_RINGING")
    caller.hangup()

    call = ringing.wait_cancelled()
    assert call.peeruri == f"sip:620@{kamailio.hostport}"
    assert not call.rejected and not call.established
    assert kamailio.log_lines(r"PBX: reply 487 ")


def test_pbx_restart_forgets_registrations(kamailio: Kamailio, handset: HandsetFactory) -> None:
    handset("621")
    port = kamailio.port

    kamailio.restart()

    assert kamailio.port == port
    assert kamailio.ping()
    assert not kamailio.registered("621")


def test_linphonec_answers_a_call(
    kamailio: Kamailio, handset: HandsetFactory, linphone_handset: LinphoneFactory
) -> None:
    callee = linphone_handset("622")
    caller: Baresip = handset("620", tone_hz=900)

    contacts = kamailio.contacts("622")
    assert contacts and all(";gr" not in c for c in contacts)  # no GRUU, a port in the contact

    caller.dial(kamailio.uri("622"))
    incoming = callee.wait_incoming()
    callee.wait_established()
    caller.wait_event("CALL_ESTABLISHED")
    assert incoming.fields["peer"] == f"sip:620@{kamailio.hostport}"

    time.sleep(0.5)
    caller.hangup()
    callee.wait_ended()
    heard = [p for p in caller.recordings() if p.name.endswith("-dec.wav")]
    assert heard and math.isclose(dominant_hz(heard[-1]), 440, rel_tol=0.05)
