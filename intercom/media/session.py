"""One call's audio: the socket, the 20 ms clock and the sound card around an RTP stream.

Every 20 ms tick, on a fixed monotonic schedule (a minute is 3000 packets, never "about" 3000),
the session reads what arrived on the socket into the stream, reads exactly one frame from the
source, lets the stream send it and hand back one frame from its jitter buffer, and plays that
into the sink. Both directions stay on that one clock in aligned frames, which is where the echo
canceller will sit.

Everything about the RTP itself (who may send it, latching, jitter, DTMF, the time-out, hold,
stats) is :class:`~intercom.media.stream.RtpStream`'s, which is pure code: this adapter owns only
the socket, the loop's clock, the source, the sink and the gains.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import secrets
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from intercom.media.audio import AudioSink, AudioSource, GainStage
from intercom.media.codecs import AudioCodec
from intercom.media.stream import (
    Addr,
    DigitReceived,
    MediaStats,
    PacingStats,
    RtpStream,
    TimedOut,
)
from intercom.ratelimit import LogLimiter

__all__ = ["MediaSession", "MediaSettings", "MediaStats", "PacingStats", "candidate_ports"]

log = logging.getLogger(__name__)

FRAME = 0.020
#: Datagrams read per tick at most: a flood cannot starve the loop (the rest wait in the kernel).
MAX_READS_PER_TICK = 64
#: A datagram longer than this is cut (and then fails to parse): RTP of 20 ms is ~200 bytes.
MAX_DATAGRAM = 2048
#: Random picks in the port range before every port is tried in turn.
RANDOM_PORT_TRIES = 16

_TIMESPEC = struct.Struct("@qq")
#: Python does not name it; 35 on Linux (asm-generic/socket.h), where the cmsg type is the same.
SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None
)
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def _disconnect(sock: socket.socket) -> None:
    """Dissolve a UDP socket's association (connect(2) to AF_UNSPEC), keeping its port.

    Python's ``connect`` cannot name AF_UNSPEC, so this one call goes through libc; it is
    plain Linux (and POSIX) behaviour, with no callback into Python.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    unspec = (ctypes.c_ubyte * 16)()  # a sockaddr whose family is 0, AF_UNSPEC
    if libc.connect(sock.fileno(), unspec, ctypes.sizeof(unspec)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot dissolve the RTP socket's association: {errno}")


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


def candidate_ports(port_min: int, port_max: int) -> Iterator[int]:
    """The even ports of ``port_min..port_max`` to try, in an order nobody can predict.

    A few random picks first (in a wide range one of them is free), then every even port once,
    from a random one on, so that a nearly full range still finds its last free port. A first
    call that always took the lowest port told a stranger where the door's audio is.
    """
    first = port_min + port_min % 2
    count = (port_max - first) // 2 + 1 if port_max >= first else 0
    if count <= 0:
        return
    for _ in range(min(RANDOM_PORT_TRIES, count)):
        yield first + 2 * secrets.randbelow(count)
    offset = secrets.randbelow(count)
    for i in range(count):
        yield first + 2 * ((offset + i) % count)


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
        self.stream = RtpStream(
            settings.codecs, rtp_timeout=settings.rtp_timeout, jitter_ms=settings.jitter_ms
        )
        self.sock: socket.socket | None = None
        self._limits = LogLimiter(log)
        #: The peer the socket is connected to (``RtpStream.sole_source``), or None.
        self.connected: Addr | None = None
        self.port = 0
        self.send_errors = 0
        self._clock: asyncio.TimerHandle | None = None
        self._clock_start = 0.0
        self._clock_n = 0
        self._source: AudioSource | None = None
        self._sink: AudioSink | None = None
        self._in_gain = GainStage(settings.input_gain_db)
        self._out_gain = GainStage(settings.output_gain_db)

    # ---------------------------------------------------------------- what the stream knows
    @property
    def stats(self) -> MediaStats:
        return self.stream.stats

    @property
    def remote(self) -> Addr | None:
        """Where the door sends its audio: the latched source, else the SDP's address."""
        return self.stream.destination

    @property
    def sending(self) -> bool:
        return self.stream.sending

    @property
    def on_hold(self) -> bool:
        return self.stream.on_hold

    @property
    def codec(self) -> AudioCodec | None:
        return self.stream.codec

    # ---------------------------------------------------------------- set-up
    def bind(self) -> int:
        """Bind an even RTP port, picked at random in the range, before any SDP names it."""
        s = self.settings
        ports = iter([0]) if s.port_min == 0 else candidate_ports(s.port_min, s.port_max)
        tried: set[int] = set()
        for port in ports:
            if port in tried:
                continue
            tried.add(port)
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
        local = (self.settings.host, self.port)
        return self.stream.offer(local) if offer is None else self.stream.answer(offer, local)

    async def start(self, remote_sdp: bytes) -> None:
        """Start when the call is answered: ``remote_sdp`` is their answer or their offer."""
        loop = asyncio.get_running_loop()
        stream = self.stream
        stream.start(remote_sdp, loop.time())
        assert stream.codec is not None and self.sock is not None
        rate = stream.codec.sample_rate
        # Opening a sound card scans the devices (a fraction of a second): off the loop.
        source = await asyncio.to_thread(self.open_source, rate)
        sink = await asyncio.to_thread(self.open_sink, rate)
        if self.sock is None:
            # The call ended while the sound card opened: stop() ran already, so close what
            # opened here rather than start a clock that would tick on a closed session.
            for end in (source, sink):
                with contextlib.suppress(Exception):
                    end.close()
            return
        self._source, self._sink = source, sink
        self._start_clock()
        log.info(
            "audio: %s to %s:%s, RTP port %s",
            stream.codec.name,
            *(stream.destination or ("-", "-")),
            self.port,
        )

    def update(self, remote_sdp: bytes) -> None:
        """A re-INVITE or UPDATE changed the remote description (hold, resume, direct media)."""
        if self.stream.update(remote_sdp, asyncio.get_running_loop().time()):
            log.info("audio %s", "on hold" if self.stream.on_hold else "resumed")

    def send_dtmf(self, digits: str) -> None:
        self.stream.send_dtmf(digits)

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
        stream, source, sink, sock = self.stream, self._source, self._sink, self.sock
        assert source is not None and sink is not None and sock is not None
        self._drain(sock, now)
        pcm = self._in_gain.apply(source.read(stream.frame_samples))
        heard = stream.tick(now, pcm)
        for data, addr in stream.datagrams_to_send():
            try:
                sock.sendto(data, addr)
            except OSError as exc:  # a full buffer or an ICMP error: this frame is lost
                self.send_errors += 1
                self._limits.log(logging.DEBUG, "send", now, "RTP send failed: %s", str(exc))
        sink.write(self._out_gain.apply(heard))
        if stream.sole_source != self.connected:
            self._follow(sock, stream.sole_source)
        while (event := stream.next_event()) is not None:
            if isinstance(event, DigitReceived):
                self.on_dtmf(event.digit)
            elif isinstance(event, TimedOut):
                self.on_timeout()

    def _follow(self, sock: socket.socket, peer: Addr | None) -> None:
        """Connect the socket to the stream's sole source, or undo that when it reopens."""
        try:
            if self.connected is not None:
                _disconnect(sock)
                if sock.getsockname()[1] != self.port:
                    # A port the kernel picked (bind to port 0) is given up with the association
                    # (__udp_disconnect without SOCK_BINDPORT_LOCK): take it back at once.
                    sock.bind((self.settings.host, self.port))
            self.connected = None
            if peer is not None:
                sock.connect(peer)
                self.connected = peer
        except (
            OSError
        ) as exc:  # the stream still filters by address: only the kernel's help is lost
            log.warning("RTP socket filter: %s", exc)

    def _drain(self, sock: socket.socket, now: float) -> None:
        """Read what arrived since the last tick into the stream.

        The socket is read on the clock rather than by its own loop callback: one wake-up per
        20 ms instead of two halves the CPU of a call, and the jitter buffer absorbs the up to
        20 ms a packet now waits in the kernel.
        """
        receive = self.stream.receive_datagram
        for _ in range(MAX_READS_PER_TICK):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable and the like
                self._limits.log(logging.DEBUG, "receive", now, "RTP receive error: %s", str(exc))
                continue
            receive(data, (addr[0], addr[1]), now, _kernel_time(ancillary))
