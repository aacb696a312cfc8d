"""SIP messages: parsing and serializing requests and responses (RFC 3261 section 7).

Pure code: bytes in, objects out, and back. Header names keep the spelling they arrived with, so a
captured message serializes back to the same bytes, while lookups are case-insensitive and know
the compact forms (``v`` for Via, ``i`` for Call-ID...). Malformed input raises
:class:`ParseError`, which the transport logs and drops, or answers with 400 where RFC 3261 says
so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from intercom.errors import ParseError

SIP_VERSION = "SIP/2.0"

#: Compact forms (RFC 3261 section 7.3.3 and later RFCs) mapped to canonical names.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Route",
        "Record-Route", "Content-Type", "Content-Length", "Authorization", "Proxy-Authorization",
        "WWW-Authenticate", "Proxy-Authenticate", "Expires", "Min-Expires", "User-Agent",
        "Server", "Allow", "Supported", "Require", "Unsupported", "Accept", "Retry-After",
        "Reason", "Event", "Subject", "Content-Encoding", "Allow-Events", "Refer-To",
        "Referred-By", "Accept-Contact", "Session-Expires", "Date", "Timestamp", "Warning",
        "Proxy-Require", "Min-SE", "P-Asserted-Identity", "Remote-Party-ID",
    )
}  # fmt: skip

#: Headers whose value is a comma-separated list that may also be split across header lines.
LIST_HEADERS = frozenset(
    {"via", "route", "record-route", "contact", "allow", "supported", "require", "accept",
     "unsupported", "proxy-require", "allow-events", "content-encoding"}
)  # fmt: skip

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS_RE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2})(?: (.*)|)$")
_REQUEST_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) (SIP/2\.0)$")

#: A UDP datagram larger than this is rejected before parsing (RFC 3261 allows up to 65,535 bytes).
MAX_MESSAGE = 65535


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name, expanding compact forms."""
    low = name.strip().lower()
    if low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low, name.strip())


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and angle brackets."""
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    in_angle = False
    escaped = False
    for ch in value:
        if escaped:
            buf.append(ch)
            escaped = False
            continue
        if in_quote and ch == "\\":
            buf.append(ch)
            escaped = True
            continue
        if ch == '"':
            in_quote = not in_quote
        elif not in_quote and ch == "<":
            in_angle = True
        elif not in_quote and ch == ">":
            in_angle = False
        elif ch == "," and not in_quote and not in_angle:
            item = "".join(buf).strip()
            if item:
                parts.append(item)
            buf = []
            continue
        buf.append(ch)
    item = "".join(buf).strip()
    if item:
        parts.append(item)
    return parts


@dataclass
class Headers:
    """An ordered, case-insensitive multimap of header lines.

    Order matters in SIP (Via and Route are read top-down), so this is a list of pairs rather than
    a dict; messages are small enough that linear scans cost nothing.
    """

    items: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def _key(name: str) -> str:
        return canonical_name(name).lower()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def get(self, name: str, default: str | None = None) -> str | None:
        key = self._key(name)
        for n, v in self.items:
            if self._key(n) == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, with comma-joined list headers split into their elements."""
        key = self._key(name)
        out: list[str] = []
        for n, v in self.items:
            if self._key(n) == key:
                if key in LIST_HEADERS:
                    out.extend(split_list(v))
                else:
                    out.append(v)
        return out

    def add(self, name: str, value: str) -> None:
        self.items.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` by one, at the position of the first."""
        key = self._key(name)
        for i, (n, _) in enumerate(self.items):
            if self._key(n) == key:
                self.items[i] = (name, value)
                self.items[i + 1 :] = [it for it in self.items[i + 1 :] if self._key(it[0]) != key]
                return
        self.items.append((name, value))

    def remove(self, name: str) -> None:
        key = self._key(name)
        self.items = [it for it in self.items if self._key(it[0]) != key]

    def copy(self) -> Headers:
        return Headers(list(self.items))


@dataclass
class SipMessage:
    """What requests and responses share: headers and a body."""

    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    #: The header lines as received, with a copy of the parsed headers: while the headers are
    #: unchanged, to_bytes() writes these lines back, so a relayed or logged message keeps the
    #: peer's exact spelling ("Content-Length:  0", "Proxy-Authenticate:Digest").
    wire_lines: tuple[list[tuple[str, str]], list[str]] | None = field(
        default=None, repr=False, compare=False
    )

    # Convenience accessors used throughout the stack.
    @property
    def call_id(self) -> str:
        return self._required("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        raw = self._required("CSeq")
        parts = raw.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ParseError(f"malformed CSeq {raw!r}")
        return int(parts[0]), parts[1].upper()

    @property
    def from_(self) -> str:
        return self._required("From")

    @property
    def to(self) -> str:
        return self._required("To")

    @property
    def vias(self) -> list[str]:
        return self.headers.get_all("Via")

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(f"missing {name} header")
        return value

    def _start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _original_lines(self) -> list[str] | None:
        if self.wire_lines is None:
            return None
        snapshot, lines = self.wire_lines
        if snapshot != self.headers.items:
            return None
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit() or int(length) != len(self.body):
            return None
        return lines

    def to_bytes(self) -> bytes:
        """Serialize, with Content-Length always set to the body's real length."""
        original = self._original_lines()
        if original is not None:
            head = "\r\n".join([self._start_line(), *original])
            return (head + "\r\n\r\n").encode("utf-8") + self.body
        lines = [self._start_line()]
        length_written = False
        for name, value in self.headers.items:
            if canonical_name(name) == "Content-Length":
                if length_written:
                    continue
                lines.append(f"{name}: {len(self.body)}")
                length_written = True
            else:
                lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class SipRequest(SipMessage):
    method: str = "OPTIONS"
    uri: str = ""

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri}>"


@dataclass
class SipResponse(SipMessage):
    status: int = 200
    reason: str = "OK"

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason}>"


Message = SipRequest | SipResponse


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    idx = data.find(b"\r\n\r\n")
    sep = 4
    if idx < 0:
        idx = data.find(b"\n\n")
        sep = 2
    if idx < 0:
        # A datagram with headers only and no blank line: tolerate it (some stacks omit it).
        return data, b""
    return data[:idx], data[idx + sep :]


def _parse_header_lines(lines: Iterable[str]) -> tuple[Headers, list[str] | None]:
    """The headers, and the raw lines when they can be written back unchanged (no folding)."""
    headers = Headers()
    raw: list[str] | None = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # Obsolete line folding: continue the previous header value.
            if not headers.items:
                raise ParseError("header continuation before any header")
            name, value = headers.items[-1]
            headers.items[-1] = (name, value + " " + line.strip())
            raw = None
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not _TOKEN_RE.match(name):
            raise ParseError(f"malformed header line {line[:60]!r}")
        headers.add(name, value.strip())
        if raw is not None:
            raw.append(line)
    return headers, raw


def parse_message(data: bytes) -> Message:
    """Parse one complete SIP message (a UDP datagram or a framed TCP message)."""
    if len(data) > MAX_MESSAGE:
        raise ParseError(f"message of {len(data)} bytes is too large", status_hint=513)
    # Leading CRLFs are keep-alives (RFC 5626) and allowed before a message.
    data = data.lstrip(b"\r\n")
    if not data:
        raise ParseError("empty message")
    head, body = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"header section is not UTF-8: {exc}") from None
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    headers, raw_lines = _parse_header_lines(lines[1:])
    msg: Message
    if start.startswith("SIP/"):
        m = _STATUS_RE.match(start)
        if not m:
            raise ParseError(f"malformed status line {start[:60]!r}")
        reason = (m.group(2) or "").strip()
        msg = SipResponse(headers=headers, status=int(m.group(1)), reason=reason)
    else:
        m = _REQUEST_RE.match(start)
        if not m:
            raise ParseError(f"malformed request line {start[:60]!r}")
        msg = SipRequest(headers=headers, method=m.group(1).upper(), uri=m.group(2))
    length_value = headers.get("Content-Length")
    if length_value is not None:
        text_value = length_value.strip()
        if text_value.startswith("-") and text_value[1:].isdigit():
            raise ParseError(f"negative Content-Length {text_value}")
        if not (text_value.isascii() and text_value.isdigit()):
            raise ParseError(f"malformed Content-Length {length_value!r}")
        length = int(text_value)
        if length > len(body):
            raise ParseError(f"Content-Length {length} but only {len(body)} body bytes")
        body = body[:length]
    msg.body = body
    if raw_lines is not None and "\r\n" in text and "\n" not in text.replace("\r\n", ""):
        msg.wire_lines = (list(headers.items), raw_lines)
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        if headers.get(required) is None:
            raise ParseError(f"missing {required} header")
    _ = msg.cseq  # validates the CSeq syntax early
    return msg


class StreamParser:
    """Frames SIP messages on a byte stream (TCP) by Content-Length, RFC 3261 section 18.3."""

    def __init__(self, max_buffer: int = 4 * MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_buffer

    def feed(self, data: bytes) -> list[bytes]:
        """Add stream bytes; return each complete message's bytes, for parse_message."""
        self._buf.extend(data)
        out: list[bytes] = []
        while True:
            # Skip keep-alive CRLFs between messages.
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            idx = self._buf.find(b"\r\n\r\n")
            if idx < 0:
                break
            head = bytes(self._buf[:idx])
            m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", head)
            length = int(m.group(1)) if m else 0
            total = idx + 4 + length
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        if len(self._buf) > self._max:  # what is left after framing, never a complete message
            self._buf.clear()
            raise ParseError("stream buffer overflow: no message boundary found")
        return out
