"""Numbers as the wire writes them: ASCII digits only.

``str.isdigit()`` is true for ``²`` and ``٣``, which ``int()`` then refuses or reads as a number
no peer meant, so a parser that trusts it raises a ``ValueError`` of its own in the middle of
handling a message. Every number read from the network (SIP, SDP, RTP payloads, MQTT) goes
through :func:`uint` instead.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def is_digits(text: str) -> bool:
    """True for one or more ASCII digits and nothing else (no sign, no spaces, no ``²``)."""
    return _DIGITS.fullmatch(text) is not None


def uint(text: str, *, max_digits: int = 10) -> int | None:
    """``text`` (surrounding blanks ignored) as a non-negative int, or None when it is not one.

    ``max_digits`` bounds the work and the size of what a peer can make us hold: ten digits
    cover every SIP, SDP and RTP field (CSeq and timestamps are 32-bit).
    """
    text = text.strip()
    if len(text) > max_digits or not is_digits(text):
        return None
    return int(text)
