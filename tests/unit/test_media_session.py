"""Two media sessions on loopback: latching, hold, DTMF, time-out and malformed input.

These use real UDP sockets on 127.0.0.1 (the session is the thin adapter around the pure
``RtpStream``, whose rules tests/unit/test_rtp_stream.py checks in virtual time), and short real
waits: a fraction of a second each.
"""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from intercom import sdp
from intercom.media.audio import NullSink, ToneSource
from intercom.media.rtp import RtpPacket
from intercom.media.session import MediaSession, MediaSettings, candidate_ports


class Recorder(NullSink):
    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self.frames_heard: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames_heard.append(frame)


def _pair(codec: str = "PCMA", **kw: float):  # type: ignore[no-untyped-def]
    settings = MediaSettings(host="127.0.0.1", codecs=(codec,), jitter_ms=40, **kw)  # type: ignore[arg-type]
    sinks: dict[str, Recorder] = {}
    digits: dict[str, list[str]] = {"a": [], "b": []}
    timeouts: list[str] = []

    def make(name: str, hz: int) -> MediaSession:
        def sink(rate: int) -> Recorder:
            sinks[name] = Recorder(rate)
            return sinks[name]

        return MediaSession(
            settings,
            lambda rate: ToneSource(hz, -20, rate),
            sink,
            on_dtmf=digits[name].append,
            on_timeout=lambda: timeouts.append(name),
        )

    a, b = make("a", 1000), make("b", 440)
    a.bind()
    b.bind()
    return a, b, sinks, digits, timeouts


async def _talk(a: MediaSession, b: MediaSession) -> tuple[bytes, bytes]:
    """``a`` offers, ``b`` answers, both start: a call's audio both ways."""
    offer = a.local_sdp(None)
    answer = b.local_sdp(offer)
    assert offer is not None and answer is not None
    await a.start(answer)
    await b.start(offer)
    return offer, answer


def test_audio_flows_both_ways_and_pacing_has_no_drift() -> None:
    async def scenario() -> None:
        a, b, sinks, _digits, _t = _pair("G722")
        await _talk(a, b)
        await asyncio.sleep(1.0)
        assert a.stats.codec == b.stats.codec == "G722"
        assert abs(a.stats.sent - a.stats.ticks) <= 1  # every tick sends one packet
        assert a.stats.received >= 40 and b.stats.received >= 40
        heard = np.concatenate(sinks["a"].frames_heard[-20:])
        assert sinks["a"].rate == 16000 and np.abs(heard).max() > 1000  # b's tone reached a
        assert abs(a.stats.pacing.mean - 0.020) < 0.002
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_destination_latches_onto_where_rtp_really_comes_from() -> None:
    async def scenario() -> None:
        a, b, _sinks, _d, _t = _pair()
        offer = a.local_sdp(None)
        answer = b.local_sdp(offer)
        assert offer is not None and answer is not None
        # The answer names a port where nobody listens (a NAT rewrote it, say).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
            dead.bind(("127.0.0.1", 0))
            wrong = answer.replace(
                f"m=audio {b.port} ".encode(), f"m=audio {dead.getsockname()[1]} ".encode()
            )
            await a.start(wrong)
            await b.start(offer)
            await asyncio.sleep(0.5)
        assert a.stats.latched == ("127.0.0.1", b.port)
        assert a.remote == ("127.0.0.1", b.port)
        assert b.stats.received >= 10  # a's audio now reaches b
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_hold_stops_sending_and_pauses_the_timeout_then_resume() -> None:
    async def scenario() -> None:
        a, b, _sinks, _d, timeouts = _pair(rtp_timeout=0.3)
        _offer, answer = await _talk(a, b)
        await asyncio.sleep(0.2)
        hold = sdp.build("127.0.0.1", b.port, [sdp.PCMA], session_id=1, direction="sendonly")
        a.update(hold)
        await b.stop()  # the held phone goes quiet entirely
        sent = a.stats.sent
        await asyncio.sleep(0.5)
        assert a.stats.sent == sent and not a.sending
        assert timeouts == []  # no time-out while on hold
        a.update(answer)
        assert a.sending
        await asyncio.sleep(0.5)
        assert a.stats.sent > sent
        assert timeouts == ["a"]  # resumed, and b stays silent: now it times out
        await a.stop()

    asyncio.run(scenario())


def test_dtmf_digits_cross_as_rfc4733() -> None:
    async def scenario() -> None:
        a, b, _sinks, digits, _t = _pair()
        await _talk(a, b)
        await asyncio.sleep(0.1)
        a.send_dtmf("1#9")
        await asyncio.sleep(1.0)
        assert digits["b"] == ["1", "#", "9"]
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_malformed_and_foreign_rtp_is_dropped() -> None:
    async def scenario() -> None:
        a, b, _sinks, digits, _t = _pair()
        await _talk(a, b)
        await asyncio.sleep(0.3)
        # Garbage from the peer itself (its own socket): parsed, counted malformed, dropped.
        assert b.sock is not None
        b.sock.sendto(b"\x00garbage", ("127.0.0.1", a.port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            # A stranger's packets are not even parsed: garbage or RTP, they are foreign.
            intruder.sendto(b"\x00garbage", ("127.0.0.1", a.port))
            intruder.sendto(bytes([0x80, 0x00]) + bytes(10) + b"x" * 160, ("127.0.0.1", a.port))
            await asyncio.sleep(0.1)
        assert a.stats.malformed == 1
        # After the latch the socket is connected to the peer: the kernel drops a stranger's
        # packets before the stream sees them (the stream's own rule is test_rtp_stream's).
        assert a.stats.foreign == 0
        assert a.remote == ("127.0.0.1", b.port)
        assert digits["a"] == []
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_no_shared_codec_refuses_the_offer() -> None:
    a, _b, _s, _d, _t = _pair("G722")
    offer = sdp.build("127.0.0.1", 4000, [sdp.PCMU], session_id=5)
    assert a.local_sdp(offer) is None


#: Below Linux's ephemeral ports (32768-60999), where the other tests' sockets do not land.
RANGE = (20000, 20398)


def _bind(port_min: int, port_max: int) -> MediaSession:
    settings = MediaSettings(host="127.0.0.1", port_min=port_min, port_max=port_max)
    session = MediaSession(settings, lambda rate: ToneSource(440, -20, rate), NullSink)
    session.bind()
    return session


def test_rtp_ports_are_random_and_even_within_the_range() -> None:
    ports = []
    for _ in range(20):
        session = _bind(*RANGE)
        ports.append(session.port)
        assert session.sock is not None
        session.sock.close()
    assert all(RANGE[0] <= p <= RANGE[1] and p % 2 == 0 for p in ports), ports
    # The first call no longer always takes the lowest port: a stranger cannot guess it.
    assert len(set(ports)) >= 10, ports


def test_a_taken_port_is_skipped_and_a_full_range_is_an_error() -> None:
    low = 20500
    taken = []
    try:
        for port in (low, low + 2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", port))
            taken.append(sock)
        for _ in range(5):
            session = _bind(low, low + 5)
            assert session.port == low + 4
            assert session.sock is not None
            session.sock.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", low + 4))
        taken.append(sock)
        with pytest.raises(OSError, match="no free RTP port in 20500-20505"):
            _bind(low, low + 5)
    finally:
        for sock in taken:
            sock.close()


def test_candidate_ports_cover_every_even_port_of_the_range() -> None:
    ports = list(candidate_ports(11, 21))
    assert set(ports) == {12, 14, 16, 18, 20}
    assert ports[-5:] and sorted(ports[-5:]) == [12, 14, 16, 18, 20]  # each once, at the end
    assert set(candidate_ports(20, 20)) == {20}
    assert list(candidate_ports(21, 21)) == []


def test_once_latched_the_kernel_drops_a_strangers_flood() -> None:
    """Review finding: 5,000 packets a second from a stranger filled the socket's queue, so
    half of the phone's audio and digits were lost. Once latched the socket is connected to the
    phone, and the kernel drops everyone else's packets before they take a place in the queue;
    a new offer or answer undoes that until the phone's audio latches again."""

    async def scenario() -> None:
        a, b, _sinks, _d, _t = _pair()
        _offer, answer = await _talk(a, b)
        await asyncio.sleep(0.3)
        assert a.connected == ("127.0.0.1", b.port) == a.stats.latched
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.2", 0))
            received = a.stats.received
            junk = bytes([0x80, 8]) + bytes(170)
            for _ in range(20):  # 20 bursts of 500 in half a second: 10,000 packets
                for _ in range(500):
                    stranger.sendto(junk, ("127.0.0.1", a.port))
                await asyncio.sleep(0.025)
            assert a.stats.foreign == 0  # none of them even reached the stream
            assert a.stats.received - received >= 20  # the phone's audio kept coming
        # The phone goes quiet (on hold), and a new answer reopens the latch: the socket lets go
        # of the phone, on the same port, and follows the phone's audio when it comes back.
        b_port = b.port
        await b.stop()
        await asyncio.sleep(0.1)  # what b sent before it stopped is read
        a.update(answer)
        await asyncio.sleep(0.1)
        assert a.connected is None
        assert a.sock is not None and a.sock.getsockname()[1] == a.port  # the port is kept
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(("127.0.0.1", b_port))
            packet = RtpPacket(8, 1, 160, 0xB0B, bytes(160)).serialize()
            received = a.stats.received
            for _ in range(10):
                phone.sendto(packet, ("127.0.0.1", a.port))
                await asyncio.sleep(0.02)
            assert a.stats.received - received >= 5  # its audio arrives at the same port
            assert a.connected == ("127.0.0.1", b_port)  # and the socket follows it again
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_a_call_that_ends_while_the_sound_card_opens_starts_no_clock() -> None:
    """Bench finding: a hang-up while start() waited for the sound card ran stop() first; start
    then started the 20 ms clock on the closed session (a traceback every 20 ms, for ever) and
    never closed the source and sink it opened."""
    closed: list[str] = []

    class Slow(ToneSource):
        def close(self) -> None:
            closed.append("source")

    class Sink(NullSink):
        def close(self) -> None:
            closed.append("sink")

    def slow_source(rate: int) -> ToneSource:
        import time

        time.sleep(0.2)  # a sound card being scanned, off the loop
        return Slow(1000, -20, rate)

    async def scenario() -> None:
        settings = MediaSettings(host="127.0.0.1", codecs=("PCMA",))
        a = MediaSession(settings, slow_source, lambda rate: Sink(rate))
        b = MediaSession(settings, lambda r: ToneSource(440, -20, r), lambda r: NullSink(r))
        a.bind()
        b.bind()
        offer = a.local_sdp(None)
        answer = b.local_sdp(offer)
        assert offer is not None and answer is not None
        starting = asyncio.ensure_future(a.start(answer))
        await asyncio.sleep(0.05)
        await a.stop()  # the call ended meanwhile
        await starting
        assert a._clock is None and a.stats.ticks == 0
        assert sorted(closed) == ["sink", "source"]
        await asyncio.sleep(0.1)
        assert a.stats.ticks == 0
        await b.stop()

    asyncio.run(scenario())
