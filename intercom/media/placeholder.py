"""Until real audio lands: a call sends silence as RTP every 20 ms.

Sending from the start matters even without a microphone: a PBX behind NAT (FRITZ!Box, Asterisk
with ``rtp_symmetric``) learns where to send audio only from the RTP it receives, and some phones
drop a call that stays silent on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket

from intercom import sdp
from intercom.media.rtp import RtpError, RtpPacket

log = logging.getLogger(__name__)

FRAME = 0.020
SILENCE = {0: b"\xff" * 160, 8: b"\xd5" * 160}


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, stream: SilenceStream) -> None:
        self.stream = stream

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            RtpPacket.parse(data)
        except RtpError as exc:
            self.stream.malformed += 1
            log.debug("dropped RTP from %s: %s", addr, exc)
            return
        self.stream.received += 1


class SilenceStream:
    """One call's RTP socket: bound before the SDP is written, sending once the call is up."""

    def __init__(self, host: str, sock: socket.socket) -> None:
        self.host = host
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.sent = 0
        self.received = 0
        self.malformed = 0
        # One o= session id for the whole call, its version bumped with each new description.
        self.session_id = secrets.randbits(31)
        self.sdp_version = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def bind(cls, host: str, port_min: int = 0, port_max: int = 0) -> SilenceStream:
        """Bind an even port in [port_min, port_max] (any free port when both are 0)."""
        ports = [0] if port_min == 0 else range(port_min + port_min % 2, port_max + 1, 2)
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
                return cls(host, sock)
            except OSError:
                sock.close()
        raise OSError(f"no free RTP port in {port_min}-{port_max} on {host}")

    async def start(self, remote_sdp: bytes) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self), sock=self.sock
        )
        try:
            remote = sdp.parse_audio(remote_sdp)
        except Exception as exc:
            log.warning("no RTP: unusable remote SDP: %s", exc)
            return
        codec = next((c for c in remote.codecs if c.pt in SILENCE), None)
        if codec is None or remote.on_hold or remote.port == 0:
            return
        self._task = asyncio.create_task(self._send((remote.address, remote.port), codec.pt))

    async def _send(self, dest: tuple[str, int], pt: int) -> None:
        """Paced on a fixed monotonic schedule, so that a minute is 3000 packets, not 'about'."""
        loop = asyncio.get_running_loop()
        ssrc = secrets.randbits(32)
        seq = secrets.randbits(16)
        ts = secrets.randbits(32)
        start = loop.time()
        n = 0
        while self._transport is not None:
            pkt = RtpPacket(pt, seq + n, ts + 160 * n, ssrc, SILENCE[pt], marker=n == 0)
            self._transport.sendto(pkt.serialize(), dest)
            self.sent += 1
            n += 1
            delay = start + n * FRAME - loop.time()
            await asyncio.sleep(max(0.0, delay))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        else:
            self.sock.close()


def sdp_for(stream: SilenceStream, handle: int, offer: bytes | None) -> bytes | None:
    """Our SDP for a call: an offer with PCMU and PCMA, or the answer to ``offer``."""
    codecs = [sdp.PCMU, sdp.PCMA, sdp.TELEPHONE_EVENT]
    stream.sdp_version += 1
    ids = {"session_id": stream.session_id, "version": stream.sdp_version}
    if offer is None:
        return sdp.build(stream.host, stream.port, codecs, **ids)
    try:
        remote = sdp.parse_audio(offer)
    except Exception:
        return None
    return sdp.answer(remote, stream.host, stream.port, codecs, **ids)
