"""SDP offer/answer for one audio stream (RFC 4566, RFC 3264), pure code.

G.722, G.711 (PCMA, PCMU) and telephone-event (RFC 4733), in the order the config prefers. The
parser is lenient (real PBXs send odd SDP) but never guesses an address: a stream without one is
an error the caller answers with 488.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from intercom.ascii import uint
from intercom.errors import RemoteProtocolError

#: Static payload types of RFC 3551 that we can speak, by encoding name.
STATIC_PT = {"PCMU": 0, "PCMA": 8, "G722": 9}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: The most m= lines an offer may have. Our answer repeats every one (RFC 3264 6), so more would
#: let an offer make the answer as big as it likes; 16 is what Asterisk's pjmedia takes.
MAX_MEDIA = 16
_MAX_PT = 127  # RTP payload types are 7 bits
#: The most formats an m= line may list: one per RTP payload type. Phones list about 20 (and
#: Asterisk's pjmedia takes 72); more is junk that costs a microsecond each to read.
MAX_FORMATS = _MAX_PT + 1
_ADDRESS_TYPES = {"IP4": ipaddress.IPv4Address, "IP6": ipaddress.IPv6Address}


@dataclass(frozen=True)
class Codec:
    pt: int
    name: str
    rate: int
    channels: int = 1

    @property
    def rtpmap(self) -> str:
        channels = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.rate}{channels}"


PCMU = Codec(0, "PCMU", 8000)
PCMA = Codec(8, "PCMA", 8000)
#: G.722's RTP clock is 8000 Hz (RFC 3551 4.5.2) although its audio is sampled at 16000 Hz.
G722 = Codec(9, "G722", 8000)
TELEPHONE_EVENT = Codec(101, "telephone-event", 8000)
#: Offered beside G.722 because some phones send their digits on a 16 kHz clock with it.
TELEPHONE_EVENT_16K = Codec(102, "telephone-event", 16000)
AUDIO_CODECS = {"PCMU": PCMU, "PCMA": PCMA, "G722": G722}


def offer_codecs(names: list[str] | tuple[str, ...]) -> list[Codec]:
    """Our codecs in the config's order, then telephone-event (8000, and 16000 beside G.722)."""
    codecs = [AUDIO_CODECS[name.upper()] for name in names]
    codecs.append(TELEPHONE_EVENT)
    if G722 in codecs:
        codecs.append(TELEPHONE_EVENT_16K)
    return codecs


def pick_telephone_event(stream: AudioStream, codec: Codec) -> Codec | None:
    """The telephone-event of ``stream`` to use beside ``codec``: the same clock if offered."""
    events = [
        c for c in stream.codecs if c.name.lower() == "telephone-event" and c.rate in (8000, 16000)
    ]
    for event in events:
        if event.rate == codec.rate:
            return event
    return events[0] if events else None


@dataclass
class AudioStream:
    address: str
    port: int
    codecs: list[Codec] = field(default_factory=list)
    direction: str = "sendrecv"
    ptime: int | None = None
    fmtp: dict[int, str] = field(default_factory=dict)
    #: Every m= line of the offer, in order, and which one is this stream: an answer must carry
    #: as many m= lines as the offer (RFC 3264 6), with the ones we refuse set to port 0.
    media_lines: list[str] = field(default_factory=list)
    index: int = 0

    @property
    def on_hold(self) -> bool:
        return self.address in ("0.0.0.0", "::") or self.direction in ("sendonly", "inactive")


def _bad(what: str, value: str) -> RemoteProtocolError:
    shown = value[:60] + "..." if len(value) > 60 else value
    return RemoteProtocolError(f"bad {what} line {shown!r}", status_hint=488)


def _payload_type(text: str) -> int | None:
    pt = uint(text, max_digits=3)
    return pt if pt is not None and pt <= _MAX_PT else None


def _audio(value: str) -> tuple[int, list[int]] | None:
    """The port and payload types of an audio m= line; None for another kind of line."""
    parts = value.split()
    if len(parts) < 3 or parts[0] != "audio":
        return None
    port = uint(parts[1].split("/")[0], max_digits=5)  # a port count may follow a slash
    if len(parts) - 3 > MAX_FORMATS:
        raise _bad("m=", value)
    formats = [_payload_type(p) for p in parts[3:]]
    if port is None or port > 65535 or None in formats:
        raise _bad("m=", value)
    return port, [f for f in formats if f is not None]


def _address(value: str) -> str | None:
    """A c= line's address: an IP literal of the type named, never a name to resolve."""
    parts = value.split()
    if len(parts) < 3:
        return None
    addr = parts[2].split("/")[0]  # a multicast TTL or count follows a slash
    kind = _ADDRESS_TYPES.get(parts[1])
    try:
        if parts[0] != "IN" or kind is None:
            raise ValueError(parts[1])
        kind(addr)
    except ValueError:
        raise _bad("c=", value) from None
    return addr


def _rtpmap(arg: str) -> Codec | None:
    """``a=rtpmap:<pt> <name>/<rate>[/<channels>]``; None for one we cannot read (ignored)."""
    pt_text, _, enc = arg.partition(" ")
    bits = enc.strip().split("/")
    pt = _payload_type(pt_text)
    rate = uint(bits[1]) if len(bits) >= 2 else None
    if pt is None or not bits[0] or not rate:
        return None
    channels = uint(bits[2], max_digits=3) if len(bits) > 2 else None
    return Codec(pt, bits[0], rate, channels or 1)


def parse_audio(sdp: bytes) -> AudioStream:
    """The first audio stream of an SDP body.

    Raises :class:`RemoteProtocolError` (status 488) and nothing else, whatever the body holds.
    Numbers are ASCII digits within their range (a port up to 65535, a payload type up to 127);
    an address is an IP literal, since a host name would need a DNS lookup before each packet.
    """
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("SDP is not UTF-8", status_hint=488) from None
    session_addr: str | None = None
    session_dir = "sendrecv"
    stream: AudioStream | None = None
    in_audio = False
    found_audio = False
    rtpmaps: dict[int, Codec] = {}
    formats: list[int] = []
    media_lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            in_audio = False
            if len(media_lines) == MAX_MEDIA:
                raise RemoteProtocolError(
                    f"SDP has more than {MAX_MEDIA} m= lines", status_hint=488
                )
            if not (value.isascii() and value.isprintable()):
                raise _bad("m=", value)  # every m= line comes back in our answer
            media_lines.append(value)
            audio = None if found_audio else _audio(value)
            if audio is not None:
                port, formats = audio
                stream = AudioStream(address=session_addr or "", port=port, direction=session_dir)
                stream.index = len(media_lines) - 1
                in_audio = found_audio = True
            continue
        if kind == "c" and (in_audio or not media_lines):
            addr = _address(value)
            if addr is not None:
                if in_audio and stream is not None:
                    stream.address = addr
                else:  # before the first m= line: session level
                    session_addr = addr
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in DIRECTIONS:
                if in_audio and stream is not None:
                    stream.direction = name
                elif not media_lines:
                    session_dir = name
            elif name == "rtpmap" and in_audio:
                codec = _rtpmap(arg)
                if codec is not None:
                    rtpmaps[codec.pt] = codec
            elif name == "fmtp" and in_audio and stream is not None:
                pt_text, _, params = arg.partition(" ")
                pt = _payload_type(pt_text)
                if pt is not None:
                    stream.fmtp[pt] = params.strip()
            elif name == "ptime" and in_audio and stream is not None:
                ptime = uint(arg, max_digits=4)
                if ptime:
                    stream.ptime = ptime
    if stream is None:
        raise RemoteProtocolError("SDP has no audio stream", status_hint=488)
    stream.media_lines = media_lines
    if not stream.address:
        raise RemoteProtocolError("SDP audio stream has no connection address", status_hint=488)
    for pt in formats:
        if pt in rtpmaps:
            stream.codecs.append(rtpmaps[pt])
        else:
            for name, static in STATIC_PT.items():
                if static == pt:
                    stream.codecs.append(Codec(pt, name, 8000))
    return stream


def build(
    address: str,
    port: int,
    codecs: list[Codec],
    *,
    session_id: int,
    version: int = 1,
    direction: str = "sendrecv",
    ptime: int = 20,
    media_lines: list[str] | None = None,
    index: int = 0,
) -> bytes:
    """An SDP body with one audio stream; ``address`` must be a real, routable address."""
    if direction not in DIRECTIONS:
        raise ValueError(f"bad direction {direction!r}")
    fmts = " ".join(str(c.pt) for c in codecs)
    lines = [
        "v=0",
        f"o=pi-intercom {session_id} {version} IN IP4 {address}",
        "s=pi-intercom",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    before = (media_lines or [])[:index]
    after = (media_lines or [])[index + 1 :]
    lines += [_rejected(m) for m in before]
    lines.append(f"m=audio {port} RTP/AVP {fmts}")
    for c in codecs:
        lines.append(f"a=rtpmap:{c.pt} {c.rtpmap}")
        if c.name == "telephone-event":
            lines.append(f"a=fmtp:{c.pt} 0-16")
    lines.append(f"a=ptime:{ptime}")
    lines.append(f"a={direction}")
    lines += [_rejected(m) for m in after]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _rejected(media_line: str) -> str:
    """An m= line of the offer that we refuse: same media and format, port 0."""
    parts = media_line.split()
    media = parts[0] if parts else "audio"
    proto = parts[2] if len(parts) > 2 else "RTP/AVP"
    fmt = parts[3] if len(parts) > 3 else "0"
    return f"m={media} 0 {proto} {fmt}"


def choose_codec(remote: AudioStream, preferred: list[Codec]) -> Codec | None:
    """The first of the remote's codecs that we also speak: the offerer's order wins."""
    names = {c.name.upper() for c in preferred if c.name != "telephone-event"}
    for codec in remote.codecs:
        if codec.name.upper() in names:
            return codec
    return None


def answer(
    offer: AudioStream,
    address: str,
    port: int,
    preferred: list[Codec],
    *,
    session_id: int,
    version: int = 1,
) -> bytes | None:
    """Our answer to an offer, or None when no codec is shared (the caller sends 488)."""
    codec = choose_codec(offer, preferred)
    if codec is None:
        return None
    codecs = [codec]
    event = pick_telephone_event(offer, codec)
    if event is not None:
        codecs.append(event)
    direction = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(
        offer.direction, offer.direction
    )
    return build(
        address,
        port,
        codecs,
        session_id=session_id,
        version=version,
        direction=direction,
        media_lines=offer.media_lines,
        index=offer.index,
    )
