"""One call's audio: RTP in and out, paced on one clock, with the sound card or files at the ends.

Every 20 ms tick, on a fixed monotonic schedule (a minute is 3000 packets, never "about" 3000),
the session reads exactly one frame from the source and sends it, and plays exactly one frame
from the jitter buffer into the sink. Both directions stay on that one clock in aligned frames,
which is where the echo canceller will sit.

Symmetric RTP: the destination latches onto where the peer's RTP really comes from after a few
consistent packets, so audio flows both ways behind a FRITZ!Box or NAT. Received telephone-events
become digits; silence for ``rtp_timeout`` seconds (paused while on hold) hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from intercom import sdp
from intercom.media.audio import AudioSink, AudioSource, GainStage
from intercom.media.codecs import AudioCodec, create_codec
from intercom.media.dtmf import DtmfReceiver, DtmfSender
from intercom.media.jitter import JitterBuffer
from intercom.media.rtp import RtpError, RtpPacket
from intercom.media.seq import random_initial

log = logging.getLogger(__name__)

FRAME = 0.020
#: Consistent packets from a new source before the destination moves there.
LATCH_PACKETS = 3

Addr = tuple[str, int]

_TIMESPEC = struct.Struct("@qq")
#: Python does not name it; 35 on Linux (asm-generic/socket.h), where the cmsg type is the same.
SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None
)
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The SO_TIMESTAMPNS arrival time of a datagram (wall clock: good for gaps only)."""
    wanted = (socket.SOL_SOCKET, SO_TIMESTAMPNS)
    for level, kind, data in ancillary:
        if (level, kind) == wanted and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return float(sec + nsec / 1e9)
    return None


@dataclass(frozen=True)
class MediaSettings:
    host: str
    port_min: int = 0  # 0: any free port (tests, demo)
    port_max: int = 0
    codecs: tuple[str, ...] = ("G722", "PCMA", "PCMU")
    rtp_timeout: float = 30.0
    jitter_ms: int = 60
    input_gain_db: float = 0.0
    output_gain_db: float = 0.0


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
    malformed: int = 0
    foreign: int = 0  # packets from a source we did not (yet) latch onto, dropped
    latched: Addr | None = None
    ticks: int = 0
    dtmf_received: int = 0
    pacing: PacingStats = field(default_factory=PacingStats)
    #: Gaps between arriving audio packets: the other side's pacing, seen from here.
    arrival: PacingStats = field(default_factory=PacingStats)
    started_at: float | None = None
    #: Peak level of the last second of audio heard and sent, in dBFS (for the demo and doctor).
    level_in_dbfs: float = -120.0
    level_out_dbfs: float = -120.0


def _dbfs(pcm: np.ndarray) -> float:
    peak = max(int(pcm.max()), -int(pcm.min())) if pcm.size else 0
    return 20 * math.log10(peak / 32768) if peak else -120.0


class MediaSession:
    def __init__(
        self,
        settings: MediaSettings,
        open_source: Callable[[int], AudioSource],
        open_sink: Callable[[int], AudioSink],
        *,
        on_dtmf: Callable[[str], None] = lambda digit: None,
        on_timeout: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.open_source = open_source
        self.open_sink = open_sink
        self.on_dtmf = on_dtmf
        self.on_timeout = on_timeout
        self.stats = MediaStats()
        self.sock: socket.socket | None = None
        self.port = 0
        self.session_id = secrets.randbits(31)
        self.sdp_version = 0
        self.offered = False  # our last SDP was an offer: the remote SDP is the answer
        self.codec: AudioCodec | None = None
        self._codec_desc: sdp.Codec | None = None
        self._event_pt: int | None = None
        self._event_rate = 8000
        self.remote: Addr | None = None
        self.sending = False
        self.on_hold = False
        self._candidate: tuple[Addr, int] | None = None
        self._candidate_count = 0
        self.send_errors = 0
        self._arrived_at: float | None = None
        self._clock: asyncio.TimerHandle | None = None
        self._clock_start = 0.0
        self._clock_n = 0
        self._source: AudioSource | None = None
        self._sink: AudioSink | None = None
        self._in_gain = GainStage(settings.input_gain_db)
        self._out_gain = GainStage(settings.output_gain_db)
        self._jitter = JitterBuffer(frame_ms=20, depth_ms=settings.jitter_ms)
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_queue: deque[str] = deque()
        self._dtmf_packets: deque[RtpPacket] = deque()
        self._ssrc, self._seq, self._ts = random_initial()
        self._marker = True
        self._last_rx = 0.0
        self._last_pcm: np.ndarray | None = None
        self._timed_out = False
        self._level_in: list[float] = []
        self._level_out: list[float] = []

    # ---------------------------------------------------------------- set-up
    def bind(self) -> int:
        """Bind an even RTP port before any SDP names it."""
        s = self.settings
        ports = [0] if s.port_min == 0 else range(s.port_min + s.port_min % 2, s.port_max + 1, 2)
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((s.host, port))
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            if SO_TIMESTAMPNS is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock = sock
            self.port = sock.getsockname()[1]
            return self.port
        raise OSError(f"no free RTP port in {s.port_min}-{s.port_max} on {s.host}")

    def local_sdp(self, offer: bytes | None) -> bytes | None:
        """Our offer (``offer`` None) or our answer to ``offer``; None refuses it (488)."""
        ours = sdp.offer_codecs(self.settings.codecs)
        self.sdp_version += 1
        ids = {"session_id": self.session_id, "version": self.sdp_version}
        if offer is None:
            self.offered = True
            return sdp.build(self.settings.host, self.port, ours, **ids)
        try:
            remote = sdp.parse_audio(offer)
        except Exception as exc:
            log.warning("refusing an SDP offer: %s", exc)
            return None
        answer = sdp.answer(remote, self.settings.host, self.port, ours, **ids)
        if answer is not None:
            self.offered = False
            self._negotiate(remote)
        return answer

    def _negotiate(self, remote: sdp.AudioStream) -> bool:
        """Pick the codec (and telephone-event) from the remote description."""
        chosen = sdp.choose_codec(remote, sdp.offer_codecs(self.settings.codecs))
        if chosen is None:
            return False
        if self._codec_desc is None or chosen.name != self._codec_desc.name:
            self.codec = create_codec(chosen.name)
            self.stats.codec = chosen.name
            self._jitter = JitterBuffer(frame_ms=20, depth_ms=self.settings.jitter_ms)
        self._codec_desc = chosen
        event = sdp.pick_telephone_event(remote, chosen)
        self._event_pt = event.pt if event is not None else None
        if event is not None and event.rate != self._event_rate:
            self._event_rate = event.rate
            self._dtmf_rx = DtmfReceiver(clock_rate=event.rate)
        return True

    def _apply_remote(self, remote: sdp.AudioStream) -> None:
        """Follow the remote's direction: ``sendonly`` from them means we stop sending (we are
        on hold), ``recvonly``/``inactive`` means they stop; any hold pauses the RTP time-out."""
        zero = remote.address in ("0.0.0.0", "::") or remote.port == 0
        self.sending = not (zero or remote.direction in ("sendonly", "inactive"))
        self.on_hold = zero or remote.direction != "sendrecv"
        new = (remote.address, remote.port)
        if not zero and new != self.remote:
            self.remote = new
            self._candidate = None
        self._last_rx = asyncio.get_running_loop().time()

    async def start(self, remote_sdp: bytes) -> None:
        """Start when the call is answered: ``remote_sdp`` is their answer or their offer."""
        loop = asyncio.get_running_loop()
        remote = sdp.parse_audio(remote_sdp)
        if (self.offered or self.codec is None) and not self._negotiate(remote):
            raise ValueError("no codec in common with the other side")
        assert self.codec is not None and self.sock is not None
        self._apply_remote(remote)
        rate = self.codec.sample_rate
        # Opening a sound card scans the devices (a fraction of a second): off the loop.
        self._source = await asyncio.to_thread(self.open_source, rate)
        self._sink = await asyncio.to_thread(self.open_sink, rate)
        self._last_rx = loop.time()
        self.stats.started_at = loop.time()
        self._start_clock()
        log.info(
            "audio: %s to %s:%s, RTP port %s",
            self.codec.name,
            *(self.remote or ("-", "-")),
            self.port,
        )

    def update(self, remote_sdp: bytes) -> None:
        """A re-INVITE or UPDATE changed the remote description (hold, resume, direct media)."""
        try:
            remote = sdp.parse_audio(remote_sdp)
        except Exception as exc:
            log.warning("ignoring an unusable SDP update: %s", exc)
            return
        if self.offered:
            self._negotiate(remote)
        self._apply_remote(remote)
        log.info("audio %s", "on hold" if self.on_hold else "resumed")

    def send_dtmf(self, digits: str) -> None:
        self._dtmf_queue.extend(digits)

    async def stop(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        for end in (self._source, self._sink):
            if end is not None:
                with contextlib.suppress(Exception):
                    end.close()
        self._source = self._sink = None

    # ---------------------------------------------------------------- the clock
    def _start_clock(self) -> None:
        """Tick n runs at start + n * 20 ms: a late tick never moves the ones after it."""
        loop = asyncio.get_running_loop()
        self._clock_start = loop.time()
        self._clock_n = 0
        self._clock = loop.call_at(self._clock_start, self._on_clock)

    def _on_clock(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._tick(loop.time())
        except Exception:  # one bad frame must not silence the rest of the call
            log.exception("media tick failed")
        self._clock_n += 1
        self._clock = loop.call_at(self._clock_start + self._clock_n * FRAME, self._on_clock)

    def _tick(self, now: float) -> None:
        codec, source, sink = self.codec, self._source, self._sink
        assert codec is not None and source is not None and sink is not None
        self._drain(now)
        self.stats.ticks += 1
        # Out: one frame from the source, every tick, whether we send it or not.
        pcm = self._in_gain.apply(source.read(codec.frame_samples()))
        metering = self.stats.ticks % 5 == 0  # levels every 100 ms are plenty, and cost CPU
        if metering:
            self._level_out.append(_dbfs(pcm))
        if self.sending and self.remote is not None:
            self._send_frame(codec, pcm, now)
        self._ts = (self._ts + codec.timestamp_step()) & 0xFFFFFFFF
        # In: one frame to the sink, every tick.
        frame = self._jitter.pop(now)
        if frame.kind == "audio" and frame.payload is not None:
            try:
                heard = codec.decode(frame.payload)
            except Exception as exc:  # a corrupt payload is dropped, never fatal
                log.debug("undecodable payload: %s", exc)
                heard = np.zeros(codec.frame_samples(), dtype=np.int16)
            self._last_pcm = heard
        elif frame.kind == "concealed" and self._last_pcm is not None:
            # Conceal one lost frame by repeating the last one at half level.
            heard = (self._last_pcm // 2).astype(np.int16)
            self._last_pcm = heard
        else:
            heard = np.zeros(codec.frame_samples(), dtype=np.int16)
        heard = self._fit(heard, codec.frame_samples())
        if metering:
            self._level_in.append(_dbfs(heard))
        sink.write(self._out_gain.apply(heard))
        if len(self._level_in) >= 10:
            self.stats.level_in_dbfs = max(self._level_in)
            self.stats.level_out_dbfs = max(self._level_out)
            self._level_in.clear()
            self._level_out.clear()
        # Silence on the wire for too long: the other side is gone.
        timeout = self.settings.rtp_timeout
        if not self.on_hold and not self._timed_out and now - self._last_rx > timeout:
            self._timed_out = True
            log.warning("no RTP for %.0f s: hanging up", timeout)
            self.on_timeout()

    @staticmethod
    def _fit(pcm: np.ndarray, samples: int) -> np.ndarray:
        if pcm.size == samples:
            return pcm
        out = np.zeros(samples, dtype=np.int16)
        out[: min(samples, pcm.size)] = pcm[:samples]
        return out

    def _send_frame(self, codec: AudioCodec, pcm: np.ndarray, now: float) -> None:
        assert self.sock is not None and self.remote is not None
        if not self._dtmf_packets and self._dtmf_queue and self._event_pt is not None:
            digit = self._dtmf_queue.popleft()
            sender = DtmfSender(self._event_pt, clock_rate=self._event_rate)
            self._dtmf_packets.extend(sender.packets(digit, self._ssrc, 0, self._ts))
        if self._dtmf_packets:
            template = self._dtmf_packets.popleft()
            packet = RtpPacket(
                template.payload_type,
                self._seq,
                template.timestamp,
                self._ssrc,
                template.payload,
                marker=template.marker,
            )
        else:
            packet = RtpPacket(
                self._codec_pt(), self._seq, self._ts, self._ssrc, codec.encode(pcm), self._marker
            )
            self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            self.sock.sendto(packet.serialize(), self.remote)
        except OSError as exc:  # a full buffer or an ICMP error: this frame is lost, not the call
            self.send_errors += 1
            log.debug("RTP send failed: %s", exc)
        self.stats.sent += 1
        self.stats.pacing.add(now)

    def _codec_pt(self) -> int:
        assert self._codec_desc is not None
        return self._codec_desc.pt

    # ---------------------------------------------------------------- receiving
    def _drain(self, now: float) -> None:
        """Read what arrived since the last tick.

        The socket is read on the clock rather than by its own loop callback: one wake-up per
        20 ms instead of two halves the CPU of a call, and the jitter buffer absorbs the up to
        20 ms a packet now waits in the kernel.
        """
        sock = self.sock
        if sock is None:
            return
        for _ in range(64):  # bounded: a flood cannot starve the loop
            try:
                data, ancillary, _flags, addr = sock.recvmsg(2048, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable and the like
                log.debug("RTP receive error: %s", exc)
                continue
            self._arrived_at = _kernel_time(ancillary)
            self.received(data, (addr[0], addr[1]), now)

    def received(self, data: bytes, addr: Addr, now: float | None = None) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError as exc:
            self.stats.malformed += 1
            log.debug("dropped RTP from %s:%s: %s", addr[0], addr[1], exc)
            return
        if not self._accept_source(packet, addr):
            self.stats.foreign += 1
            return
        if now is None:
            now = asyncio.get_running_loop().time()
        self._last_rx = now
        self._timed_out = False
        self.stats.received += 1
        if self._event_pt is not None and packet.payload_type == self._event_pt:
            try:
                digits = self._dtmf_rx.feed(packet)
            except RtpError:
                return
            for digit in digits:
                self.stats.dtmf_received += 1
                self.on_dtmf(digit.digit)
            return
        if self._codec_desc is not None and packet.payload_type == self._codec_desc.pt:
            # The kernel's arrival time, when there is one: the peer's pacing, not our tick's.
            self.stats.arrival.add(self._arrived_at if self._arrived_at is not None else now)
            self._jitter.push(packet, now)

    def _accept_source(self, packet: RtpPacket, addr: Addr) -> bool:
        """Symmetric RTP: follow where the peer's RTP really comes from, once it is consistent."""
        if self.stats.latched == addr:
            return True
        key = (addr, packet.ssrc)
        if self._candidate == key:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count = key, 1
        if self._candidate_count >= LATCH_PACKETS:
            if self.remote != addr:
                log.info("RTP comes from %s:%s; sending there", *addr)
            self.stats.latched = addr
            self.remote = addr
            self._candidate = None
            return True
        # Before the first latch, take the audio while the source proves itself.
        return self.stats.latched is None
