"""The doctor's plain words: failures mapped to causes, the FRITZ!Box hints, and the local checks
(sound card, GPIO) on files, tones and gpiozero's MockFactory. The real PBX, phone and broker
are in tests/integration/test_doctor.py."""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero import Button
from gpiozero.pins.mock import MockChargingPin, MockFactory

from intercom import doctor_call
from intercom.cli import build_parser
from intercom.config import Config, parse_config
from intercom.doctor import (
    Check,
    is_fritzbox,
    pbx_product,
    registration_failure,
    report,
    run,
)
from intercom.doctor_call import answered_by, call_failure
from intercom.doctor_checks import audio_checks, gpio_checks
from intercom.sip.message import SipResponse, parse_message


def _config(**sections: Any) -> Config:
    data: dict[str, Any] = {
        "sip": {"server": "192.0.2.1", "username": "620", "password": "pw"},
        "audio": {"input": "tone:1000", "output": "null"},
        **sections,
    }
    return parse_config(data, base_dir=Path.cwd(), env={})


def _reply(text: str) -> SipResponse:
    msg = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(msg, SipResponse)
    return msg


# Shaped like a FRITZ!Box's answer to OPTIONS (not a capture): the box names itself in
# User-Agent, not Server, and challenges the request like any other from a phone.
FRITZ_OPTIONS_REPLY = """\
SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.168.178.40:5060;rport=5060;branch=z9hG4bKdoctor1;received=192.168.178.40
From: <sip:620@fritz.box>;tag=doctor
To: <sip:fritz.box>;tag=4B3E1A9C2D8F7E61
Call-ID: doctor-1@pi-intercom
CSeq: 1 OPTIONS
WWW-Authenticate: Digest realm="fritz.box", nonce="2F7B2C1F0E6D5A49"
User-Agent: AVM FRITZ!Box 7590 154.07.57 (Jan 11 2024)
Content-Length: 0

"""

ASTERISK_OPTIONS_REPLY = """\
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.168.1.40:5060;rport=5060;branch=z9hG4bKdoctor1;received=192.168.1.40
From: <sip:620@192.168.1.1>;tag=doctor
To: <sip:192.168.1.1>;tag=as5d2f
Call-ID: doctor-1@pi-intercom
CSeq: 1 OPTIONS
Server: Asterisk PBX 20.5.0
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE
Content-Length: 0

"""


# -- the FRITZ!Box hint ------------------------------------------------------------------------


def test_a_fritzbox_is_known_by_its_options_reply() -> None:
    product = pbx_product(_reply(FRITZ_OPTIONS_REPLY))
    assert product == "AVM FRITZ!Box 7590 154.07.57 (Jan 11 2024)"
    assert is_fritzbox(product, "192.168.178.1")


def test_a_fritzbox_is_known_by_its_name() -> None:
    assert is_fritzbox("", "fritz.box")
    assert is_fritzbox("", "FRITZ.box")


def test_another_pbx_is_no_fritzbox() -> None:
    product = pbx_product(_reply(ASTERISK_OPTIONS_REPLY))
    assert product == "Asterisk PBX 20.5.0"
    assert not is_fritzbox(product, "192.168.1.1")


def test_a_refused_registration_on_a_fritzbox_says_where_to_look() -> None:
    fritz = is_fritzbox(pbx_product(_reply(FRITZ_OPTIONS_REPLY)), "192.168.178.1")
    detail, fix = registration_failure(_config(), 403, "forbidden", fritz=fritz)
    assert "wrong user name or password" in detail and "403" in detail
    assert "Telefonie > Telefoniegeräte > Neues Gerät" in fix
    assert "LAN/WLAN (IP-Telefon)" in fix
    assert "Benutzername" in fix and "not the internal number **62x" in fix
    assert "Anmeldung aus dem Internet erlauben" in fix and "outside" in fix


def test_the_fritzbox_hint_also_comes_with_no_answer() -> None:
    detail, fix = registration_failure(_config(), None, "no answer from the PBX", fritz=True)
    assert "no answer" in detail
    assert "sip.port" in fix and "firewall" in fix and "IP-Telefon" in fix


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (403, "wrong user name or password"),
        (401, "wrong user name or password"),  # re-challenged, the way Asterisk refuses
        (404, "knows no user '620'"),
        (None, "no answer to REGISTER"),
        (503, "refused with 503: Service Unavailable"),
    ],
)
def test_registration_failures_in_plain_words(code: int | None, words: str) -> None:
    detail, fix = registration_failure(_config(), code, "Service Unavailable")
    assert words in detail
    assert fix and "FRITZ" not in fix


# -- the test call -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "code", "words"),
    [
        ("not_found", 404, "extension 699 does not exist on the PBX (404)"),
        ("not_found", 484, "extension 699 does not exist on the PBX (484)"),
        ("busy", 486, "699 is busy (486)"),
        ("busy", 600, "699 is busy (600)"),
        ("unavailable", 480, "699 is not reachable: no phone is registered for it (480)"),
        ("unavailable", 408, "699 did not answer in time (408)"),
        ("unavailable", 503, "the PBX could not reach 699 (503)"),
        ("no_answer", None, "nobody answered 699 within call.ring_timeout (30 s)"),
        ("auth_failed", 403, "the PBX does not allow this door to call 699 (403)"),
        ("auth_failed", 407, "the PBX refused the door's password for the call (407)"),
        ("rejected", 603, "699 declined the call (603)"),
        ("error", 488, "699 accepts none of the door's codecs (488)"),
        ("timeout", None, "the PBX never answered the door's INVITE"),
        ("error", 500, "the call failed: error (500)"),
    ],
)
def test_call_failures_in_plain_words(reason: str, code: int | None, words: str) -> None:
    detail, fix = call_failure("699", reason, code, 30)
    assert detail == words
    assert fix


def test_who_answered_comes_from_the_200_ok() -> None:
    ok = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n"
        b"From: <sip:door@127.0.0.1>;tag=a\r\nTo: <sip:621@127.0.0.1>;tag=b\r\n"
        b"Call-ID: c@pi-intercom\r\nCSeq: 2 INVITE\r\n"
        b"Contact: <sip:621-0x55@192.168.1.50:5060;transport=udp>\r\n"
        b"User-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n"
    )
    ringing = ok.replace(b"200 OK", b"180 Ringing")
    wire = [("sent", 0.0, b"INVITE ..."), ("received", 0.1, ringing), ("received", 0.2, ok)]
    assert answered_by(wire) == "621-0x55@192.168.1.50 (Yealink SIP-T46S 66.86.0.15)"
    assert answered_by(wire[:2]) == ""


def test_no_rtp_from_the_phone_is_one_way_audio() -> None:
    from intercom.media.session import MediaStats

    stats = MediaStats(codec="PCMA", sent=120, received=0, started_at=1.0)
    heard = doctor_call._Listened(
        level_out=-10.0, stats=stats, remote=("192.168.1.50", 4000), seconds=10.0
    )
    sent, got = doctor_call._audio(heard, "tone:1000:-10")
    assert sent.ok and "1000 Hz test tone" in sent.detail and "120 packets of PCMA" in sent.detail
    assert (
        not got.ok and got.detail == "one-way audio: no RTP from the phone, nothing arrived in 10 s"
    )
    assert got.fix is not None and "media.rtp_port_min" in got.fix and "NAT" in got.fix


def test_silent_rtp_is_reported_but_not_failed() -> None:
    from intercom.media.session import MediaStats

    stats = MediaStats(codec="PCMU", sent=100, received=100, started_at=1.0)
    heard = doctor_call._Listened(level_in=-110.0, level_out=-10.0, stats=stats)
    _sent, got = doctor_call._audio(heard, None)
    assert got.ok and "silent" in got.detail


def test_dtmf_not_detected_names_the_settings() -> None:
    check = doctor_call._dtmf(doctor_call._Listened(), 10)
    assert not check.ok and "DTMF: not detected" in check.line()
    assert check.fix is not None and "RFC 2833/4733" in check.fix and "SIP INFO" in check.fix
    both = doctor_call._Listened(digits=[("1", "rfc4733"), ("2", "info")])
    assert doctor_call._dtmf(both, 10, hide=False).detail == "received 12 (RFC 4733, SIP INFO)"
    assert doctor_call._dtmf(doctor_call._Listened(), 0).ok


def test_dtmf_check_does_not_name_the_keys_while_a_door_code_is_set() -> None:
    both = doctor_call._Listened(digits=[("1", "rfc4733"), ("2", "info")])
    assert doctor_call._dtmf(both, 10, hide=True).detail == "received 2 keys (RFC 4733, SIP INFO)"
    one = doctor_call._Listened(digits=[("7", "rfc4733")])
    assert doctor_call._dtmf(one, 10).detail == "received 1 key (RFC 4733)"  # hidden by default


# -- the sound card ----------------------------------------------------------------------------


def _wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def test_sound_checks_on_a_tone_and_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    mic, speaker = audio_checks(_config(audio={"input": "tone:440", "output": f"file:{out}"}))
    assert mic.ok and "peak -20 dBFS" in mic.detail
    assert speaker.ok and "beep" in speaker.detail
    with wave.open(str(out)) as w:
        assert w.getnframes() == 8000  # the 0.5 s beep at 16 kHz


def test_a_silent_microphone_file_fails(tmp_path: Path) -> None:
    silent = _wav(tmp_path / "silent.wav", np.zeros(16000, dtype=np.int16))
    mic, _speaker = audio_checks(_config(audio={"input": f"file:{silent}", "output": "null"}))
    assert not mic.ok and "silent" in mic.detail


def test_a_null_microphone_and_speaker_are_a_choice() -> None:
    mic, speaker = audio_checks(_config(audio={"input": "null", "output": "null"}))
    assert mic.ok and "by choice" in mic.detail
    assert speaker.ok and "by choice" in speaker.detail


def test_a_missing_file_is_named() -> None:
    mic, _ = audio_checks(_config(audio={"input": "file:/nonexistent/x.wav", "output": "null"}))
    assert not mic.ok and "/nonexistent/x.wav" in mic.detail and mic.fix


# -- GPIO ----------------------------------------------------------------------------------------


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


GPIO = {"doorbell": {"pin": 17}, "door": {"pin": 23}, "chime": {"pin": 27}, "led": {"pin": 22}}


def test_no_gpio_configured() -> None:
    [check] = asyncio.run(gpio_checks(_config()))
    assert check.ok and check.detail.startswith("no GPIO configured")


def test_every_pin_is_claimed_and_released_and_the_relay_stays_off(factory: MockFactory) -> None:
    checks = asyncio.run(gpio_checks(_config(**GPIO), pin_factory=factory))
    assert [c.name for c in checks] == ["GPIO", "doorbell button", "door relay", "chime", "LED"]
    assert all(c.ok for c in checks), checks
    assert "MockFactory" in checks[0].detail and "simulated" in checks[0].detail
    assert checks[2].detail == "GPIO 23 claimed (active high), left off; not pulsed"
    relay = factory.pin(23)
    assert [s.state for s in relay.states] in ([False], [0])  # never switched on
    # Released: the daemon can claim every pin again.
    Button(17, pin_factory=factory).close()


def test_a_button_that_reads_pressed_at_rest() -> None:
    charging = MockFactory(pin_class=MockChargingPin)  # floats high once it is an input
    try:
        config = _config(doorbell={"pin": 17, "pull_up": False})
        _gpio, button = asyncio.run(gpio_checks(config, pin_factory=charging))
    finally:
        charging.close()
    assert not button.ok and "reads pressed with nothing pressed" in button.detail
    assert button.fix is not None and "pull_up" in button.fix


def test_a_pin_held_by_another_program(factory: MockFactory) -> None:
    held = Button(23, pin_factory=factory)
    try:
        checks = asyncio.run(gpio_checks(_config(**GPIO), pin_factory=factory))
    finally:
        held.close()
    by_name = {c.name: c for c in checks}
    relay = by_name["door relay"]
    assert not relay.ok and "GPIO 23" in relay.detail
    assert relay.fix is not None and "systemctl stop pi-intercom" in relay.fix
    assert by_name["doorbell button"].ok and by_name["chime"].ok


# -- run, report, CLI --------------------------------------------------------------------------


def test_a_broken_config_is_the_only_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sip:\n  server: 127.0.0.1\n  port: nine\n")
    [check] = asyncio.run(run(str(path), call="621"))
    assert check.name == "config" and not check.ok and check.fix


def test_report_as_text_and_json() -> None:
    checks = [Check("config", True, "x.yaml is valid"), Check("MQTT", False, "down", "start it")]
    text = report(checks, as_json=False)
    assert text == "[ok  ] config: x.yaml is valid\n[FAIL] MQTT: down\n       fix: start it"
    data = json.loads(report(checks, as_json=True))
    assert data["ok"] is False and data["checks"][1]["fix"] == "start it"


def test_doctor_options() -> None:
    args = build_parser().parse_args(["doctor", "-c", "x.yaml", "--call", "**610", "--mic"])
    assert (args.call, args.dtmf_wait, args.mic, args.json) == ("**610", 10.0, True, False)
    args = build_parser().parse_args(["doctor", "-c", "x.yaml", "--dtmf-wait", "0"])
    assert (args.call, args.dtmf_wait) == (None, 0.0)
