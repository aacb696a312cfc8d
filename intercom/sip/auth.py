"""SIP digest authentication (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760), sans I/O.

Nothing here touches a socket or a clock, so the transaction layer can feed in a challenge it
received and get back the header value to resend with, and tests can pin every byte by injecting
the cnonce. Hashing is the only work done; what to do with a 401/407 is the caller's decision,
helped by :meth:`DigestClient.should_retry`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from intercom.errors import AuthError

__all__ = [
    "Challenge",
    "Credentials",
    "DigestClient",
    "digest_response",
    "mask_secrets",
    "parse_challenge",
]

# Normalised (upper-case) name -> (hashlib name, spelling on the wire). The wire spelling is the
# one the RFCs register, so a server that compares case-sensitively still recognises it.
_ALGORITHMS: dict[str, tuple[str, str]] = {
    "MD5": ("md5", "MD5"),
    "MD5-SESS": ("md5", "MD5-sess"),
    "SHA-256": ("sha256", "SHA-256"),
    "SHA-256-SESS": ("sha256", "SHA-256-sess"),
}

# The most parameters one challenge may carry: RFC 7616 defines nine, so a challenge with more is
# junk, and stopping there bounds the work a hostile header costs.
_MAX_PARAMS = 32

# Bounds the nonce-count table: a door intercom runs for months and every re-REGISTER may bring a
# fresh nonce, while only the last few can still be accepted by the server.
_MAX_TRACKED_NONCES = 32

# RFC 7230 token characters; anything else ends a parameter name or an unquoted value.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNQUOTED_VALUE_RE = re.compile(r"[^\s,\"]+")
# C0 controls and DEL. The realm, nonce and opaque go back to the server inside our header, and
# a CR or LF there would end it early (header injection), so a challenge carrying one is refused.
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: The qops ``authorize`` can answer, in the order it prefers them.
_QOPS = ("auth", "auth-int")


def _shown(text: str) -> str:
    """``text`` for an error message: short, so a hostile header cannot flood the log."""
    return repr(text[:40] + "..." if len(text) > 40 else text)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge, as received in a 401 or 407."""

    scheme: str
    realm: str
    nonce: str
    algorithm: str
    qop: tuple[str, ...]
    opaque: str | None
    stale: bool
    proxy: bool


@dataclass(frozen=True, slots=True)
class Credentials:
    """The account the intercom registers and calls with.

    The password is kept out of ``repr`` because dataclass reprs end up in logs and tracebacks.
    """

    username: str
    password: str = field(repr=False)


# --------------------------------------------------------------------------------------------
# Parsing


def _parse_quoted(value: str, pos: int) -> tuple[str, int]:
    """Reads the quoted-string whose opening quote is at ``pos``; returns (content, next pos).

    Backslash escapes are undone, since the hash is computed over the unquoted value (RFC 7616
    §3.4) and a realm containing ``\\"`` would otherwise never verify.
    """
    out: list[str] = []
    i = pos + 1
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise AuthError(f"unterminated quoted string in digest challenge: {_shown(value[pos:])}")


def _parse_params(value: str, pos: int) -> dict[str, str]:
    """Parses ``name=value`` pairs from ``pos`` on, with lower-cased names.

    Commas and whitespace are both accepted as separators because real PBXes emit everything
    from ``a="1",b="2"`` to newline-folded lists. The first occurrence of a name wins. A bare
    token without ``=`` is taken as the start of a further challenge and ends the parse. More
    than ``_MAX_PARAMS`` parameters is an error.
    """
    params: dict[str, str] = {}
    n = len(value)
    count = 0
    while True:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        if pos >= n:
            return params
        if count == _MAX_PARAMS:
            raise AuthError(f"digest challenge with more than {_MAX_PARAMS} parameters")
        count += 1
        m = _TOKEN_RE.match(value, pos)
        if m is None:
            raise AuthError(f"malformed digest challenge near {_shown(value[pos:])}")
        name = m.group().lower()
        pos = m.end()
        while pos < n and value[pos].isspace():
            pos += 1
        if pos >= n or value[pos] != "=":
            return params
        pos += 1
        while pos < n and value[pos].isspace():
            pos += 1
        if pos < n and value[pos] == '"':
            param_value, pos = _parse_quoted(value, pos)
        else:
            vm = _UNQUOTED_VALUE_RE.match(value, pos)
            param_value = vm.group() if vm else ""
            pos = vm.end() if vm else pos
        params.setdefault(name, param_value)


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge:
    """Parses a WWW-Authenticate / Proxy-Authenticate header value into a :class:`Challenge`.

    Raises :class:`AuthError`, and nothing else, for anything we could not answer: another
    scheme, a missing realm or nonce, an algorithm we do not have, a qop list without ``auth`` or
    ``auth-int`` (``auth-conf`` alone), or a value that cannot go back on the wire (a control
    character, text that is not valid Unicode). So the caller learns at parse time rather than
    after sending a request bound to be rejected, and :meth:`DigestClient.authorize` never
    raises for a challenge that parsed.
    """
    text = value.strip()
    m = _TOKEN_RE.match(text)
    if m is None:
        raise AuthError(f"empty or malformed authentication challenge: {_shown(value)}")
    scheme = m.group()
    if scheme.lower() != "digest":
        raise AuthError(
            f"unsupported authentication scheme {_shown(scheme)}: only Digest is supported"
        )
    params = _parse_params(text, m.end())
    if "realm" not in params:
        raise AuthError("digest challenge has no realm parameter")
    if "nonce" not in params:
        raise AuthError("digest challenge has no nonce parameter")
    algorithm = params.get("algorithm", "MD5").strip().upper() or "MD5"
    if algorithm not in _ALGORITHMS:
        supported = ", ".join(spelling for _, spelling in _ALGORITHMS.values())
        raise AuthError(
            f"unsupported digest algorithm {_shown(params['algorithm'])} (supported: {supported})"
        )
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and not any(q in qop for q in _QOPS):
        raise AuthError(f"no supported qop offered (got {_shown(', '.join(qop))})")
    for name in ("realm", "nonce", "opaque"):
        field_value = params.get(name, "")
        if _CTL_RE.search(field_value):
            raise AuthError(f"control character in the digest challenge's {name}")
        try:
            field_value.encode("utf-8")
        except UnicodeEncodeError:
            raise AuthError(f"the digest challenge's {name} is not valid Unicode") from None
    return Challenge(
        scheme="Digest",
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").strip().lower() == "true",
        proxy=proxy,
    )


# --------------------------------------------------------------------------------------------
# Hashing


def _hash(hash_name: str, data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.new(hash_name, raw).hexdigest()


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str = "",
    cnonce: str = "",
    qop: str | None = None,
    body: bytes = b"",
) -> str:
    """Computes the ``response`` value of a Digest credential.

    ``nc`` is the 8-hex-digit string exactly as sent, because the hash covers the wire text.
    ``qop`` None (or empty) gives the RFC 2069 form ``H(HA1:nonce:HA2)`` that SIP servers
    without qop still expect. Strings are hashed as UTF-8.
    """
    key = algorithm.strip().upper()
    if key not in _ALGORITHMS:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")
    hash_name = _ALGORITHMS[key][0]
    ha1 = _hash(hash_name, f"{username}:{realm}:{password}")
    if key.endswith("-SESS"):
        ha1 = _hash(hash_name, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _hash(hash_name, f"{method}:{uri}:{_hash(hash_name, body)}")
    elif qop in (None, "", "auth"):
        ha2 = _hash(hash_name, f"{method}:{uri}")
    else:
        raise AuthError(f"unsupported qop {qop!r}")
    if qop:
        return _hash(hash_name, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(hash_name, f"{ha1}:{nonce}:{ha2}")


# --------------------------------------------------------------------------------------------
# Answering


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default_cnonce() -> str:
    return secrets.token_hex(16)


class DigestClient:
    """Answers challenges for one account; keeps per-(realm, nonce) nonce counts.

    One cnonce is drawn per (realm, nonce) and reused while ``nc`` climbs, because the -sess
    algorithms fix HA1 at the first request after a challenge (RFC 2617 §3.2.2.2); a fresh cnonce
    per request would change the session key under the server's feet.
    """

    def __init__(
        self, credentials: Credentials, *, cnonce_factory: Callable[[], str] | None = None
    ) -> None:
        self._credentials = credentials
        self._cnonce_factory = cnonce_factory or _default_cnonce
        # (realm, nonce) -> (last nc used, cnonce); insertion order doubles as age for eviction.
        self._nonces: dict[tuple[str, str], tuple[int, str]] = {}

    def __repr__(self) -> str:
        return f"DigestClient(username={self._credentials.username!r})"

    @staticmethod
    def header_name(challenge: Challenge) -> str:
        """The request header that carries the answer to ``challenge`` (RFC 3261 §22.2, §22.3)."""
        return "Proxy-Authorization" if challenge.proxy else "Authorization"

    def should_retry(self, challenge: Challenge, previous_failures: int) -> bool:
        """Whether to resend after ``challenge``.

        ``stale=true`` means the password was right and only the nonce expired, so it is always
        worth answering and is not a failure. A plain challenge after we already answered one
        means the server rejected our credentials; retrying would only risk an account lockout.
        """
        if challenge.stale:
            return True
        return previous_failures == 0

    def _next_count(self, challenge: Challenge) -> tuple[int, str]:
        key = (challenge.realm, challenge.nonce)
        entry = self._nonces.pop(key, None)
        nc, cnonce = entry if entry is not None else (0, self._cnonce_factory())
        self._nonces[key] = (nc + 1, cnonce)
        while len(self._nonces) > _MAX_TRACKED_NONCES:
            del self._nonces[next(iter(self._nonces))]
        return nc + 1, cnonce

    def authorize(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        """Returns the Authorization / Proxy-Authorization header value answering ``challenge``.

        ``uri`` must be the Request-URI of the request being sent (RFC 3261 §22.4). ``auth`` is
        preferred over ``auth-int`` because the body hash breaks whenever a proxy rewrites SDP.
        """
        if challenge.scheme.lower() != "digest":
            raise AuthError(f"cannot answer a {challenge.scheme!r} challenge")
        algorithm = challenge.algorithm.upper()
        if algorithm not in _ALGORITHMS:
            raise AuthError(f"unsupported digest algorithm {challenge.algorithm!r}")
        qop = next((q for q in _QOPS if q in challenge.qop), None)
        if challenge.qop and qop is None:
            raise AuthError(f"no supported qop offered (got {', '.join(challenge.qop)})")

        sess = algorithm.endswith("-SESS")
        nc_text = ""
        cnonce = ""
        if qop is not None or sess:
            count, cnonce = self._next_count(challenge)
            nc_text = f"{count:08x}"
        creds = self._credentials
        response = digest_response(
            algorithm,
            creds.username,
            challenge.realm,
            creds.password,
            method,
            uri,
            challenge.nonce,
            nc_text if qop else "",
            cnonce,
            qop,
            body,
        )
        parts = [
            f"username={_quote(creds.username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={_ALGORITHMS[algorithm][1]}",
        ]
        # -sess without qop still needs the cnonce on the wire: the server cannot rebuild HA1
        # without it, even though RFC 2617 otherwise forbids cnonce when qop is absent.
        if cnonce:
            parts.append(f"cnonce={_quote(cnonce)}")
        if qop is not None:
            parts.append(f"qop={qop}")
            parts.append(f"nc={nc_text}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Trace masking

_AUTH_HEADER_RE = re.compile(
    r"(?:authorization|proxy-authorization|www-authenticate|proxy-authenticate"
    r"|authentication-info|proxy-authentication-info)[ \t]*:",
    re.IGNORECASE,
)
_SECRET_NAMES = r"(?<![\w\-.])(?P<name>response|cnonce|nonce|nextnonce|rspauth)"
# A quoted string that is not one of the secret values is matched first and left alone, so a
# username such as "nonce=1" cannot be mistaken for a parameter. The closing quote is optional
# and nothing is given back, so an unclosed quote costs one pass to the end of the line, not one
# per later quote (which was quadratic); _mask_match masks such a tail if a secret name is in it.
_SECRET_PARAM_RE = re.compile(
    r'(?P<quoted>"[^"\\\r\n]*+(?:\\.[^"\\\r\n]*+)*+"?)'
    rf"|{_SECRET_NAMES}(?P<eq>[ \t]*=[ \t]*)"
    r'(?P<value>"[^"\\\r\n]*+(?:\\.[^"\\\r\n]*+)*+"?|[^\s,"]*)',
    re.IGNORECASE,
)
_SECRET_NAME_RE = re.compile(_SECRET_NAMES + r"[ \t]*=", re.IGNORECASE)
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")


def _mask_match(m: re.Match[str]) -> str:
    quoted = m.group("quoted")
    if quoted is not None:
        # The pattern takes escaped quotes as pairs, so a final quote is always a closing one.
        closed = len(quoted) > 1 and quoted.endswith('"')
        if closed or not _SECRET_NAME_RE.search(quoted):
            return quoted
        return '"***'  # an unclosed quote with a secret's name in it: hide the rest of the line
    value = m.group("value")
    masked = '"***"' if value.startswith('"') else "***"
    return m.group("name") + m.group("eq") + masked


def mask_secrets(text: str) -> str:
    """Hides digest response, nonce and cnonce values in authentication header lines.

    Meant for the SIP trace: a logged response together with its nonce allows an offline
    dictionary attack on the password. Folded continuation lines of an auth header are masked
    too; every other byte, line endings included, is returned unchanged. The nonce-like
    ``nextnonce`` and ``rspauth`` of Authentication-Info are masked for the same reason.
    """
    out: list[str] = []
    in_auth_header = False
    for line in _LINE_RE.findall(text):
        if not line:
            continue
        if line[0] in " \t" and line.strip():
            masking = in_auth_header
        else:
            in_auth_header = _AUTH_HEADER_RE.match(line) is not None
            masking = in_auth_header
        out.append(_SECRET_PARAM_RE.sub(_mask_match, line) if masking else line)
    return "".join(out)
