"""`intercom doctor` against the real Kamailio, baresip and mosquitto: all pass, then one fault at
a time, each named by its cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.peers.baresip import Baresip
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio
from tests.peers.ports import free_udp_tcp_port

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, pbx: Kamailio, broker: Any, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "sip": {
            "server": pbx.host,
            "port": pbx.port,
            "username": "door",
            "password": "doorpass",
            "local_port": 0,
        },
        "audio": {"input": "tone:1000", "output": "null"},
        "mqtt": {"host": broker.host, "port": broker.port},
    }
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "intercom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "intercom", "doctor", "-c", str(path), "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the doctor did not finish:\n{stderr}") from None
    report = json.loads(stdout)
    assert (proc.returncode == 0) == report["ok"], stderr
    return {c["name"]: c for c in report["checks"]}


def _doctor(
    tmp_path: Path,
    pbx: Kamailio,
    broker: Any,
    *extra: str,
    env: dict[str, str] | None = None,
    **changes: Any,
) -> dict[str, Any]:
    return _finish(_start(_write(tmp_path, pbx, broker, **changes), *extra, env=env))


def test_all_checks_pass(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    checks = _doctor(tmp_path, kamailio, mosquitto)
    assert all(c["ok"] for c in checks.values()), checks
    assert list(checks) == [
        "config",
        "PBX address",
        "PBX answers",
        "registration",
        "local address",
        "microphone",
        "speaker",
        "MQTT",
        "GPIO",
    ]
    assert "(401, then 200)" in checks["registration"]["detail"]
    assert "Kamailio" in checks["PBX answers"]["detail"]  # the PBX's Server header
    assert "peak -20 dBFS" in checks["microphone"]["detail"]  # tone:1000 is at -20 dBFS
    assert "no GPIO configured" in checks["GPIO"]["detail"]


def _key_in_after_answer(phone: Baresip, digits: str) -> None:
    phone.wait_event("CALL_ESTABLISHED", timeout=30)
    time.sleep(0.5)
    phone.send_dtmf(digits)


def test_test_call_passes_with_audio_both_ways_and_dtmf(
    tmp_path: Path, kamailio: Kamailio, mosquitto: Any, handset: HandsetFactory
) -> None:
    phone = handset("621", tone_hz=600)
    proc = _start(_write(tmp_path, kamailio, mosquitto), "--call", "621", "--dtmf-wait", "8")
    _key_in_after_answer(phone, "5")
    checks = _finish(proc)
    assert all(c["ok"] for c in checks.values()), checks
    assert list(checks)[-5:] == ["test call", "audio sent", "audio heard", "DTMF", "hang-up"]
    call = checks["test call"]["detail"]
    assert "621 rang (180) and answered (200)" in call and " by 621" in call, call
    assert "baresip" in call  # the phone's User-Agent
    assert "peak -10 dBFS" in checks["audio sent"]["detail"]  # the doctor's test tone
    heard = checks["audio heard"]["detail"]
    assert "from the phone" in heard and float(heard.split()[1]) > -40, heard
    assert checks["DTMF"]["detail"] == "received 5 (RFC 4733)"
    assert "BYE answered (200)" in checks["hang-up"]["detail"]
    # The resident heard the doctor's tone, and the call was hung up by the door.
    [call_info] = phone.calls()
    assert call_info.closed and call_info.established


def test_test_call_to_an_extension_that_does_not_exist(
    tmp_path: Path, kamailio: Kamailio, mosquitto: Any
) -> None:
    checks = _doctor(tmp_path, kamailio, mosquitto, "--call", "699")
    call = checks["test call"]
    assert not call["ok"] and "extension 699 does not exist on the PBX (404)" in call["detail"]
    assert "dial plan" in call["fix"]
    assert "audio heard" not in checks  # nothing to measure without a call
    assert all(c["ok"] for name, c in checks.items() if name != "test call")


def test_test_call_without_a_key_press_names_the_dtmf_settings(
    tmp_path: Path, kamailio: Kamailio, mosquitto: Any, handset: HandsetFactory
) -> None:
    handset("621")
    checks = _doctor(tmp_path, kamailio, mosquitto, "--call", "621", "--dtmf-wait", "3")
    assert checks["test call"]["ok"] and checks["audio heard"]["ok"]
    dtmf = checks["DTMF"]
    assert not dtmf["ok"] and "not detected" in dtmf["detail"]
    assert "RFC 2833/4733" in dtmf["fix"] and "SIP INFO" in dtmf["fix"]
    assert checks["hang-up"]["ok"]


def test_wrong_password(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    checks = _doctor(tmp_path, kamailio, mosquitto, sip={"password": "Not-The-Pw-42"})
    reg = checks["registration"]
    assert not reg["ok"] and "403" in reg["detail"] and "password" in reg["fix"]
    assert "wrong user name or password" in reg["detail"]
    assert "FRITZ" not in reg["fix"]  # the test PBX is no FRITZ!Box
    assert "Not-The-Pw-42" not in json.dumps(checks)  # the password never shows


def test_wrong_port(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    checks = _doctor(
        tmp_path, kamailio, mosquitto, "--call", "621", sip={"port": free_udp_tcp_port()}
    )
    assert not checks["PBX answers"]["ok"] and "sip.port" in checks["PBX answers"]["fix"]
    assert "firewall" in checks["PBX answers"]["fix"]
    assert "nothing listens for SIP" in checks["PBX answers"]["detail"]  # not "[Errno 111]"
    assert "not tried" in checks["registration"]["detail"]
    assert "not tried" in checks["test call"]["detail"]
    assert checks["microphone"]["ok"] and checks["MQTT"]["ok"]  # the local checks still run


def test_broker_down_and_missing_sound_device(
    tmp_path: Path, kamailio: Kamailio, mosquitto: Any
) -> None:
    mosquitto.stop()
    checks = _doctor(tmp_path, kamailio, mosquitto, audio={"input": "No Such Card"})
    assert checks["registration"]["ok"]
    assert not checks["MQTT"]["ok"] and "mqtt.host" in checks["MQTT"]["fix"]
    assert "no MQTT broker runs at" in checks["MQTT"]["detail"]
    assert not checks["microphone"]["ok"] and "No Such Card" in checks["microphone"]["detail"]


def test_silent_microphone_and_speaker_to_a_file(
    tmp_path: Path, kamailio: Kamailio, mosquitto: Any
) -> None:
    played = tmp_path / "speaker.wav"
    audio = {"input": "tone:1000:-90", "output": f"file:{played}"}
    checks = _doctor(tmp_path, kamailio, mosquitto, audio=audio)
    mic = checks["microphone"]
    assert not mic["ok"] and "gives silence" in mic["detail"] and "alsamixer" in mic["fix"]
    assert checks["speaker"]["ok"] and "beep" in checks["speaker"]["detail"]
    assert played.stat().st_size > 8000  # half a second at 16 kHz, 16 bit


GPIO = {
    "doorbell": {"pin": 17},
    "door": {"pin": 23, "dtmf_code": "1234"},
    "chime": {"pin": 27},
    "led": {"pin": 22},
}


def test_gpio_with_the_mock_pin_factory(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    env = {"GPIOZERO_PIN_FACTORY": "mock"}
    checks = _doctor(tmp_path, kamailio, mosquitto, env=env, **GPIO)
    assert all(c["ok"] for c in checks.values()), checks
    assert "MockFactory (GPIOZERO_PIN_FACTORY=mock)" in checks["GPIO"]["detail"]
    assert "GPIO 17" in checks["doorbell button"]["detail"]
    assert "not pressed" in checks["doorbell button"]["detail"]
    assert "left off; not pulsed" in checks["door relay"]["detail"]
    assert "GPIO 27" in checks["chime"]["detail"] and "GPIO 22" in checks["LED"]["detail"]


def test_gpio_button_pressed_at_rest(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    # A pin that floats high with the pull-down configured reads "pressed" forever: gpiozero's
    # charging mock pin does just that once it is an input.
    env = {"GPIOZERO_PIN_FACTORY": "mock", "GPIOZERO_MOCK_PIN_CLASS": "mockchargingpin"}
    gpio = {**GPIO, "doorbell": {"pin": 17, "pull_up": False}}
    checks = _doctor(tmp_path, kamailio, mosquitto, env=env, **gpio)
    button = checks["doorbell button"]
    assert not button["ok"] and "reads pressed with nothing pressed" in button["detail"]
    assert "pull_up" in button["fix"]
    assert checks["door relay"]["ok"]


def test_gpio_without_a_pin_factory(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    env = {"GPIOZERO_PIN_FACTORY": "nosuchfactory"}
    checks = _doctor(tmp_path, kamailio, mosquitto, env=env, **GPIO)
    gpio = checks["GPIO"]
    assert not gpio["ok"] and "GPIOZERO_PIN_FACTORY=nosuchfactory" in gpio["detail"]
    assert "GPIOZERO_PIN_FACTORY=mock" in gpio["fix"] and "python3-lgpio" in gpio["fix"]
    assert "door relay" not in checks  # one cause, one line
