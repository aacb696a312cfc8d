"""RTP packets (RFC 3550), pure code: parse and serialize, with every length checked.

``RtpPacket.parse`` is the exact inverse of ``serialize`` for packets we build; for received ones it
handles CSRCs, the header extension and padding, and raises a specific error for each malformation
so that the receiver can log and drop it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from intercom.errors import RemoteProtocolError

HEADER = struct.Struct("!BBHII")


class RtpError(RemoteProtocolError):
    """A malformed RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile, data) when the X bit is set
    padding: int = 0

    def serialize(self) -> bytes:
        if len(self.csrc) > 15:
            raise ValueError("an RTP packet carries at most 15 CSRCs")
        first = 0x80 | (len(self.csrc) & 0x0F)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        out = bytearray(
            HEADER.pack(
                first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
            )
        )
        for c in self.csrc:
            out += struct.pack("!I", c)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4")
            out += struct.pack("!HH", profile, len(data) // 4) + data
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER.size:
            raise RtpError(f"RTP packet of {len(data)} bytes is shorter than its header")
        first, second, seq, ts, ssrc = HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise RtpError(f"RTP version {first >> 6}, expected 2")
        pos = HEADER.size
        cc = first & 0x0F
        if len(data) < pos + 4 * cc:
            raise RtpError("RTP packet truncated in its CSRC list")
        csrc = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        extension = None
        if first & 0x10:
            if len(data) < pos + 4:
                raise RtpError("RTP packet truncated in its extension header")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpError("RTP packet truncated in its extension")
            extension = (profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or pos + padding > end:
                raise RtpError(f"bad RTP padding length {padding}")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(second & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )
