"""SIP messages: parsing and serializing requests and responses (RFC 3261 section 7).

Pure code: bytes in, objects out, and back. Header names keep the spelling they arrived with, so a
captured message serializes back to the same bytes, while lookups are case-insensitive and know
the compact forms (``v`` for Via, ``i`` for Call-ID...). Malformed input raises
:class:`ParseError`, and nothing else whatever the bytes, which the transport logs and drops, or
answers with 400 where RFC 3261 says so. The input is hostile until proven otherwise: sizes are
capped (``MAX_MESSAGE``, ``MAX_HEADERS``, ``MAX_HEADER_LINE``, ``MAX_HOPS``) before the work they
bound, numbers are ASCII digits only, and nothing here is worse than linear in the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self, SupportsIndex

from intercom.ascii import is_digits, uint
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

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6][0-9]{2})(?: (.*)|)")
_REQUEST_RE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) (\S+) (SIP/2\.0)")
#: C0 controls and DEL, except HTAB (LWS) and LF (the line break once CRLFs are LFs): a lone CR,
#: NUL or ESC is in no header grammar, and echoing one back could end a header for some peer.
_CTL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: The empty line that ends a header section; line ends may be CRLF or LF, even mixed.
_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")
_CTL_BYTES = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])
# One list element: any run of plain text, <...> and "..." (with quoted pairs), up to a comma
# outside both. Possessive, so a missing > or " costs no backtracking: the run goes to the end.
_LIST_ITEM_RE = re.compile(r'(?:[^,"<]++|<[^>]*+>?|"[^"\\]*+(?:\\.[^"\\]*+)*+"?)++', re.DOTALL)

# -- Caps: what one datagram or TCP message may cost us (measured in docs/decisions.md)
#: The largest message taken, in bytes, by UDP or TCP: 16 KiB. RFC 3261 allows 65,535 bytes on
#: UDP, but the largest message in tests/data/sip is 1.3 KB, pjsip (Asterisk, many phones) sends
#: at most 4,000 bytes by default, Jami 8,000, and Azure's SIP gateway refuses anything over 10 KB.
MAX_MESSAGE = 16 * 1024
#: The most header lines (continuation lines included) in one message. Real messages carry 7 to
#: 15 (tests/data/sip); a heavy IMS or enterprise INVITE about 40.
MAX_HEADERS = 128
#: The longest header line, and the longest value once folded lines are joined, in characters.
#: The longest line seen here is 228; an RFC 8224 Identity header is about 1 KB.
MAX_HEADER_LINE = 4096
#: The most entries of each of Via, Route and Record-Route one message may carry. Each proxy adds
#: one (two with double record-routing); a door behind a PBX sees 1 to 3. A response copies the
#: request's Vias and a dialog keeps its Record-Route, so more would only amplify.
MAX_HOPS = 16
_HOP_HEADERS = ("via", "route", "record-route")


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name, expanding compact forms."""
    low = name.strip().lower()
    if low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low, name.strip())


_KEYS: dict[str, str] = {}
_MAX_KEYS = 1024


def header_key(name: str) -> str:
    """The lookup key of a header name: canonical and lower-case (``v`` and ``VIA`` give ``via``).

    Memoized, because every lookup and every index build needs it; the memo is emptied when it
    fills up, so header names invented by a peer cannot grow it.
    """
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) >= _MAX_KEYS:
            _KEYS.clear()
        _KEYS[name] = key
    return key


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and angle brackets.

    Empty elements are dropped. An unclosed quote or ``<`` runs to the end of the value, so
    nothing inside it is split. Linear in the value's length, at C speed.
    """
    parts = _LIST_ITEM_RE.findall(value) if '"' in value or "<" in value else value.split(",")
    return list(filter(None, map(str.strip, parts)))


class HeaderLines(list[tuple[str, str]]):
    """The ``(name, value)`` lines of a message, in order, with a lookup index built on demand.

    Code across the stack edits these lines in place (a Via stamped on top, a header added), so
    every method that changes the list drops the index; the next lookup rebuilds it in one pass.
    A lookup is then one dict access instead of a scan that canonicalizes every name.
    """

    __slots__ = ("_elements", "_index")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(items)
        self._index: dict[str, list[str]] | None = None
        self._elements: dict[str, list[str]] = {}

    def values(self, key: str) -> list[str]:
        """The values of the lines whose :func:`header_key` is ``key``, in order (do not edit)."""
        index = self._index
        if index is None:
            index = {}
            for name, value in self:
                index.setdefault(header_key(name), []).append(value)
            self._index = index
            self._elements = {}
        return index.get(key, _NONE)

    def elements(self, key: str) -> list[str]:
        """The values of a list header, comma-joined ones split, in order (do not edit)."""
        values = self.values(key)
        elements = self._elements.get(key)
        if elements is None:
            elements = [item for value in values for item in split_list(value)]
            self._elements[key] = elements
        return elements

    def _changed(self) -> None:
        self._index = None
        self._elements = {}

    def __setitem__(self, index: Any, value: Any) -> None:
        self._changed()
        super().__setitem__(index, value)

    def __delitem__(self, index: Any) -> None:
        self._changed()
        super().__delitem__(index)

    def __iadd__(self, other: Iterable[tuple[str, str]]) -> Self:  # type: ignore[override,misc]
        self._changed()
        return super().__iadd__(other)

    def __imul__(self, count: SupportsIndex) -> Self:
        self._changed()
        return super().__imul__(count)

    def append(self, item: tuple[str, str]) -> None:
        self._changed()
        super().append(item)

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        self._changed()
        super().extend(items)

    def insert(self, index: SupportsIndex, item: tuple[str, str]) -> None:
        self._changed()
        super().insert(index, item)

    def pop(self, index: SupportsIndex = -1) -> tuple[str, str]:
        self._changed()
        return super().pop(index)

    def remove(self, item: tuple[str, str]) -> None:
        self._changed()
        super().remove(item)

    def clear(self) -> None:
        self._changed()
        super().clear()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        super().sort(*args, **kwargs)

    def reverse(self) -> None:
        self._changed()
        super().reverse()


_NONE: list[str] = []


class Headers:
    """An ordered, case-insensitive multimap of header lines.

    Order matters in SIP (Via and Route are read top-down), so this is a list of pairs rather than
    a dict; :class:`HeaderLines` keeps an index beside it so that a lookup costs the same whatever
    a peer put in the message. ``items`` may be edited in place.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = HeaderLines(items)

    @property
    def items(self) -> HeaderLines:
        return self._items

    @items.setter
    def items(self, items: Iterable[tuple[str, str]]) -> None:
        self._items = HeaderLines(items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return list.__eq__(self._items, other._items)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._items.values(header_key(name)))

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._items.values(header_key(name))
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, with comma-joined list headers split into their elements."""
        key = header_key(name)
        if key in LIST_HEADERS:
            return list(self._items.elements(key))
        return list(self._items.values(key))

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` by one, at the position of the first."""
        key = header_key(name)
        items = self._items
        for i, (n, _) in enumerate(items):
            if header_key(n) == key:
                items[i:] = [(name, value)] + [
                    it for it in items[i + 1 :] if header_key(it[0]) != key
                ]
                return
        items.append((name, value))

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items[:] = [it for it in self._items if header_key(it[0]) != key]

    def copy(self) -> Headers:
        return Headers(self._items)


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
        """(number, method): a 32-bit number (RFC 3261 8.1.1.5) and a token."""
        raw = self._required("CSeq")
        parts = raw.split()
        number = uint(parts[0]) if len(parts) == 2 else None
        if number is None or number > 0xFFFFFFFF or not _TOKEN_RE.fullmatch(parts[1]):
            raise ParseError(f"malformed CSeq {raw[:60]!r}")
        return number, parts[1].upper()

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
        if length is None or uint(length) != len(self.body):
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


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """The header section and the body, split at the first empty line, CRLF or LF ended."""
    m = _BLANK_LINE_RE.search(data)
    if m is None:
        # A datagram with headers only and no blank line: tolerate it (some stacks omit it).
        return data, b""
    return data[: m.start()], data[m.end() :]


def _head_lines(text: str) -> list[str]:
    """The lines of a header section, CRLF or LF ended (the framer and the parser agree on it)."""
    return text.replace("\r\n", "\n").split("\n")


def _content_length(value: str) -> int:
    """A Content-Length value: ASCII digits only, at most what a message may hold."""
    text = value.strip()
    if text.startswith("-") and is_digits(text[1:]):
        raise ParseError(f"negative Content-Length {text[:20]}")
    length = uint(text)
    if length is None:
        raise ParseError(f"malformed Content-Length {value[:20]!r}")
    return length


def _parse_header_lines(lines: list[str]) -> tuple[Headers, list[str] | None]:
    """The headers, and the raw lines when they can be written back unchanged (no folding).

    ``lines`` is already capped in number; each line, and each value once folded lines are
    joined, is capped in length here.
    """
    items: list[tuple[str, str]] = []
    raw: list[str] | None = []
    folded: list[str] | None = None  # the parts of the last value while continuation lines come

    def unfold() -> None:
        value = " ".join(folded or ()).strip()
        if len(value) > MAX_HEADER_LINE:
            raise ParseError(f"folded header longer than {MAX_HEADER_LINE}", status_hint=513)
        items[-1] = (items[-1][0], value)

    for line in lines:
        if len(line) > MAX_HEADER_LINE:
            raise ParseError(
                f"header line of {len(line)} characters, more than {MAX_HEADER_LINE}",
                status_hint=513,
            )
        if not line:
            continue
        if line[0] in " \t":
            # Obsolete line folding: continue the previous header value.
            if not items:
                raise ParseError("header continuation before any header")
            if folded is None:
                folded = [items[-1][1]]
            folded.append(line.strip())
            raw = None
            continue
        if folded is not None:
            unfold()
            folded = None
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not _TOKEN_RE.fullmatch(name):
            raise ParseError(f"malformed header line {line[:60]!r}")
        items.append((name, value.strip()))
        if raw is not None:
            raw.append(line)
    if folded is not None:
        unfold()
    return Headers(items), raw


def parse_message(data: bytes) -> Message:
    """Parse one complete SIP message (a UDP datagram or a framed TCP message).

    Raises :class:`ParseError` and nothing else, whatever ``data`` holds. The caps (size, header
    lines, line length, hops) are checked before the work they bound, so a hostile datagram
    costs about what a normal one does.
    """
    if len(data) > MAX_MESSAGE:
        raise ParseError(f"message of {len(data)} bytes is too large", status_hint=513)
    # Leading CRLFs are keep-alives (RFC 5626) and allowed before a message.
    data = data.lstrip(b"\r\n")
    if not data:
        raise ParseError("empty message")
    head, body = split_head(data)
    breaks = head.count(b"\n")
    if breaks > MAX_HEADERS:
        raise ParseError(f"more than {MAX_HEADERS} header lines", status_hint=513)
    crlfs = head.count(b"\r\n")
    if crlfs:
        head = head.replace(b"\r\n", b"\n")
    if len(head.translate(None, _CTL_BYTES)) != len(head):
        bad = _CTL_RE.search(head.decode("latin-1"))
        raise ParseError(f"control character {bad.group() if bad else ''!r} in the header section")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"header section is not UTF-8: {exc}") from None
    lines = text.split("\n")
    start = lines[0].strip()
    headers, raw_lines = _parse_header_lines(lines[1:])
    msg: Message
    if start.startswith("SIP/"):
        m = _STATUS_RE.fullmatch(start)
        if not m:
            raise ParseError(f"malformed status line {start[:60]!r}")
        reason = (m.group(2) or "").strip()
        msg = SipResponse(headers=headers, status=int(m.group(1)), reason=reason)
    else:
        m = _REQUEST_RE.fullmatch(start)
        if not m:
            raise ParseError(f"malformed request line {start[:60]!r}")
        msg = SipRequest(headers=headers, method=m.group(1).upper(), uri=m.group(2))
    length_value = headers.get("Content-Length")
    if length_value is not None:
        length = _content_length(length_value)
        if length > len(body):
            raise ParseError(f"Content-Length {length} but only {len(body)} body bytes")
        body = body[:length]
    msg.body = body
    if raw_lines is not None and crlfs and crlfs == breaks:  # CRLF line ends only
        msg.wire_lines = (list(headers.items), raw_lines)
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        if headers.get(required) is None:
            raise ParseError(f"missing {required} header")
    for key in _HOP_HEADERS:
        count = len(headers.items.elements(key))
        if count > MAX_HOPS:
            name = canonical_name(key)
            raise ParseError(f"{count} {name} entries, more than {MAX_HOPS}", status_hint=400)
    _ = msg.cseq  # validates the CSeq syntax early
    return msg


def _framing_length(head: bytes) -> int:
    """The Content-Length of a header section, read as :func:`parse_message` reads it.

    The first Content-Length (or ``l``) header counts, folded lines joined; none means no body.
    Bytes that are not UTF-8 are taken one for one: the digits are ASCII either way, and
    parse_message refuses the message later.
    """
    lines = _head_lines(head.decode("latin-1"))
    for i in range(1, len(lines)):
        name, sep, value = lines[i].partition(":")
        if not sep or name[:1] in (" ", "\t") or header_key(name) != "content-length":
            continue
        parts = [value.strip()]
        for more in lines[i + 1 :]:
            if more[:1] not in (" ", "\t"):
                break
            parts.append(more.strip())
        return _content_length(" ".join(parts))
    return 0


_KEEPALIVE_RE = re.compile(rb"[\r\n]*")


class StreamParser:
    """Frames SIP messages on a byte stream (TCP) by Content-Length, RFC 3261 section 18.3.

    Linear in the bytes fed, however they are cut: the search for the empty line that ends a
    header section (found as parse_message finds it) resumes where the previous segment's
    search stopped, and each header section is read once. At most one message of
    ``max_message`` bytes is held; a longer one, or a Content-Length that promises one, raises
    :class:`ParseError`, after which the stream is unusable (the caller closes the connection).
    ``scanned`` counts the bytes searched, so tests can see the work done.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_message
        self._searched = 0  # where the next search for the blank line starts, in _buf
        self._need: int | None = None  # the framed message's total length, once its head is read
        self.scanned = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add stream bytes; return each complete message's bytes, for parse_message."""
        try:
            return self._feed(data)
        except ParseError:
            self._buf.clear()
            self._searched, self._need = 0, None
            raise

    def _feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0  # the start of the current message in buf
        while True:
            if self._need is None:
                # Skip keep-alive CRLFs between messages (RFC 5626).
                pos = _KEEPALIVE_RE.match(buf, pos).end()  # type: ignore[union-attr]
                start = max(pos, self._searched - 3)
                blank = _BLANK_LINE_RE.search(buf, start)
                self.scanned += (len(buf) if blank is None else blank.end()) - start
                if blank is None:
                    self._searched = len(buf)
                    if len(buf) - pos > self._max:
                        raise ParseError("stream buffer overflow: no message boundary found")
                    break
                length = _framing_length(bytes(buf[pos : blank.start()]))
                self._need = blank.end() - pos + length
                if self._need > self._max:
                    raise ParseError(f"message of {self._need} bytes is too large", status_hint=513)
            if len(buf) - pos < self._need:
                break
            out.append(bytes(buf[pos : pos + self._need]))
            pos += self._need
            self._need = None
            self._searched = pos
        del buf[:pos]
        self._searched = max(0, self._searched - pos)
        return out
