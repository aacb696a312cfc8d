"""The exception tree.

Following h11, a mistake of ours (``LocalProtocolError``) is kept apart from a mistake of the peer
(``RemoteProtocolError``): the first is a bug to fix, the second is input to log and drop, or to
answer with the SIP status code the error carries.
"""

from __future__ import annotations


class IntercomError(Exception):
    """Base of every error the intercom raises on purpose."""


class ConfigError(IntercomError):
    """The configuration is invalid; ``errors`` lists every problem, one line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class ProtocolError(IntercomError):
    """Base for SIP, SDP and RTP protocol violations."""

    def __init__(self, msg: str, *, status_hint: int = 400) -> None:
        super().__init__(msg)
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed; ``status_hint`` is the SIP status to answer with."""


class ParseError(RemoteProtocolError):
    """A SIP message could not be parsed."""


class AuthError(IntercomError):
    """A digest challenge could not be answered (unknown algorithm, missing field...)."""
