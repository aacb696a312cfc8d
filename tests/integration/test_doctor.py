"""`intercom doctor` against the real Kamailio and mosquitto: all pass, then one fault at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.peers.kamailio import Kamailio
from tests.peers.ports import free_udp_tcp_port

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[2]


def _doctor(tmp_path: Path, pbx: Kamailio, broker: Any, **changes: Any) -> dict[str, Any]:
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
    result = subprocess.run(
        [sys.executable, "-m", "intercom", "doctor", "-c", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    report = json.loads(result.stdout)
    assert (result.returncode == 0) == report["ok"]
    return {c["name"]: c for c in report["checks"]}


def test_all_checks_pass(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    checks = _doctor(tmp_path, kamailio, mosquitto)
    assert all(c["ok"] for c in checks.values()), checks
    assert {"config", "PBX address", "PBX answers", "registration", "MQTT"} <= set(checks)


def test_wrong_password(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    checks = _doctor(tmp_path, kamailio, mosquitto, sip={"password": "Not-The-Pw-42"})
    reg = checks["registration"]
    assert not reg["ok"] and "403" in reg["detail"] and "password" in reg["fix"]
    assert "Not-The-Pw-42" not in json.dumps(checks)  # the password never shows


def test_wrong_port(tmp_path: Path, kamailio: Kamailio, mosquitto: Any) -> None:
    checks = _doctor(tmp_path, kamailio, mosquitto, sip={"port": free_udp_tcp_port()})
    assert not checks["PBX answers"]["ok"] and "sip.port" in checks["PBX answers"]["fix"]
    assert "not tried" in checks["registration"]["detail"]


def test_broker_down_and_missing_sound_device(
    tmp_path: Path, kamailio: Kamailio, mosquitto: Any
) -> None:
    mosquitto.stop()
    checks = _doctor(tmp_path, kamailio, mosquitto, audio={"input": "No Such Card"})
    assert checks["registration"]["ok"]
    assert not checks["MQTT"]["ok"] and "mqtt.host" in checks["MQTT"]["fix"]
    assert not checks["microphone"]["ok"] and "No Such Card" in checks["microphone"]["detail"]
