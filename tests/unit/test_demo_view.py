"""How the demo draws its story, on captured SIP messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercom import demo_view as view

SIP_DIR = Path(__file__).resolve().parents[1] / "data" / "sip"


def raw(name: str) -> bytes:
    return (SIP_DIR / name).read_bytes()


def test_a_request_with_an_offer_is_its_method_uri_and_sdp() -> None:
    label = view.summarize(raw("kamailio_invite_from_baresip.sip"))
    assert label is not None
    assert label.startswith("INVITE sip:") and label.endswith("(SDP)")


def test_a_response_is_its_status_and_reason() -> None:
    assert view.summarize(raw("fritzbox_180_ringing.sip")) == "180 Ringing"


@pytest.mark.parametrize("junk", [b"", b"\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", bytes(range(256))])
def test_what_is_not_sip_is_left_out_of_the_ladder(junk: bytes) -> None:
    assert view.summarize(junk) is None


def test_arrows_point_from_the_sender_and_line_up() -> None:
    sent = view.arrow("INVITE sip:handset@127.0.0.1 (SDP)", sent=True)
    got = view.arrow("180 Ringing", sent=False)
    assert sent.startswith("door") and sent.endswith("▶ handset")
    assert "◀" in got and got.index("◀") < got.index("180")
    assert len(sent) == len(got)  # the two columns of the ladder stay straight


def test_a_long_label_is_cut_not_the_ladder() -> None:
    long = view.arrow("INVITE sip:" + "x" * 200 + "@example.com", sent=True)
    assert len(long) == len(view.arrow("ACK", sent=True)) and "…" in long


@pytest.mark.parametrize(
    ("dbfs", "bars"), [(-120.0, 0), (-60.0, 0), (-30.0, 6), (0.0, 12), (6.0, 12)]
)
def test_meter_fills_from_minus_60_to_0_dbfs(dbfs: float, bars: int) -> None:
    assert view.meter(dbfs).count("█") == bars and len(view.meter(dbfs)) == 12


def test_levels_says_silent_rather_than_minus_120() -> None:
    text = view.levels(-6.0, -120.0)
    assert "-6 dBFS" in text and "silent" in text and "-120" not in text


def test_mqtt_lines_drop_the_base_topic_and_cut_long_payloads() -> None:
    assert view.mqtt_line("intercom/door/call/state", b"ringing", "intercom/door") == (
        "call/state = ringing"
    )
    long = view.mqtt_line("intercom/door/event", b"x" * 500, "intercom/door")
    assert long.endswith("…") and len(long) < 100
    assert view.mqtt_line("other/topic", b"", "intercom/door") == "other/topic = (empty)"


def test_progress_names_missing_steps_in_story_order() -> None:
    progress = view.Progress()
    assert progress.mark("ended") and not progress.mark("ended")
    for key, _ in view.STEPS[:5]:
        progress.mark(key)
    missing = progress.missing
    assert missing[0] == dict(view.STEPS)["code"]
    assert dict(view.STEPS)["ended"] not in missing
    progress.reset()
    assert len(progress.missing) == len(view.STEPS)
