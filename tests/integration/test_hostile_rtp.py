"""A stranger on the LAN against the door's RTP, on loopback: 127.0.0.2 is the stranger.

During an allowed call with a door code, the stranger reads the door's RTP port from the SDP (SIP
is in clear text on a LAN, so the test reads it from the captured INVITE, as a sniffer would) and
sends RTP audio and the right code as RFC 4733 events from ringing on, before and after the phone's
audio latches. The door must not open, must send the stranger nothing, and the call must go on:
then the real phone keys the same code, and the door opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from intercom.app import Intercom
from intercom.media.codecs import alaw_encode
from intercom.media.dtmf import DtmfSender
from intercom.media.rtp import RtpPacket
from intercom.phone import PhoneOptions
from tests.integration.audio_check import read_wav, tone_snr
from tests.integration.door import door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers

STRANGER_IP = "127.0.0.2"
CODE = "1234"
RELAY_PIN = 23


async def _until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def _door_rtp_port(wire: list[tuple[str, float, bytes]]) -> int | None:
    """The RTP port of the door's SDP offer, as a sniffer on the LAN reads it."""
    for direction, _t, data in wire:
        if direction == "sent" and data.startswith(b"INVITE "):
            found = re.search(rb"\r\nm=audio (\d+) ", data)
            if found:
                return int(found.group(1))
    return None


async def _attack(sock: socket.socket, door: tuple[str, int], heard: list[bytes]) -> None:
    """Audio at 50 packets a second with one SSRC (what re-latched the old door), and the code
    as telephone-events every half second; everything that comes back is kept in ``heard``."""
    ssrc, seq, ts = 0x5EC12E7, 100, 1000
    payload = alaw_encode(np.zeros(160, dtype=np.int16))
    events = DtmfSender(101)
    tick = 0
    while True:
        if tick % 25 == 0:
            for _offset, packet in events.events_for(CODE, ssrc, seq, ts, gap_ms=20):
                sock.sendto(packet.serialize(), door)
                seq = (seq + 1) & 0xFFFF
        sock.sendto(RtpPacket(8, seq, ts, ssrc, payload).serialize(), door)
        seq, ts = (seq + 1) & 0xFFFF, ts + 160
        with contextlib.suppress(BlockingIOError):
            while True:
                heard.append(sock.recv(2048))
        tick += 1
        await asyncio.sleep(0.020)


def test_a_stranger_can_neither_key_the_code_nor_hear_the_door(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    phone = handset("621", tone_hz=440)
    factory = MockFactory()
    config = door_config(
        kamailio,
        audio={"codecs": ["PCMA"], "input": "tone:1000", "output": "null"},
        door={"pin": RELAY_PIN, "pulse": 0.3, "dtmf_code": CODE, "max_attempts": 3},
    )
    heard_by_stranger: list[bytes] = []

    async def scenario() -> None:
        options = PhoneOptions(local_host="127.0.0.1", any_rtp_port=True, capture=True)
        app = Intercom(config, phone_options=options, pin_factory=factory)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind((STRANGER_IP, 0))
        stranger.setblocking(False)
        await app.start()
        relay = factory.pin(RELAY_PIN)
        relay.clear_states()
        attack: asyncio.Task[None] | None = None
        try:
            await _until(lambda: app.phone.registered, 5, "registration")
            app.ring(source="test")
            port = await _until(lambda: _door_rtp_port(app.phone.wire), 5, "the door's INVITE")
            # From ringing on: the first packets wait in the door's socket before the call starts.
            attack = asyncio.create_task(_attack(stranger, ("127.0.0.1", port), heard_by_stranger))
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await asyncio.sleep(1.5)
            media = next(iter(app.phone.media.values()))
            attack.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attack
            stats = media.stats
            # The stranger's packets reached the door: those that waited in its socket before the
            # latch were dropped by the stream; after it the socket is connected to the phone,
            # and the kernel drops them before they take a place in its queue.
            assert stats.foreign >= 10, stats
            assert media.connected == stats.latched
            assert not any(s.state for s in relay.states), "a stranger's digits opened the door"
            assert heard_by_stranger == [], "the door's audio went to the stranger"
            assert stats.latched is not None and stats.latched[0] == "127.0.0.1"
            assert stats.received >= 50 and stats.dtmf_received == 0
            assert app.call is not None, "the call goes on"
            # The phone that answered keys the same code: that one opens the door.
            await asyncio.to_thread(phone.send_dtmf, CODE, 0.1)
            await _until(lambda: relay.state is True, 3, "the strike to open")
        finally:
            if attack is not None:
                attack.cancel()
            await app.stop()
            stranger.close()
        assert "rtp_timeout" not in str(phone.find_events("CALL_CLOSED"))

    asyncio.run(scenario())
    phone.wait_event("CALL_CLOSED", 5)
    dec = [p for p in phone.recordings() if p.name.endswith("-dec.wav")]
    assert dec, phone.recordings()
    samples, rate = read_wav(dec[0])
    peak, snr = tone_snr(samples, rate, 1000)  # the handset heard the door all along
    assert abs(peak - 1000) < 10 and snr >= 30, (peak, snr)
