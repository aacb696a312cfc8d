"""The `intercom` command as a user runs it: a real process against the real peers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.integration.audio_check import read_wav, tone_snr
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[2]


def _write_config(path: Path, pbx: Kamailio, **sip: object) -> Path:
    data = {
        "device_id": "frontdoor",
        "sip": {
            "server": pbx.host,
            "port": pbx.port,
            "username": "door",
            "password_file": "sip-password",
            "local_port": 0,
            "expires": 60,
            **sip,
        },
        "call": {"targets": ["621"], "ring_timeout": 5},
        "audio": {"input": "tone:1000", "output": "null"},
        "media": {"rtp_port_min": 40000, "rtp_port_max": 60000},
    }
    path.write_text(yaml.safe_dump(data))
    (path.parent / "sip-password").write_text("doorpass\n")
    return path


def _intercom(*args: str, timeout: float = 60, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "intercom", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _write_tone(path: Path, hz: float, seconds: float, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * hz * t) * 0.3 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def test_ring_json_answered_exits_0_with_audio_both_ways(
    kamailio: Kamailio, handset: HandsetFactory, tmp_path: Path
) -> None:
    phone = handset("621", tone_hz=440)
    config = _write_config(tmp_path / "intercom.yaml", kamailio)
    voice = _write_tone(tmp_path / "voice.wav", 1000, 1.0)
    heard = tmp_path / "heard.wav"
    result = _intercom(
        "ring", "-c", str(config), "--json", "--talk", "2",
        "--play", str(voice), "--record", str(heard),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = _events(result.stdout)
    names = [e["event"] for e in events]
    assert names == ["registering", "registered", "calling", "ringing", "answered", "ended"]
    assert [e["state"] for e in events][2:] == ["calling", "ringing", "in_call", "ended"]
    assert events[-1]["reason"] == "local_hangup"
    assert events[3]["code"] == 180 and events[4]["code"] == 200
    assert all(set(e) >= {"event", "state", "t"} for e in events)
    assert 2.0 <= float(events[-1]["t"]) - float(events[4]["t"]) < 4.0
    assert phone.find_events("CALL_CLOSED") or phone.wait_event("CALL_CLOSED", 5)
    assert "doorpass" not in result.stderr + result.stdout
    # The door played the WAV to the handset and recorded the handset's tone.
    samples, rate = read_wav(heard)
    assert rate == 16000  # G.722 first in the default codec order
    peak, snr = tone_snr(samples, rate, 440)
    assert abs(peak - 440) < 10 and snr >= 30, (peak, snr)
    sent = [p for p in phone.recordings() if p.name.endswith("-dec.wav")]
    samples, rate = read_wav(sent[0])
    peak, snr = tone_snr(samples, rate, 1000)
    assert abs(peak - 1000) < 10 and snr >= 30, (peak, snr)


def test_ring_busy_exits_2(kamailio: Kamailio, handset: HandsetFactory, tmp_path: Path) -> None:
    handset("621", answer="busy")
    config = _write_config(tmp_path / "intercom.yaml", kamailio)
    result = _intercom("ring", "-c", str(config), "--json")
    assert result.returncode == 2, result.stderr
    last = _events(result.stdout)[-1]
    assert (last["event"], last["reason"], last["code"]) == ("ended", "busy", 486)


def test_ring_named_target_not_registered_exits_2(kamailio: Kamailio, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "intercom.yaml", kamailio)
    result = _intercom("ring", "-c", str(config), "622", "--json")
    assert result.returncode == 2, result.stderr
    last = _events(result.stdout)[-1]
    assert (last["reason"], last["code"], last["target"]) == (
        "unavailable",
        480,
        "sip:622@127.0.0.1",
    )


def test_ring_wrong_password_exits_1_with_a_clear_error(kamailio: Kamailio, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "intercom.yaml", kamailio)
    (tmp_path / "sip-password").write_text("not-the-password\n")
    result = _intercom("ring", "-c", str(config), "--json", "--sip-trace")
    assert result.returncode == 1
    failed = _events(result.stdout)[-1]
    assert (failed["event"], failed["code"]) == ("failed", 403)
    assert "wrong user name or password" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout
    # The trace is on, yet the digest response and nonces are masked.
    assert 'response="***"' in result.stderr
    assert 'nonce="***"' in result.stderr


def test_run_daemon_registers_and_stops_cleanly_on_sigterm(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    config = _write_config(tmp_path / "intercom.yaml", kamailio)
    proc = subprocess.Popen(
        [sys.executable, "-m", "intercom", "run", "-c", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        kamailio.wait_registered("door", 10)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
        assert not kamailio.registered("door")  # un-REGISTERed on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def test_check_config(tmp_path: Path, kamailio: Kamailio) -> None:
    good = _write_config(tmp_path / "good.yaml", kamailio)
    result = _intercom("check-config", "-c", str(good))
    assert result.returncode == 0, result.stderr
    assert "doorpass" not in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sip:\n  server: pbx\n  transport: tls\n  colour: red\ncall:\n  ring_timeout: 0\n"
    )
    result = _intercom("check-config", "-c", str(bad))
    assert result.returncode == 1
    assert "sip.transport" in result.stderr and "'tls'" in result.stderr
    assert "sip.colour: unknown key" in result.stderr
    assert "call.ring_timeout" in result.stderr
    assert "sip.username" in result.stderr  # all errors at once, the missing key too


def test_version() -> None:
    from intercom import __version__

    result = _intercom("--version")
    assert result.returncode == 0 and __version__ in result.stdout
