"""SIP URIs, name-addr values (From, To, Contact, Route) and Via headers.

Only what a user agent needs: parse what PBXs actually send, keep unknown parameters intact, and
serialize back. Parameters are kept in order so that a Route or Contact is echoed byte-exact.
Whatever the text, parsing gives a value or :class:`ParseError`, in linear time; ports are ASCII
digits, and control characters are refused because a parsed value may be written into a header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from intercom.ascii import uint
from intercom.errors import ParseError

# Every group stops at a delimiter the next one starts with, so a match never backtracks more
# than once over the text: linear whatever a peer sends.
_URI_RE = re.compile(
    r"(?P<scheme>sips?|tel):"
    r"(?:(?P<user>[^@;?]*)@)?"
    r"(?P<hostport>\[[^\]]+\](?::[0-9]+)?|[^;?]*)"
    r"(?P<params>;[^?]*)?"
    r"(?P<headers>\?.*)?",
    re.IGNORECASE | re.DOTALL,
)
_VIA_RE = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(;.*)?", re.DOTALL)
#: C0 controls and DEL: in no URI, and a CR or LF passed on into a header we write would end it.
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: The same, except HTAB, which is linear white space around a name-addr or a Via's parts.
_CTL_NOT_TAB_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_controls(text: str, what: str, pattern: re.Pattern[str] = _CTL_RE) -> None:
    bad = pattern.search(text)
    if bad is not None:
        raise ParseError(f"control character {bad.group()!r} in {what} {text[:80]!r}")


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        params[name.strip().lower()] = value.strip() if sep else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(frozen=True)
class SipUri:
    scheme: str = "sip"
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        _check_controls(text, "SIP URI")
        # < and > are in no URI (RFC 3261 25.1): taking one would make a name-addr ambiguous.
        m = None if "<" in text or ">" in text else _URI_RE.fullmatch(text)
        if not m:
            raise ParseError(f"malformed SIP URI {text[:80]!r}")
        hostport = m.group("hostport")
        host, port = hostport, None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise ParseError(f"unbalanced [] in SIP URI {text[:80]!r}")
            host = hostport[: end + 1]
            rest = hostport[end + 1 :]
            if rest.startswith(":"):
                port = _port(rest[1:], text)
            elif rest:
                raise ParseError(f"junk after the IPv6 host in {text[:80]!r}")
        elif ":" in hostport:
            host, _, p = hostport.rpartition(":")
            port = _port(p, text)
        if not host and m.group("scheme").lower() != "tel":
            raise ParseError(f"SIP URI without host {text[:80]!r}")
        return cls(
            scheme=m.group("scheme").lower(),
            user=m.group("user"),
            host=host,
            port=port,
            params=_parse_params(m.group("params") or ""),
            headers=m.group("headers") or "",
        )

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}:{user}{self.host}{port}{_format_params(self.params)}{self.headers}"

    def with_params(self, **params: str | None) -> SipUri:
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def without_params(self) -> SipUri:
        return replace(self, params={}, headers="")

    @property
    def transport(self) -> str:
        return (self.params.get("transport") or "udp").lower()


def _port(text: str, whole: str) -> int:
    port = uint(text, max_digits=5) if text == text.strip() else None
    if port is None or not 0 < port < 65536:
        raise ParseError(f"bad port in {whole[:80]!r}")
    return port


@dataclass(frozen=True)
class NameAddr:
    """``"Display" <uri>;params`` as in From, To, Contact, Route and Record-Route."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        _check_controls(text, "name-addr", _CTL_NOT_TAB_RE)
        if text == "*":
            raise ParseError("wildcard contact is not a name-addr")
        display: str | None = None
        if "<" in text:
            lt = _find_unquoted(text, "<")
            gt = text.find(">", lt)
            if lt < 0 or gt < 0:
                raise ParseError(f"unbalanced <> in {text[:80]!r}")
            display = text[:lt].strip()
            if display.startswith('"') and display.endswith('"') and len(display) >= 2:
                display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            display = display or None
            uri = SipUri.parse(text[lt + 1 : gt])
            params = _parse_params(text[gt + 1 :])
        else:
            # addr-spec form: parameters after the URI belong to the header, not the URI.
            uri_text, _, rest = text.partition(";")
            uri = SipUri.parse(uri_text)
            params = _parse_params(rest)
        return cls(uri=uri, display=display, params=params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = dict(self.params)
        params["tag"] = tag
        return replace(self, params=params)

    def __str__(self) -> str:
        display = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def _find_unquoted(text: str, ch: str) -> int:
    in_quote = False
    escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif in_quote and c == "\\":
            escaped = True
        elif c == '"':
            in_quote = not in_quote
        elif c == ch and not in_quote:
            return i
    return -1


def tag_of(header_value: str) -> str | None:
    """The tag parameter of a From or To header value, without a full parse when possible."""
    return NameAddr.parse(header_value).tag


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        _check_controls(text, "Via", _CTL_NOT_TAB_RE)
        m = _VIA_RE.fullmatch(text)
        if not m:
            raise ParseError(f"malformed Via {text[:80]!r}")
        hostport = m.group(2)
        host, port = hostport, None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise ParseError(f"unbalanced [] in Via {text[:80]!r}")
            host = hostport[: end + 1]
            if hostport[end + 1 :].startswith(":"):
                port = _port(hostport[end + 2 :], text)
            elif hostport[end + 1 :]:
                raise ParseError(f"junk after the IPv6 host in Via {text[:80]!r}")
        elif ":" in hostport:
            host, _, p = hostport.rpartition(":")
            port = _port(p, text)
        return cls(m.group(1).upper(), host, port, _parse_params(m.group(3) or ""))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{_format_params(self.params)}"
