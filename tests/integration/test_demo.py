"""``intercom demo --once``: the whole story on this machine, with and without mosquitto.

The demo is the README's first command, so it is tested as a newcomer runs it (a subprocess of the
CLI) and, for the machine without mosquitto, in-process with mosquitto made invisible, which is
what the fallback to the embedded broker depends on.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from intercom import demo_broker
from intercom.demo import DemoOptions, run_demo
from intercom.demo_view import STEPS

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "intercom", "demo", "--once", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def _assert_whole_story(out: str) -> None:
    for expected in (
        "doorbell pressed",
        "INVITE sip:handset",
        "180 Ringing",
        "door: in_call",
        "handset keys 1234",
        "strike relay ON",
        "strike relay off",
        "BYE",
        "call/state = ringing",
        '"event_type": "door_opened"',
        "door→handset",
        "the handset heard the visitor",
        "the door heard the resident",
        f"demo OK: all {len(STEPS)} steps happened",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    # The voices are checked for what they are, not for loudness alone.
    assert out.count("(the same voice)") == 2, out
    # The door code is keyed in the story but never published: no digit reaches MQTT.
    assert '"digit"' not in out
    # A retained state is published when it changes, not again on every DTMF key.
    assert out.count("call/state = in_call") == 1, out


def test_demo_with_the_machines_mosquitto() -> None:
    if demo_broker.find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (scripts/test installs it)")
    result = _demo()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MQTT     mosquitto on 127.0.0.1:" in result.stdout
    _assert_whole_story(result.stdout)
    assert "Traceback" not in result.stderr


def test_demo_without_mosquitto_embeds_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_broker, "find_mosquitto", lambda: None)
    out = io.StringIO()
    code = asyncio.run(run_demo(DemoOptions(once=True), out=out))
    text = out.getvalue()
    assert code == 0, text
    assert "MQTT     embedded (amqtt) on 127.0.0.1:" in text
    _assert_whole_story(text)


def test_a_step_that_does_not_happen_is_named_and_exits_1() -> None:
    out = io.StringIO()
    options = DemoOptions(once=True, broker="none", talk=1.0, keyed="9999")
    code = asyncio.run(run_demo(options, out=out))
    text = out.getvalue()
    assert code == 1
    assert "demo FAILED: the door strike pulsed did not happen" in text, text
    assert "strike relay ON" not in text
    assert "the handset hangs up" in text  # the call still ends without the door opening


def test_asking_for_mosquitto_where_there_is_none_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo_broker, "find_mosquitto", lambda: None)
    with pytest.raises(demo_broker.BrokerUnavailable, match="apt-get install mosquitto"):
        asyncio.run(demo_broker.start_broker("mosquitto"))


def test_interrupting_once_is_not_a_success() -> None:
    """Ctrl-C before the last step: --once must not report the story as complete."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "intercom", "demo", "--once", "--broker", "none"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job ignores SIGINT, and the child would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # interrupt once the call is up, as an impatient newcomer would
        if "door: in_call" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1, out + err
    assert "demo interrupted" in err and "demo OK" not in out
