"""Audio across real calls: tones both ways in G.711 and G.722, DTMF, hold, RTP time-out."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from intercom.sip.events import CallEnded, DtmfReceived
from tests.integration.audio_check import read_wav, tone_snr
from tests.integration.door import Door, door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722"])
def test_tones_cross_both_ways(
    kamailio: Kamailio, handset: HandsetFactory, tmp_path: Path, codec: str
) -> None:
    phone = handset("621", tone_hz=440)
    heard_by_door = tmp_path / "door-heard.wav"
    config = door_config(
        kamailio,
        audio={"codecs": [codec], "input": "tone:1000", "output": f"file:{heard_by_door}"},
    )

    async def scenario() -> None:
        async with Door(config) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered", 10)
            await asyncio.sleep(3.0)
            stats = door.phone.media[handle].stats
            assert stats.codec == codec
            door.phone.hangup(handle)
            await door.wait_event("ended", 5)
            await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5)
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    # What the handset heard: the door's 1 kHz tone.
    dec = [p for p in phone.recordings() if p.name.endswith("-dec.wav")]
    assert dec, phone.recordings()
    samples, rate = read_wav(dec[0])
    assert rate == (16000 if codec == "G722" else 8000)
    peak, snr = tone_snr(samples, rate, 1000)
    assert abs(peak - 1000) < 10 and snr >= 30, (peak, snr)
    # What the door heard: the handset's 440 Hz tone.
    samples, rate = read_wav(heard_by_door)
    assert rate == (16000 if codec == "G722" else 8000)
    peak, snr = tone_snr(samples, rate, 440)
    assert abs(peak - 440) < 10 and snr >= 30, (peak, snr)


def test_sixteen_dtmf_digits_over_rfc4733(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621")
    digits = "0123456789*#ABCD"

    async def scenario() -> None:
        async with Door(door_config(kamailio, audio={"codecs": ["PCMA"]})) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            await asyncio.to_thread(phone.send_dtmf, digits)
            await door.wait_for(
                lambda e: sum(isinstance(x, DtmfReceived) for x in door.events) >= len(digits),
                5,
                "16 digits",
            )
            await asyncio.sleep(0.5)
            got = [e for e in door.events if isinstance(e, DtmfReceived)]
            assert "".join(e.digit for e in got) == digits
            assert {e.method for e in got} == {"rfc4733"}
            door.phone.hangup(handle)
            await door.wait_event("ended", 5)

    asyncio.run(scenario())


def test_dtmf_over_sip_info_from_linphonec(kamailio: Kamailio, linphone_handset) -> None:  # type: ignore[no-untyped-def]
    phone = linphone_handset("622", dtmf_info=True)

    async def scenario() -> None:
        async with Door(door_config(kamailio, targets=("622",))) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["622"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(phone.wait_established)
            for digit in "19#":
                await asyncio.to_thread(phone.command, digit)
                await asyncio.sleep(0.4)
            await door.wait_for(
                lambda e: sum(isinstance(x, DtmfReceived) for x in door.events) >= 3, 5, "digits"
            )
            got = [e for e in door.events if isinstance(e, DtmfReceived)]
            assert [(e.digit, e.method) for e in got] == [
                ("1", "info"),
                ("9", "info"),
                ("#", "info"),
            ]
            door.phone.hangup(handle)
            await door.wait_event("ended", 5)

    asyncio.run(scenario())


def test_audio_flows_again_after_hold(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621")

    async def scenario() -> None:
        async with Door(door_config(kamailio)) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            media = door.phone.media[handle]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(phone.command, "hold")
            await asyncio.sleep(1.0)
            sent_on_hold = media.stats.sent
            await asyncio.sleep(1.0)
            assert media.stats.sent == sent_on_hold, "the door sends nothing to a phone on hold"
            await asyncio.to_thread(phone.command, "resume")
            await asyncio.sleep(0.5)
            received, sent = media.stats.received, media.stats.sent
            await asyncio.sleep(1.0)
            assert media.stats.received - received >= 40  # ~50 packets a second again
            assert media.stats.sent - sent >= 40
            door.phone.hangup(handle)
            await door.wait_event("ended", 5)

    asyncio.run(scenario())


def test_handset_killed_mid_call_ends_by_rtp_timeout(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    phone = handset("621")

    async def scenario() -> None:
        config = door_config(kamailio)
        config = config.model_copy(
            update={"media": config.media.model_copy(update={"rtp_timeout": 5})}
        )
        async with Door(config) as door:
            await door.wait_event("registered")
            door.phone.call(["621"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            assert phone._proc is not None
            os.killpg(phone._proc.pid, signal.SIGKILL)
            ended = await door.wait_event("ended", 10)
            assert isinstance(ended, CallEnded) and ended.reason == "rtp_timeout"

    asyncio.run(scenario())
