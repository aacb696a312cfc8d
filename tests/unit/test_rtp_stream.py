"""The RTP stream in virtual time: who may send the call's RTP, where the door's audio goes,
hold, the time-out, DTMF both ways, and the bounds. No sockets, no sleeps: ``now`` is a number.

The phone's SDP names 10.0.0.5:4000; 10.0.0.66 is a stranger on the LAN.
"""

from __future__ import annotations

import itertools
import logging
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from intercom import sdp
from intercom.errors import RemoteProtocolError
from intercom.media.codecs import alaw_encode
from intercom.media.dtmf import DtmfReceiver, DtmfSender
from intercom.media.rtp import RtpPacket
from intercom.media.stream import (
    MAX_DTMF_QUEUE,
    Addr,
    DigitReceived,
    RtpStream,
    StreamEvent,
    TimedOut,
)

DOOR: Addr = ("10.0.0.1", 40000)
PHONE_IP = "10.0.0.5"
PHONE: Addr = (PHONE_IP, 4000)
STRANGER: Addr = ("10.0.0.66", 4000)
TIMEOUT = 5.0
TONE = alaw_encode((8000 * np.sin(np.arange(160) * 2 * np.pi / 8)).astype(np.int16))


def phone_sdp(address: str = PHONE_IP, port: int = 4000, direction: str = "sendrecv") -> bytes:
    codecs = [sdp.PCMA, sdp.TELEPHONE_EVENT]
    return sdp.build(address, port, codecs, session_id=7, direction=direction)


class Sender:
    """An RTP source: audio frames and RFC 4733 digits with one SSRC, as a phone sends them."""

    def __init__(self, ssrc: int, seq: int = 1000, ts: int = 50_000) -> None:
        self.ssrc, self.seq, self.ts = ssrc, seq, ts

    def audio(self, pt: int = 8) -> bytes:
        packet = RtpPacket(pt, self.seq, self.ts, self.ssrc, TONE)
        self.seq, self.ts = (self.seq + 1) & 0xFFFF, self.ts + 160
        return packet.serialize()

    def digit(self, digit: str) -> list[bytes]:
        packets = DtmfSender(101).packets(digit, self.ssrc, self.seq, self.ts)
        self.seq = (self.seq + len(packets)) & 0xFFFF
        self.ts += 160 * len(packets) + 800
        return [p.serialize() for p in packets]


class Call:
    """Drives a stream on a virtual 20 ms clock and keeps everything it sent and reported."""

    def __init__(self, stream: RtpStream | None = None, *, answer: bytes | None = None) -> None:
        self.stream = stream or RtpStream(("PCMA",), rtp_timeout=TIMEOUT, jitter_ms=40)
        self.now = 100.0
        self.sent: list[tuple[bytes, Addr]] = []
        self.events: list[StreamEvent] = []
        self.heard: list[np.ndarray] = []
        self.stream.offer(DOOR)
        self.stream.start(answer or phone_sdp(), self.now)

    def deliver(self, data: bytes, source: Addr) -> None:
        self.stream.receive_datagram(data, source, self.now)

    def tick(self, n: int = 1, each: Callable[[Call], None] | None = None) -> None:
        silence = np.zeros(160, dtype=np.int16)
        for _ in range(n):
            if each is not None:
                each(self)
            self.heard.append(self.stream.tick(self.now, silence))
            self.sent += self.stream.datagrams_to_send()
            while (event := self.stream.next_event()) is not None:
                self.events.append(event)
            self.now += 0.020

    def talk(self, sender: Sender, source: Addr, ticks: int) -> None:
        """``sender`` at ``source`` sends one audio packet per tick for ``ticks`` ticks."""
        self.tick(ticks, lambda c: c.deliver(sender.audio(), source))

    def key(self, sender: Sender, source: Addr, digits: str) -> None:
        """``sender`` at ``source`` keys ``digits``, one event packet per tick."""
        for digit in digits:
            for data in sender.digit(digit):
                self.tick(1, lambda c, d=data: c.deliver(d, source))  # type: ignore[misc]

    @property
    def digits(self) -> str:
        return "".join(e.digit for e in self.events if isinstance(e, DigitReceived))

    @property
    def destinations(self) -> set[Addr]:
        return {addr for _data, addr in self.sent}

    def sent_since(self, index: int) -> set[Addr]:
        return {addr for _data, addr in self.sent[index:]}

    def loud(self, last: int = 10) -> bool:
        return bool(np.abs(np.concatenate(self.heard[-last:])).max() > 1000)


# ---------------------------------------------------------------- strangers


def test_a_strangers_audio_before_the_latch_is_dropped_and_never_latches() -> None:
    call = Call()
    call.talk(Sender(0xBAD), STRANGER, 50)
    assert call.stream.stats.latched is None
    assert call.stream.stats.foreign == 50 and call.stream.stats.received == 0
    assert call.destinations == {PHONE}  # the door's audio goes to the SDP's address only
    assert not call.loud()  # nothing of the stranger is played
    call.talk(Sender(0x600D), PHONE, 10)
    assert call.stream.stats.latched == PHONE and call.loud()
    assert call.destinations == {PHONE}


def test_a_strangers_digits_before_the_latch_are_ignored() -> None:
    call = Call()
    call.key(Sender(0xBAD), STRANGER, "1234")
    assert call.digits == ""
    assert call.stream.stats.dtmf_received == 0
    assert call.stream.stats.foreign > 0


def test_telephone_events_from_the_sdp_host_before_its_audio_are_ignored() -> None:
    """Not a stranger's address, but before the latch: digits count only from the latched peer
    (the SDP names a host, not who on it may key the code)."""
    call = Call()
    phone = Sender(0x600D)
    call.key(phone, (PHONE_IP, 4002), "99")
    assert call.digits == "" and call.stream.stats.early > 0
    assert call.stream.stats.latched is None
    call.talk(phone, PHONE, 3)
    call.key(phone, PHONE, "12")
    assert call.digits == "12"


def test_a_stranger_cannot_steal_the_stream_or_key_digits_after_the_latch() -> None:
    call = Call()
    phone, stranger = Sender(0x600D), Sender(0xBAD)
    call.talk(phone, PHONE, 10)
    assert call.stream.stats.latched == PHONE
    mark = len(call.sent)

    def both(c: Call) -> None:
        c.deliver(phone.audio(), PHONE)
        c.deliver(stranger.audio(), STRANGER)

    call.tick(50, both)  # fifty consistent packets with one SSRC: still a stranger
    call.key(stranger, STRANGER, "1234")
    assert call.stream.stats.latched == PHONE
    assert call.stream.destination == PHONE
    assert call.sent_since(mark) == {PHONE}
    assert call.digits == ""
    assert call.stream.stats.foreign >= 50 + 4 * 10
    assert call.events == []  # no digit, no time-out: the call goes on


def test_another_port_on_the_phones_host_cannot_move_the_latch() -> None:
    call = Call()
    call.talk(Sender(0x600D), PHONE, 5)
    call.talk(Sender(0x0BAD), (PHONE_IP, 5000), 20)
    assert call.stream.destination == PHONE
    assert call.stream.stats.foreign == 20


def test_a_stranger_keeps_no_dead_call_alive() -> None:
    """Only the peer's packets count as signs of life: a stranger cannot hold the line open."""
    call = Call()
    call.talk(Sender(0x600D), PHONE, 5)
    call.talk(Sender(0xBAD), STRANGER, int(TIMEOUT / 0.020) + 10)
    assert call.events == [TimedOut(TIMEOUT)]


def test_foreign_packets_are_logged_once_a_minute_not_per_packet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = Call()
    call.talk(Sender(0x600D), PHONE, 5)
    caplog.set_level(logging.INFO, logger="intercom.media.stream")
    caplog.clear()
    stranger = Sender(0xBAD)
    for i in range(5000):
        call.stream.receive_datagram(stranger.audio(), ("10.0.0.66", 1024 + i), call.now)
        call.stream.receive_datagram(b"\x00junk", ("10.0.0.67", 2000), call.now)
    assert call.stream.stats.foreign == 10_000
    assert len(caplog.records) == 1
    assert "10.0.0.66" in caplog.text and "10.0.0.5:4000" in caplog.text
    call.now += 61
    call.stream.receive_datagram(stranger.audio(), STRANGER, call.now)
    assert len(caplog.records) == 2


def test_malformed_packets_from_the_peer_are_counted_and_dropped() -> None:
    call = Call()
    call.talk(Sender(0x600D), PHONE, 5)
    for data in (b"", b"\x00garbage", bytes([0x80]) * 5, bytes([0xA0, 8]) + bytes(10) + b"\xff"):
        call.deliver(data, PHONE)
    assert call.stream.stats.malformed == 4
    assert call.stream.destination == PHONE


# ---------------------------------------------------------------- latching and the SDP


def test_a_nat_port_other_than_the_sdps_still_works() -> None:
    call = Call()
    call.tick(3)
    assert call.destinations == {PHONE}  # before the latch: the SDP's (ip, port)
    mark = len(call.sent)
    nat = (PHONE_IP, 61234)
    call.talk(Sender(0x600D), nat, 20)
    assert call.stream.stats.latched == nat
    # The first audio packet latches: every packet after the tick that read it goes there.
    assert call.sent_since(mark + 1) == {nat}
    assert call.loud()
    assert call.stream.stats.received == 20


def test_only_an_offer_or_answer_moves_the_latch() -> None:
    call = Call()
    old_phone = Sender(0x600D)
    call.talk(old_phone, PHONE, 5)
    new_ip = "10.0.0.7"
    call.stream.update(phone_sdp(new_ip, 6000), call.now)  # a re-INVITE: direct media, say
    mark = len(call.sent)
    call.tick(2)
    assert call.sent_since(mark) == {(new_ip, 6000)}  # the new SDP's address at once
    call.talk(old_phone, PHONE, 5)  # the old address is now a stranger
    assert call.stream.stats.foreign == 5
    new_phone = Sender(0x1234)
    call.talk(new_phone, (new_ip, 6002), 5)
    assert call.stream.stats.latched == (new_ip, 6002)
    call.talk(Sender(0x777), (new_ip, 6004), 5)  # latched again: that host's other ports are not
    assert call.stream.destination == (new_ip, 6002)
    call.key(new_phone, (new_ip, 6002), "5")
    assert call.digits == "5"


def test_the_same_sdp_again_lets_the_peer_re_latch_from_its_host() -> None:
    """A re-INVITE with an unchanged SDP (a phone whose NAT mapping moved) opens the latch for
    that host again; until its audio arrives, the door keeps sending where it did."""
    call = Call()
    call.talk(Sender(0x600D), (PHONE_IP, 7000), 5)
    call.stream.update(phone_sdp(), call.now)
    mark = len(call.sent)
    call.tick(2)
    assert call.sent_since(mark) == {(PHONE_IP, 7000)}
    call.talk(Sender(0x600E), (PHONE_IP, 7002), 3)
    assert call.stream.destination == (PHONE_IP, 7002)


def test_audio_in_another_payload_type_does_not_latch() -> None:
    call = Call()
    stranger_codec = Sender(0x600D)
    call.tick(5, lambda c: c.deliver(stranger_codec.audio(pt=0), PHONE))  # PCMU, not agreed
    assert call.stream.stats.latched is None and call.stream.stats.early == 5


def test_nothing_is_sent_before_start() -> None:
    stream = RtpStream(("PCMA",))
    stream.offer(DOOR)
    stream.receive_datagram(Sender(1).audio(), PHONE, 0.0)
    assert stream.destination is None and stream.datagrams_to_send() == []
    assert stream.stats.foreign == 1


def test_an_answered_offer_follows_the_same_rules() -> None:
    """An incoming call: the door answers the phone's offer, which names who may send."""
    stream = RtpStream(("PCMA",), rtp_timeout=TIMEOUT, jitter_ms=40)
    answer = stream.answer(phone_sdp(), DOOR)
    assert answer is not None and b"m=audio 40000 " in answer
    stream.start(phone_sdp(), 0.0)
    stranger, phone = Sender(0xBAD), Sender(0x600D)
    stream.receive_datagram(stranger.audio(), STRANGER, 0.0)
    for data in stranger.digit("1"):
        stream.receive_datagram(data, STRANGER, 0.0)
    stream.receive_datagram(phone.audio(), PHONE, 0.0)
    stream.tick(0.0, np.zeros(160, dtype=np.int16))
    assert stream.stats.latched == PHONE and stream.stats.foreign > 1
    assert stream.next_event() is None
    assert [addr for _d, addr in stream.datagrams_to_send()] == [PHONE]


def test_an_unusable_sdp_update_changes_nothing() -> None:
    call = Call()
    call.talk(Sender(0x600D), PHONE, 3)
    assert call.stream.update(b"v=0\r\nm=video 0 RTP/AVP 31\r\n", call.now) is False
    assert call.stream.destination == PHONE and call.stream.sending


def test_an_sdp_naming_a_host_name_is_refused_before_any_audio() -> None:
    """A name would need a DNS lookup per packet on the event loop: the SDP parser refuses it,
    so an offer gets 488 and an answer fails the call's start, and nothing is ever sent."""
    stream = RtpStream(("PCMA",), rtp_timeout=TIMEOUT, jitter_ms=40)
    assert stream.answer(phone_sdp(address="phone.example"), DOOR) is None
    stream.offer(DOOR)
    with pytest.raises(RemoteProtocolError):
        stream.start(phone_sdp(address="phone.example"), 100.0)
    assert stream.datagrams_to_send() == [] and stream.destination is None


# ---------------------------------------------------------------- hold and the time-out


@pytest.mark.parametrize(
    "hold",
    [
        phone_sdp(direction="sendonly"),
        phone_sdp(direction="inactive"),
        phone_sdp(address="0.0.0.0"),
    ],
    ids=["sendonly", "inactive", "zero-address"],
)
def test_hold_stops_sending_and_the_timeout_then_resume(hold: bytes) -> None:
    call = Call()
    nat = (PHONE_IP, 61234)
    call.talk(Sender(0x600D), nat, 5)
    call.stream.update(hold, call.now)
    assert call.stream.on_hold and not call.stream.sending
    mark = len(call.sent)
    call.tick(int(2 * TIMEOUT / 0.020))  # twice the time-out, in silence
    assert call.sent[mark:] == [] and call.events == []
    call.stream.update(phone_sdp(), call.now)
    assert call.stream.sending and not call.stream.on_hold
    mark = len(call.sent)
    call.tick(int(TIMEOUT / 0.020) + 5)
    # Resumed to where the peer's RTP came from (the NAT port), and silence now times out.
    assert call.sent_since(mark) == {nat}
    assert call.events == [TimedOut(TIMEOUT)]


def test_recvonly_from_them_keeps_sending_and_pauses_the_timeout() -> None:
    call = Call()
    call.talk(Sender(0x600D), PHONE, 5)
    call.stream.update(phone_sdp(direction="recvonly"), call.now)
    mark = len(call.sent)
    call.tick(int(2 * TIMEOUT / 0.020))
    assert len(call.sent) - mark == int(2 * TIMEOUT / 0.020) and call.events == []


def test_the_timeout_fires_once_and_the_peers_packets_prevent_it() -> None:
    call = Call()
    phone = Sender(0x600D)
    call.talk(phone, PHONE, int(2 * TIMEOUT / 0.020))
    assert call.events == []
    call.tick(int(TIMEOUT / 0.020) - 5)
    assert call.events == []
    call.tick(int(TIMEOUT / 0.020))
    assert call.events == [TimedOut(TIMEOUT)]


# ---------------------------------------------------------------- DTMF


def test_digits_from_the_peer_are_reported_once_each() -> None:
    call = Call()
    phone = Sender(0x600D)
    call.talk(phone, PHONE, 3)
    call.key(phone, PHONE, "0123456789*#ABCD")
    assert call.digits == "0123456789*#ABCD"
    assert call.stream.stats.dtmf_received == 16


def test_digits_go_out_as_rfc4733_to_the_peer_only() -> None:
    call = Call()
    call.talk(Sender(0x600D), PHONE, 3)
    mark = len(call.sent)
    assert call.stream.send_dtmf("1#9") == 3
    call.tick(60)
    assert call.sent_since(mark) == {PHONE}
    receiver = DtmfReceiver()
    packets = [RtpPacket.parse(data) for data, _addr in call.sent[mark:]]
    got = [d.digit for p in packets if p.payload_type == 101 for d in receiver.feed(p)]
    assert got == ["1", "#", "9"]
    seqs = [p.sequence for p in packets]  # events take audio's place in one sequence
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    assert packets[-1].payload_type == 8  # audio again after the last digit


def test_send_dtmf_refuses_a_bad_digit_before_queuing_any() -> None:
    call = Call()
    with pytest.raises(ValueError):
        call.stream.send_dtmf("12x")
    call.tick(20)
    assert {RtpPacket.parse(d).payload_type for d, _a in call.sent} == {8}


# ---------------------------------------------------------------- bounds


def test_the_dtmf_send_queue_is_capped() -> None:
    call = Call()
    assert call.stream.send_dtmf("1" * 10_000) == MAX_DTMF_QUEUE
    assert call.stream.send_dtmf("2") == 0
    assert call.stream.stats.dtmf_dropped == 10_000 - MAX_DTMF_QUEUE + 1


def test_one_datagram_per_tick_and_a_bounded_jitter_buffer() -> None:
    call = Call()
    phone = Sender(0x600D)
    for _ in range(5000):  # a burst far beyond the buffer, within one tick
        call.deliver(phone.audio(), PHONE)
    call.tick(1)
    assert len(call.sent) == 1
    jitter = call.stream._jitter
    assert jitter.buffered_ms <= 200
    assert jitter.stats.overflows >= 5000 - 10


def test_a_flood_of_strangers_grows_nothing() -> None:
    call = Call()
    call.talk(Sender(0x600D), PHONE, 5)
    stranger = Sender(0xBAD)
    datagrams = [stranger.audio() for _ in range(100)]

    def flood(n: int) -> None:
        for i in range(n):
            call.stream.receive_datagram(datagrams[i % 100], (f"10.1.{i % 250}.9", i), call.now)

    flood(2000)  # warm up: logging, caches
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        flood(50_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 10_000, grown
    assert call.stream.stats.foreign == 52_000
