"""One call's RTP stream, sans-I/O: who may send it, what it plays, what goes out; pure code.

The stream never reads a clock and never touches a socket (the shape of aioquic's connection).
The media session feeds it what arrived with :meth:`RtpStream.receive_datagram` and drives it on
its 20 ms clock with :meth:`RtpStream.tick`, which takes the frame to send and returns the frame
to play; it then sends :meth:`RtpStream.datagrams_to_send` and acts on
:meth:`RtpStream.next_event` (digits, the RTP time-out). Everything here is therefore tested in
virtual time.

Who may send the call's RTP is decided by the SDP, never by the packets (issue 10):

* packets are taken only from the IP address the remote SDP names, on any port (a NAT, or a phone
  that sends from another socket than the one it announced, still works);
* the first valid audio packet from there *latches*: its (ip, port) becomes the one source taken
  and the one destination the door sends to (symmetric RTP); until then the door sends to the
  SDP's own (ip, port), never anywhere else;
* after the latch, only the latched source is taken. A new offer or answer (:meth:`update`) opens
  the latch again, for the new SDP's address; packets alone never move it;
* telephone-events before the latch are ignored, so a digit counts only from the latched peer;
* anything else is dropped, counted (``stats.foreign``) and logged at most once a minute. No state
  is kept per stranger, so a flood costs a counter, not memory.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import secrets
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from intercom import sdp
from intercom.errors import ProtocolError
from intercom.media.codecs import AudioCodec, Pcm, create_codec
from intercom.media.dtmf import DtmfReceiver, DtmfSender, events_for
from intercom.media.jitter import JitterBuffer
from intercom.media.rtp import RtpError, RtpPacket
from intercom.media.seq import random_initial
from intercom.ratelimit import LogLimiter

log = logging.getLogger(__name__)

Addr = tuple[str, int]

FRAME_MS = 20
#: Digits :meth:`RtpStream.send_dtmf` holds at most (about 8 s of key presses); more are dropped.
MAX_DTMF_QUEUE = 32
#: Seconds between two log lines about dropped (foreign or malformed) packets.
LOG_INTERVAL = 60.0
#: Levels are metered every this many ticks (100 ms) and reported over ten of those (1 s).
_METER_EVERY = 5
_METER_WINDOW = 10

_NO_ADDRESS = ("0.0.0.0", "::")


@dataclass
class PacingStats:
    """Welford's running mean and variance of the gaps between sent packets, in seconds."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    last: float | None = None

    def add(self, t: float) -> None:
        if self.last is not None:
            gap = t - self.last
            self.count += 1
            delta = gap - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (gap - self.mean)
        self.last = t

    @property
    def stdev(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


@dataclass
class MediaStats:
    codec: str = ""
    sent: int = 0
    received: int = 0
    #: Malformed packets from the peer (a stranger's packets are not even parsed: ``foreign``).
    malformed: int = 0
    #: Packets from an address other than the SDP's host or, once latched, the latched source.
    foreign: int = 0
    #: Packets from the SDP's host before its audio latched that were not audio (telephone-events
    #: among them): ignored, since digits count only from the latched peer.
    early: int = 0
    #: Where the peer's RTP comes from, once its first audio packet latched.
    latched: Addr | None = None
    ticks: int = 0
    dtmf_received: int = 0
    #: Digits :meth:`RtpStream.send_dtmf` refused because its queue was full.
    dtmf_dropped: int = 0
    pacing: PacingStats = field(default_factory=PacingStats)
    #: Gaps between arriving audio packets: the other side's pacing, seen from here.
    arrival: PacingStats = field(default_factory=PacingStats)
    #: The time of the first tick: the stream's clock started then.
    started_at: float | None = None
    #: Peak level of the last second of audio heard and sent, in dBFS (for the demo and doctor).
    level_in_dbfs: float = -120.0
    level_out_dbfs: float = -120.0


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """An RFC 4733 digit from the latched peer, reported once per key press."""

    digit: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No RTP from the peer for ``seconds`` while not on hold: the other side is gone."""

    seconds: float


StreamEvent = DigitReceived | TimedOut


def dbfs(pcm: Pcm) -> float:
    """Peak level in dBFS (-120 for digital silence): the levels in MediaStats and the doctor's."""
    peak = max(int(pcm.max()), -int(pcm.min())) if pcm.size else 0
    return 20 * math.log10(peak / 32768) if peak else -120.0


def _fit(pcm: Pcm, samples: int) -> Pcm:
    if pcm.size == samples:
        return pcm
    out = np.zeros(samples, dtype=np.int16)
    out[: min(samples, pcm.size)] = pcm[:samples]
    return out


def _ip(host: str) -> str | None:
    """``host`` as the socket layer writes an IP address, or None when it is a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class RtpStream:
    """The RTP of one call, between the door and the one peer its SDP names.

    ``codecs`` are ours in order of preference; ``rtp_timeout`` is how long the peer may stay
    silent (while not on hold) before :class:`TimedOut`; ``jitter_ms`` is the playout delay.
    """

    def __init__(
        self,
        codecs: tuple[str, ...] = ("G722", "PCMA", "PCMU"),
        *,
        rtp_timeout: float = 30.0,
        jitter_ms: int = 60,
    ) -> None:
        self.codecs = codecs
        self.rtp_timeout = rtp_timeout
        self.jitter_ms = jitter_ms
        self.stats = MediaStats()
        self.session_id = secrets.randbits(31)
        self.sdp_version = 0
        self.offered = False  # our last SDP was an offer: the remote SDP is the answer
        self.codec: AudioCodec | None = None
        self._codec_desc: sdp.Codec | None = None
        self._audio_pt = -1
        self._samples = 0  # per frame, at the codec's audio rate
        self._ts_step = 0  # per frame, on the RTP clock
        self._event_pt: int | None = None
        self._event_rate = 8000
        # Who may send: the SDP's address, the latched source, and whether the latch is open.
        self._sdp_addr: Addr | None = None
        self._latched: Addr | None = None
        self._armed = False
        self.sending = False
        self.on_hold = False
        self._jitter = JitterBuffer(frame_ms=FRAME_MS, depth_ms=jitter_ms)
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_queue: deque[str] = deque()
        self._dtmf_packets: deque[RtpPacket] = deque()
        self._ssrc, self._seq, self._ts = random_initial()
        self._marker = True
        self._last_rx = 0.0
        self._last_pcm: Pcm | None = None
        self._timed_out = False
        self._level_in = -120.0
        self._level_out = -120.0
        self._meterings = 0
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: deque[StreamEvent] = deque()
        self._limits = LogLimiter(log, LOG_INTERVAL)

    # ---------------------------------------------------------------- where RTP goes and comes from
    @property
    def destination(self) -> Addr | None:
        """Where the door sends: the latched source, else the SDP's (ip, port); None before."""
        return self._latched or self._sdp_addr

    @property
    def sole_source(self) -> Addr | None:
        """The one address RTP is taken from now, or None while the SDP's host may still latch
        (before the first audio packet, and after each new offer or answer). The adapter
        connects its socket to it, so the kernel drops everyone else's packets before they
        take a place in the socket's queue: a stranger's flood cannot crowd out the phone."""
        return None if self._armed else self._latched

    @property
    def frame_samples(self) -> int:
        """Samples per 20 ms frame at the codec's audio rate (the session reads that many)."""
        return self._samples

    # ---------------------------------------------------------------- offer and answer
    def offer(self, local: Addr) -> bytes:
        """Our SDP offer, for RTP at ``local``."""
        self.sdp_version += 1
        self.offered = True
        return sdp.build(
            local[0],
            local[1],
            sdp.offer_codecs(self.codecs),
            session_id=self.session_id,
            version=self.sdp_version,
        )

    def answer(self, offer: bytes, local: Addr) -> bytes | None:
        """Our answer to ``offer``, for RTP at ``local``; None refuses it (488)."""
        try:
            remote = sdp.parse_audio(offer)
        except ProtocolError as exc:  # the peer's SDP: refused (488), never fatal
            log.warning("refusing an SDP offer: %s", exc)
            return None
        self.sdp_version += 1
        ours = sdp.offer_codecs(self.codecs)
        answer = sdp.answer(
            remote, local[0], local[1], ours, session_id=self.session_id, version=self.sdp_version
        )
        if answer is not None:
            self.offered = False
            self._negotiate(remote)
        return answer

    def start(self, remote_sdp: bytes, now: float) -> None:
        """The call is answered: ``remote_sdp`` is their answer or their offer.

        Raises :class:`~intercom.errors.RemoteProtocolError` for an unreadable SDP and ValueError
        when no codec is shared. The stream's clock starts at its first :meth:`tick`.
        """
        remote = sdp.parse_audio(remote_sdp)
        if (self.offered or self.codec is None) and not self._negotiate(remote):
            raise ValueError("no codec in common with the other side")
        self._apply_remote(remote, now)

    def update(self, remote_sdp: bytes, now: float) -> bool:
        """A re-INVITE or UPDATE changed the remote description (hold, resume, new address).

        Opens the latch again for the new SDP's address: the one way the source may change.
        False (and nothing changes) when the SDP is unusable.
        """
        try:
            remote = sdp.parse_audio(remote_sdp)
        except ProtocolError as exc:  # the peer's SDP: ignored, never fatal
            log.warning("ignoring an unusable SDP update: %s", exc)
            return False
        if self.offered:
            self._negotiate(remote)
        self._apply_remote(remote, now)
        return True

    def _negotiate(self, remote: sdp.AudioStream) -> bool:
        """Pick the codec (and telephone-event) from the remote description."""
        chosen = sdp.choose_codec(remote, sdp.offer_codecs(self.codecs))
        if chosen is None:
            return False
        if self._codec_desc is None or chosen.name != self._codec_desc.name:
            self.codec = create_codec(chosen.name)
            self.stats.codec = chosen.name
            self._samples = self.codec.frame_samples(FRAME_MS)
            self._ts_step = self.codec.timestamp_step(FRAME_MS)
            self._jitter = JitterBuffer(frame_ms=FRAME_MS, depth_ms=self.jitter_ms)
        self._codec_desc = chosen
        self._audio_pt = chosen.pt
        event = sdp.pick_telephone_event(remote, chosen)
        self._event_pt = event.pt if event is not None else None
        if event is not None and event.rate != self._event_rate:
            self._event_rate = event.rate
            self._dtmf_rx = DtmfReceiver(clock_rate=event.rate)
        return True

    def _apply_remote(self, remote: sdp.AudioStream, now: float) -> None:
        """Follow the remote's address and direction.

        ``sendonly`` from them means we stop sending (we are on hold), ``recvonly``/``inactive``
        means they stop; any hold pauses the RTP time-out. A hold without an address (0.0.0.0 or
        port 0) keeps the peer and its latch. Any other description opens the latch for its own
        host; a changed (ip, port) also forgets the old latch, so the door sends to the new
        address until the peer's audio latches again.
        """
        no_address = remote.address in _NO_ADDRESS or remote.port == 0
        # The SDP parser admits only IP literals in c= (a name would need a lookup per packet).
        ip = None if no_address else _ip(remote.address)
        self.sending = ip is not None and remote.direction not in ("sendonly", "inactive")
        self.on_hold = no_address or remote.direction != "sendrecv"
        if ip is not None:
            new = (ip, remote.port)
            if new != self._sdp_addr:
                self._sdp_addr = new
                self._latched = self.stats.latched = None
            self._armed = True
        self._last_rx = now

    # ---------------------------------------------------------------- receiving
    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, arrival: float | None = None
    ) -> None:
        """One datagram that reached the RTP port from ``addr``.

        ``arrival`` is the kernel's receive time when known (wall clock, good for gaps only): the
        peer's pacing, rather than the tick's that read it.
        """
        latched = addr == self._latched
        if not latched and not (self._armed and self._sdp_addr and addr[0] == self._sdp_addr[0]):
            self._drop_foreign(addr, now)
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError as exc:
            self.stats.malformed += 1
            self._limits.info(
                "malformed",
                now,
                "dropped a malformed RTP packet from %s:%s (%d so far): %s",
                *addr,
                self.stats.malformed,
                str(exc),
            )
            return
        pt = packet.payload_type
        if self._armed and pt == self._audio_pt and packet.payload:
            # The first valid audio packet from the SDP's host after an offer or answer latches.
            self._armed = False
            if addr != self._latched:
                if self._sdp_addr != addr:
                    log.info("RTP comes from %s:%s; sending there", *addr)
                self._latched = self.stats.latched = addr
            latched = True
        if not latched:
            self.stats.early += 1
            return
        self._last_rx = now
        self._timed_out = False
        self.stats.received += 1
        if pt == self._audio_pt:
            self.stats.arrival.add(arrival if arrival is not None else now)
            self._jitter.push(packet, now)
        elif pt == self._event_pt:
            try:
                digits = self._dtmf_rx.feed(packet)
            except RtpError:  # feed() counts its own malformations; this is a second guard
                self.stats.malformed += 1
                return
            for digit in digits:
                self.stats.dtmf_received += 1
                self._events.append(DigitReceived(digit.digit))

    def _drop_foreign(self, addr: Addr, now: float) -> None:
        self.stats.foreign += 1
        peer = self.destination
        self._limits.warning(
            "foreign",
            now,
            "dropped RTP from %s:%s, not the call's peer (%s); %d dropped so far",
            *addr,
            "none yet" if peer is None else f"{peer[0]}:{peer[1]}",
            self.stats.foreign,
        )

    # ---------------------------------------------------------------- the 20 ms clock
    def tick(self, now: float, pcm: Pcm) -> Pcm:
        """One frame each way: ``pcm`` (a frame of :attr:`frame_samples`) is sent now if the
        peer takes audio; the frame returned is what to play. Checks the RTP time-out."""
        codec = self.codec
        assert codec is not None, "start() before tick()"
        stats = self.stats
        if stats.started_at is None:
            stats.started_at = self._last_rx = now
        stats.ticks += 1
        metering = stats.ticks % _METER_EVERY == 0  # every 100 ms is plenty, and costs CPU
        if metering:
            self._level_out = max(self._level_out, dbfs(pcm))
        destination = self._latched or self._sdp_addr
        if self.sending and destination is not None:
            self._outbox.append((self._next_packet(codec, pcm).serialize(), destination))
            stats.sent += 1
            stats.pacing.add(now)
        self._ts = (self._ts + self._ts_step) & 0xFFFFFFFF
        heard = self._playout(codec, now)
        if metering:
            self._level_in = max(self._level_in, dbfs(heard))
            self._meterings += 1
            if self._meterings >= _METER_WINDOW:
                stats.level_in_dbfs, stats.level_out_dbfs = self._level_in, self._level_out
                self._level_in = self._level_out = -120.0
                self._meterings = 0
        if not self.on_hold and not self._timed_out and now - self._last_rx > self.rtp_timeout:
            self._timed_out = True
            log.warning("no RTP for %.0f s: hanging up", self.rtp_timeout)
            self._events.append(TimedOut(self.rtp_timeout))
        return heard

    def _next_packet(self, codec: AudioCodec, pcm: Pcm) -> RtpPacket:
        """This tick's packet: the next of a digit's telephone-events, else the audio frame."""
        if not self._dtmf_packets and self._dtmf_queue and self._event_pt is not None:
            digit = self._dtmf_queue.popleft()
            sender = DtmfSender(self._event_pt, clock_rate=self._event_rate)
            self._dtmf_packets.extend(sender.packets(digit, self._ssrc, 0, self._ts))
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        if self._dtmf_packets:
            t = self._dtmf_packets.popleft()
            return RtpPacket(t.payload_type, seq, t.timestamp, self._ssrc, t.payload, t.marker)
        marker, self._marker = self._marker, False
        return RtpPacket(self._audio_pt, seq, self._ts, self._ssrc, codec.encode(pcm), marker)

    def _playout(self, codec: AudioCodec, now: float) -> Pcm:
        frame = self._jitter.pop(now)
        samples = self._samples
        if frame.kind == "audio" and frame.payload is not None:
            try:
                heard = codec.decode(frame.payload)
            except Exception as exc:  # a corrupt payload is dropped, never fatal
                self._limits.log(logging.DEBUG, "undecodable", now, "undecodable: %s", str(exc))
                heard = np.zeros(samples, dtype=np.int16)
            self._last_pcm = heard
        elif frame.kind == "concealed" and self._last_pcm is not None:
            # Conceal one lost frame by repeating the last one at half level.
            heard = (self._last_pcm // 2).astype(np.int16)
            self._last_pcm = heard
        else:
            heard = np.zeros(samples, dtype=np.int16)
        return _fit(heard, samples)

    # ---------------------------------------------------------------- out to the session
    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """What to send, and where (always the SDP's or the latched address), since last asked."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> StreamEvent | None:
        return self._events.popleft() if self._events else None

    def send_dtmf(self, digits: str) -> int:
        """Queue ``digits`` as RFC 4733 events, one digit after the other in place of audio.

        Raises ValueError for a character that is not a DTMF digit (before queuing any). At most
        :data:`MAX_DTMF_QUEUE` digits wait; the rest are dropped and counted. Returns how many
        were queued. The digits themselves are never logged (they may be a door code).
        """
        events_for(digits)
        room = MAX_DTMF_QUEUE - len(self._dtmf_queue)
        taken = digits[: max(room, 0)]
        self._dtmf_queue.extend(taken)
        dropped = len(digits) - len(taken)
        if dropped:
            self.stats.dtmf_dropped += dropped
            log.warning("DTMF queue full: %d digit(s) dropped", dropped)
        if self._codec_desc is not None and self._event_pt is None:
            log.warning("the other side takes no RFC 4733 telephone-events: digits wait unsent")
        return len(taken)
