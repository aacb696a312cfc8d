"""The SIP trace (``--sip-trace``, ``log.sip_trace``) as it may be written to the journal.

A trace is what users paste into forum threads, so it must show the SIP ladder and nothing that
opens a door or an account: the digest's response, nonce and cnonce are masked
(:func:`~intercom.sip.auth.mask_secrets`), and while a door code is set the body of a SIP INFO
carrying DTMF (``Signal=4``) is replaced, since the digits spell the code.
"""

from __future__ import annotations

import re

from intercom.sip.auth import mask_secrets

_DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
_CONTENT_TYPE = re.compile(r"^(?:content-type|c)[ \t]*:[ \t]*([^;\r\n]*)", re.IGNORECASE | re.M)
HIDDEN_DTMF = "(DTMF digits hidden: a door code is set)"


def trace_text(data: bytes, *, hide_dtmf: bool) -> str:
    """One SIP message as trace text, with its secrets masked."""
    text = data.decode("utf-8", "replace")
    head, sep, body = text.partition("\r\n\r\n")
    if hide_dtmf and body:
        match = _CONTENT_TYPE.search(head)
        if match is not None and match.group(1).strip().lower() in _DTMF_TYPES:
            body = HIDDEN_DTMF
    return mask_secrets(head) + sep + body
