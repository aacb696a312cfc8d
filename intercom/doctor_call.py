"""``intercom doctor --call TARGET``: a real call from the door, measured end to end.

The door sends a steady test tone (or, with ``--mic``, its microphone) so the resident hears
that audio reaches the phone; the doctor measures what comes back from the phone, asks for a key
press and listens for the digit, then hangs up and checks that the PBX confirmed it. Each failure
names its likely cause in words a resident can act on, not a SIP status code alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from intercom.doctor_checks import SILENCE_DBFS, Check, responses_in
from intercom.errors import ParseError
from intercom.media.audio import parse_spec
from intercom.media.session import MediaStats
from intercom.phone import Phone
from intercom.sip.address import NameAddr
from intercom.sip.events import CallAnswered, CallEnded, CallRinging, DtmfReceived

#: How long the audio is measured at least: the media levels are the peak of each second.
AUDIO_SECONDS = 2.5
#: After a digit, how long to wait for more before hanging up.
DIGIT_LINGER = 1.5


def call_failure(target: str, reason: str, code: int | None, ring_timeout: int) -> tuple[str, str]:
    """(what happened, how to fix it) for a test call that was never answered.

    ``reason`` and ``code`` are those of :class:`intercom.sip.events.CallEnded`.
    """
    tag = f" ({code})" if code else ""
    if code in (404, 484, 604) or reason == "not_found":
        return (
            f"extension {target} does not exist on the PBX{tag}",
            "check the number (on a FRITZ!Box: **610 for the first DECT handset, **620 for the "
            "first IP phone, **9 for all) and the PBX's dial plan",
        )
    if code in (486, 600) or reason == "busy":
        return (
            f"{target} is busy{tag}",
            "hang up that phone, or turn off its do-not-disturb, and try again",
        )
    if code == 480:
        return (
            f"{target} is not reachable: no phone is registered for it{tag}",
            "switch the handset on and check that it is registered with the PBX",
        )
    if code == 408:
        return (
            f"{target} did not answer in time{tag}",
            "answer the phone when it rings; check that the handset is registered",
        )
    if reason == "no_answer":
        return (
            f"nobody answered {target} within call.ring_timeout ({ring_timeout} s)",
            "answer the phone when it rings (the doctor waits that long), or raise "
            "call.ring_timeout",
        )
    if code == 403 or (reason == "auth_failed" and code is None):
        return (
            f"the PBX does not allow this door to call {target}{tag}",
            "allow (internal) outgoing calls for the door's account on the PBX",
        )
    if reason == "auth_failed":
        return (
            f"the PBX refused the door's password for the call{tag}",
            "check sip.username, sip.auth_username and the password",
        )
    if reason == "unavailable":
        return (
            f"the PBX could not reach {target}{tag}",
            "check that the handset is on and registered, and the PBX's log",
        )
    if code in (603, 606) or reason == "rejected":
        return (f"{target} declined the call{tag}", "let it ring, and answer on that phone")
    if code == 488:
        return (
            f"{target} accepts none of the door's codecs{tag}",
            "allow G.711 (PCMA/PCMU) on the phone and the PBX, or change audio.codecs",
        )
    if reason == "timeout":
        return (
            "the PBX never answered the door's INVITE",
            "REGISTER got through, so look for a firewall or a router's SIP ALG that drops INVITE",
        )
    return (
        f"the call failed: {reason}{tag}",
        f"intercom ring -c FILE {target} --sip-trace shows every message",
    )


def answered_by(wire: list[tuple[str, float, bytes]]) -> str:
    """Who took the call, from the 200 OK to our INVITE: its Contact and the phone's own name."""
    for msg in reversed(list(responses_in(wire))):
        if not (msg.status == 200 and msg.cseq[1] == "INVITE"):
            continue
        who = ""
        with contextlib.suppress(ParseError):
            contact = NameAddr.parse(msg.headers.get("Contact") or "").uri
            who = f"{contact.user}@{contact.host}" if contact.user else contact.host
        product = (msg.headers.get("User-Agent") or msg.headers.get("Server") or "").strip()
        if who and product:
            return f"{who} ({product})"
        return who or product
    return ""


def _bye_answered(wire: list[tuple[str, float, bytes]]) -> int | None:
    for msg in responses_in(wire):
        if msg.cseq[1] == "BYE" and msg.status >= 200:
            return msg.status
    return None


@dataclass
class _Listened:
    """What the doctor measured while the call was up."""

    level_in: float = -120.0
    level_out: float = -120.0
    stats: MediaStats | None = None
    remote: tuple[str, int] | None = None
    digits: list[tuple[str, str]] = field(default_factory=list)
    ended: CallEnded | None = None
    seconds: float = 0.0


async def place_test_call(
    phone: Phone, target: str, dtmf_wait: float, tone: str | None, say: Callable[[str], None]
) -> list[Check]:
    """Ring ``target`` on the running ``phone``; one check per step of the call."""
    loop = asyncio.get_running_loop()
    while not phone.events.empty():  # registration events from before the call
        phone.events.get_nowait()
    ring_timeout = phone.config.call.ring_timeout
    say(f"calling {target}: answer that phone (the doctor waits up to {ring_timeout} s)")
    started = loop.time()
    handle = phone.call([target])
    rang: int | None = None
    answered: CallAnswered | None = None
    while answered is None:
        try:
            event = await asyncio.wait_for(phone.events.get(), ring_timeout + 10.0)
        except TimeoutError:
            phone.hangup(handle)
            detail, fix = call_failure(target, "no_answer", None, ring_timeout)
            return [Check("test call", False, detail, fix)]
        if getattr(event, "call", None) != handle:
            continue
        if isinstance(event, CallRinging):
            rang = event.code
        elif isinstance(event, CallAnswered):
            answered = event
        elif isinstance(event, CallEnded):
            detail, fix = call_failure(target, event.reason, event.code, ring_timeout)
            return [Check("test call", False, detail, fix)]
    ring = f"rang ({rang}) and " if rang else ""
    who = answered_by(phone.wire)
    after = loop.time() - started
    detail = f"{target} {ring}answered ({answered.code}) after {after:.1f} s"
    checks = [Check("test call", True, detail + (f" by {who}" if who else ""))]
    if dtmf_wait > 0:
        say(f"the call is up: press a key (0-9) on the phone within {dtmf_wait:g} s")
    heard = await _listen(phone, handle, dtmf_wait)
    checks.extend(_audio(heard, tone))
    door = phone.config.door
    checks.append(_dtmf(heard, dtmf_wait, hide=door is not None and bool(door.secret())))
    checks.append(await _hang_up(phone, handle, heard))
    return checks


async def _listen(phone: Phone, handle: int, dtmf_wait: float) -> _Listened:
    """Keep the call up for the audio to be measured and for a key press, whichever is longer
    (ending early once the digits stop coming)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    out = _Listened()
    last_digit: float | None = None
    while True:
        now = loop.time()
        media = phone.media.get(handle)
        if media is not None:
            out.stats = media.stats
            out.remote = media.remote
        if out.stats is not None:
            out.level_in = max(out.level_in, out.stats.level_in_dbfs)
            out.level_out = max(out.level_out, out.stats.level_out_dbfs)
        waited = now - start
        dtmf_done = (
            dtmf_wait <= 0
            or waited >= dtmf_wait
            or (last_digit is not None and now - last_digit >= DIGIT_LINGER)
        )
        if waited >= AUDIO_SECONDS and dtmf_done:
            break
        try:
            event = await asyncio.wait_for(phone.events.get(), 0.1)
        except TimeoutError:
            continue
        if getattr(event, "call", None) != handle:
            continue
        if isinstance(event, DtmfReceived):
            out.digits.append((event.digit, event.method))
            last_digit = loop.time()
        elif isinstance(event, CallEnded):
            out.ended = event
            break
    out.seconds = loop.time() - start
    if out.stats is None:
        out.stats = phone.media_stats.get(handle)
    return out


def _audio(heard: _Listened, tone: str | None) -> list[Check]:
    stats = heard.stats
    if stats is None or stats.started_at is None:
        fix = "the sound card or the RTP port could not be opened: see the checks above"
        return [Check("audio sent", False, "the call's audio never started", fix)]
    what = f"a {parse_spec(tone).freq_hz:g} Hz test tone" if tone else "the microphone"
    to = f" to {heard.remote[0]}:{heard.remote[1]}" if heard.remote else ""
    sent = f"{what}, peak {heard.level_out:.0f} dBFS, {stats.sent} packets of {stats.codec}{to}"
    if heard.level_out < SILENCE_DBFS:
        sent += "; that is silence: see the microphone check"
    checks = [
        Check("audio sent", True, sent)
        if stats.sent
        else Check(
            "audio sent",
            False,
            f"no RTP sent: the phone's answer gave no address to send to ({what})",
            "the phone or PBX put the call on hold at once; check its media settings",
        )
    ]
    if stats.received == 0:
        checks.append(
            Check(
                "audio heard",
                False,
                f"one-way audio: no RTP from the phone, nothing arrived in {heard.seconds:.0f} s",
                "NAT/firewall/media ports: open UDP media.rtp_port_min..rtp_port_max to the door "
                "and check the PBX's NAT (direct media) settings",
            )
        )
    elif heard.level_in < SILENCE_DBFS:
        detail = (
            f"{stats.received} packets arrive but they are silent "
            f"(peak {heard.level_in:.0f} dBFS): the phone's microphone is muted, or nobody spoke"
        )
        checks.append(Check("audio heard", True, detail))
    else:
        detail = f"peak {heard.level_in:.0f} dBFS from the phone, {stats.received} packets"
        checks.append(Check("audio heard", True, detail))
    return checks


def _dtmf(heard: _Listened, dtmf_wait: float, *, hide: bool = True) -> Check:
    """``hide``: a door code is set, so name how many keys arrived, not which (a report is
    pasted into bug reports, and the keys pressed may be the code)."""
    if dtmf_wait <= 0:
        return Check("DTMF", True, "not tested (--dtmf-wait 0)")
    if heard.digits:
        count = len(heard.digits)
        keys = f"{count} key{'s' if count > 1 else ''}"
        digits = keys if hide else "".join(d for d, _m in heard.digits)
        methods = sorted({"RFC 4733" if m == "rfc4733" else "SIP INFO" for _d, m in heard.digits})
        return Check("DTMF", True, f"received {digits} ({', '.join(methods)})")
    fix = (
        "set the phone/PBX to send DTMF as RFC 2833/4733 (telephone-event) or SIP INFO; "
        "in-band tones are not decoded"
    )
    if heard.ended is not None:
        return Check("DTMF", False, "not detected: the call ended before a key arrived", fix)
    return Check("DTMF", False, f"not detected: no key arrived in {dtmf_wait:g} s", fix)


async def _hang_up(phone: Phone, handle: int, heard: _Listened) -> Check:
    """End the call unless the phone did, and see the PBX confirm the BYE."""
    if heard.ended is not None:
        reason = heard.ended.reason
        if reason == "rtp_timeout":
            fix = "see the audio heard check: no RTP arrived"
            return Check("hang-up", False, "the door hung up: no audio arrived", fix)
        return Check("hang-up", True, f"the phone hung up first ({reason})")
    phone.hangup(handle)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 4.0
    code = _bye_answered(phone.wire)
    while code is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
        code = _bye_answered(phone.wire)
    if code is None:
        fix = "the PBX or the phone did not confirm the BYE; the phone may stay off the hook"
        return Check("hang-up", False, "no answer to BYE", fix)
    return Check("hang-up", True, f"hung up after {heard.seconds:.1f} s; BYE answered ({code})")
