"""The SIP trace (``--sip-trace``, ``log.sip_trace``) as it may be written to the journal.

A trace is what users paste into forum threads, so it must show the SIP ladder and nothing that
opens a door or an account: the digest's response, nonce and cnonce are masked
(:func:`~intercom.sip.auth.mask_secrets`), and while a door code is set the body of a SIP INFO
carrying DTMF (``Signal=4``) is replaced, since the digits spell the code. Whether a body is DTMF
is decided by the same parser that hands it to the door (folded headers, compact forms, LF-only
lines and all), never by a pattern of our own that a peer's framing could slip past.
"""

from __future__ import annotations

from intercom.errors import ProtocolError
from intercom.sip.auth import mask_secrets
from intercom.sip.message import parse_message, split_head

_DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
HIDDEN_DTMF = "(DTMF digits hidden: a door code is set)"
HIDDEN_UNPARSED = "(the body of a message that does not parse, hidden: a door code is set)"


def trace_text(data: bytes, *, hide_dtmf: bool) -> str:
    """One SIP message as trace text, with its secrets masked."""
    text = data.decode("utf-8", "replace")
    if not hide_dtmf:
        return mask_secrets(text)
    try:
        msg = parse_message(data)
    except ProtocolError:
        msg = None
    if msg is not None and not msg.body:
        return mask_secrets(text)
    if msg is not None:
        content_type = (msg.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type not in _DTMF_TYPES:
            return mask_secrets(text)
    # The head as the parser split it, and the body replaced: a DTMF body, or the body of a
    # message the parser refused (nothing of it reaches the door, nor the journal).
    head, body = split_head(data.lstrip(b"\r\n"))
    hidden = HIDDEN_DTMF if msg is not None else HIDDEN_UNPARSED
    head_text = mask_secrets(head.decode("utf-8", "replace"))
    return head_text + "\r\n\r\n" + (hidden if body.strip() else "")
