"""The SIP trace shows the ladder, never a secret (issue 10, finding 4: `--sip-trace` showed the
`Signal=` lines of SIP INFO, which spell the door code)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from intercom.sip.trace import HIDDEN_DTMF, trace_text
from tests.unit.sipnet import make_endpoint, request

INFO = request(
    "INFO",
    "sip:door@127.0.0.1",
    via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-i",
    from_="<sip:620@127.0.0.1>;tag=a",
    to="<sip:door@127.0.0.1>;tag=b",
    call_id="c@x",
    cseq=2,
    headers=[("Content-Type", "application/dtmf-relay")],
    body=b"Signal=7\r\nDuration=160\r\n",
)


def test_dtmf_info_bodies_are_hidden_while_a_code_is_set() -> None:
    text = trace_text(INFO, hide_dtmf=True)
    assert "Signal" not in text and "7" not in text.split("\r\n\r\n", 1)[1]
    assert HIDDEN_DTMF in text
    assert text.startswith("INFO sip:door@127.0.0.1 SIP/2.0")  # the ladder is still there
    compact = INFO.replace(b"Content-Type: application/dtmf-relay", b"c: Application/DTMF")
    assert "Signal" not in trace_text(compact, hide_dtmf=True)


def test_without_a_code_the_digits_may_show() -> None:
    assert "Signal=7" in trace_text(INFO, hide_dtmf=False)


def test_other_bodies_and_digest_secrets() -> None:
    sdp = INFO.replace(b"application/dtmf-relay", b"application/sdp")
    assert "Signal=7" in trace_text(sdp, hide_dtmf=True)  # only DTMF bodies are hidden
    auth = INFO.replace(
        b"Content-Type:",
        b'Authorization: Digest username="door", nonce="n1", response="abc123"\r\nContent-Type:',
    )
    assert "abc123" not in trace_text(auth, hide_dtmf=False)


def test_the_endpoints_trace_hides_the_digits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="intercom.sip.trace")

    async def scenario() -> None:
        endpoint, sock = make_endpoint(trace=True, hide_dtmf=True)
        await endpoint.start(sock)
        endpoint.received(INFO, ("127.0.0.1", 5060))
        await endpoint.close()

    asyncio.run(scenario())
    traced = [r.getMessage() for r in caplog.records if r.name == "intercom.sip.trace"]
    assert any("INFO sip:door@127.0.0.1" in line for line in traced)
    assert not any("Signal" in line for line in traced)


def _lf_head(message: bytes) -> bytes:
    head, body = message.split(b"\r\n\r\n", 1)
    return head.replace(b"\r\n", b"\n") + b"\n\n" + body


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(lambda m: m.replace(b"Content-Type: ", b"Content-Type:\r\n "), id="folded"),
        pytest.param(lambda m: _lf_head(m), id="lf-only"),
        pytest.param(lambda m: m.replace(b"\r\n\r\nSignal", b"\n\r\nSignal"), id="lf-crlf"),
        pytest.param(lambda m: m.replace(b"Content-Type:", b"c:"), id="compact"),
        pytest.param(lambda m: m.replace(b"dtmf-relay", b"DTMF-Relay; x=1"), id="params"),
    ],
)
def test_every_framing_the_parser_takes_is_hidden_too(framing) -> None:  # type: ignore[no-untyped-def]
    """Review finding: a folded Content-Type and LF-only lines slipped past the trace's own
    pattern, while the parser (and so the door) took the digit."""
    from intercom.media.dtmf import parse_info
    from intercom.sip.message import parse_message

    data = framing(INFO)
    msg = parse_message(data)
    assert (
        parse_info(msg.headers.get("Content-Type") or "", msg.body) is not None
    )  # the door takes it
    assert "Signal" not in trace_text(data, hide_dtmf=True)


def test_an_unparsable_message_body_is_hidden_while_a_code_is_set() -> None:
    broken = INFO.replace(b"CSeq: 2 INFO", b"CSeq: x INFO")
    text = trace_text(broken, hide_dtmf=True)
    assert "Signal" not in text and text.startswith("INFO sip:door@127.0.0.1 SIP/2.0")
