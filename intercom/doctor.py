"""``intercom doctor``: check, in order, everything a door needs, and say in plain words what
is wrong and how to fix it.

Each check is one line. A check that cannot run because an earlier one failed says so instead of
adding a second, confusing error (no registration test against a PBX that does not answer).
The order follows the path of a ring: the config, the PBX (address, OPTIONS, registration, NAT),
the door's own hardware and services (:mod:`intercom.doctor_checks`), and with ``--call`` a real
call (:mod:`intercom.doctor_call`) on the phone that registered, so that the call goes out the
way the daemon's calls do.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from intercom.config import Config, load_config
from intercom.doctor_checks import Check, audio_checks, gpio_checks, mqtt_check, responses_in
from intercom.errors import ConfigError, ParseError
from intercom.phone import Phone, PhoneOptions
from intercom.sip.message import SipResponse, parse_message

__all__ = ["Check", "is_fritzbox", "pbx_product", "registration_failure", "report", "run"]

#: Sent during ``--call`` instead of the microphone: a steady beep the resident cannot miss, and
#: a known level to compare with what arrives.
CALL_TONE = "tone:1000:-10"

_FRITZ_FIX = (
    "on this FRITZ!Box set the door up under Telefonie > Telefoniegeräte > Neues Gerät "
    "einrichten > Telefon > LAN/WLAN (IP-Telefon); put the Benutzername given there in "
    "sip.username (not the internal number **62x) and that IP phone's Kennwort as the password; "
    "'Anmeldung aus dem Internet erlauben' only matters for a door outside the home network"
)


def pbx_product(reply: SipResponse) -> str:
    """What the PBX says it is (its Server or User-Agent header), or ""."""
    return (reply.headers.get("Server") or reply.headers.get("User-Agent") or "").strip()


def is_fritzbox(product: str, server: str) -> bool:
    """A FRITZ!Box, by its OPTIONS reply ("AVM FRITZ!Box 7590 ...") or by name (fritz.box)."""
    return "fritz" in product.lower() or "fritz" in server.lower()


def registration_failure(
    config: Config, code: int | None, reason: str, *, fritz: bool = False
) -> tuple[str, str]:
    """(what happened, how to fix it) for a registration that did not succeed."""
    sip = config.sip
    if code in (401, 403, 407):
        detail = f"refused with {code}: wrong user name or password"
        fix = (
            "check sip.username, sip.auth_username and the password "
            "(sip.password, sip.password_file or INTERCOM_SIP_PASSWORD)"
        )
    elif code == 404:
        detail = f"refused with 404: the PBX knows no user {sip.username!r}"
        fix = "check sip.username (and sip.domain, when the PBX serves several)"
    elif code is None:
        detail = f"no answer to REGISTER from {sip.server}:{sip.port}"
        fix = (
            f"wrong address, port or transport, or a firewall: check sip.server, sip.port "
            f"({sip.port}) and sip.transport ({sip.transport}), and that nothing drops SIP"
        )
    else:
        detail = f"refused with {code}: {reason}"
        fix = "see the PBX's log for why it refuses this door's REGISTER"
    if fritz:
        fix = f"{fix}; {_FRITZ_FIX}"
    return detail, fix


async def run(
    path: str,
    *,
    call: str | None = None,
    dtmf_wait: float = 10.0,
    use_mic: bool = False,
    say: Callable[[str], None] | None = None,
    timeout: float = 3.0,
) -> list[Check]:
    """Every check, in order. ``call`` places a test call to that target at the end; ``say``
    tells the person at the door what to do meanwhile (answer, press a key)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        detail = f"{len(exc.errors)} error(s): " + "; ".join(exc.errors)
        fix = "correct the keys named above (intercom check-config -c FILE lists them)"
        return [Check("config", False, detail, fix)]
    checks = [Check("config", True, f"{Path(path).name} is valid")]
    options = PhoneOptions(any_rtp_port=False, capture=True, play=None if use_mic else CALL_TONE)
    phone: Phone | None = None
    try:
        sip_checks, phone = await _sip_checks(config, options, timeout)
        checks.extend(sip_checks)
        checks.extend(await asyncio.to_thread(audio_checks, config))
        checks.extend(await asyncio.to_thread(mqtt_check, config, timeout))
        checks.extend(await gpio_checks(config))
        if call is not None:
            from intercom.doctor_call import place_test_call

            if phone is None:
                failed = next((c.name for c in sip_checks if not c.ok), "")
                why = _NOT_TRIED.get(failed, "the SIP checks failed")
                checks.append(Check("test call", False, f"not tried: {why}"))
            else:
                tone = None if use_mic else CALL_TONE
                checks.extend(await place_test_call(phone, call, dtmf_wait, tone, say or _quiet))
    finally:
        if phone is not None:
            await phone.stop(timeout=3.0)
    return checks


#: Why there is no test call, by the SIP check that failed first.
_NOT_TRIED = {
    "PBX address": "the PBX's address does not resolve",
    "PBX answers": "the PBX does not answer",
    "registration": "the door is not registered",
}


def _quiet(_text: str) -> None:
    """``say`` when nobody reads the prompts (``--json``)."""


async def _sip_checks(
    config: Config, options: PhoneOptions, timeout: float
) -> tuple[list[Check], Phone | None]:
    """Address, OPTIONS, registration and NAT; the phone is returned still running (registered,
    or unregistered with ``sip.register: false``) for the test call, None when it is no use."""
    sip = config.sip
    try:
        info = await asyncio.get_running_loop().getaddrinfo(sip.server, sip.port)
        address = str(info[0][4][0])
    except OSError as exc:
        fix = "check sip.server (a host name the Pi can resolve, or the PBX's IP address)"
        return [Check("PBX address", False, f"cannot resolve {sip.server}: {exc}", fix)], None
    checks = [Check("PBX address", True, f"{sip.server} is {address}")]
    answered, product = await _options(config, address, timeout)
    checks.append(answered)
    fritz = is_fritzbox(product, sip.server)
    if not answered.ok:
        if sip.register:
            checks.append(Check("registration", False, "not tried: the PBX does not answer"))
        return checks, None
    phone = Phone(config, options)
    try:
        await phone.start()
    except OSError as exc:
        fix = "another program uses sip.local_port (the intercom service?): stop it or set 0"
        return [*checks, Check("registration", False, str(exc), fix)], None
    if not sip.register:
        checks.append(Check("registration", True, "not used (sip.register: false)"))
        return checks, phone
    reg = await _registration(config, phone, timeout, fritz=fritz)
    if not reg[0].ok:
        await phone.stop(timeout=2.0)
        return [*checks, *reg], None
    return [*checks, *reg], phone


async def _options(config: Config, address: str, timeout: float) -> tuple[Check, str]:
    """Whether the PBX answers an OPTIONS, and what it says it is (for the FRITZ!Box hints)."""
    sip = config.sip
    if sip.transport != "udp":
        return Check("PBX answers", True, "not probed over TCP; see the registration check"), ""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((address, sip.port))
        host, port = sock.getsockname()
        call_id = f"doctor-{time.monotonic_ns()}@pi-intercom"
        request = (
            f"OPTIONS sip:{sip.effective_domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bKdoctor{time.monotonic_ns()}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{sip.username}@{sip.effective_domain}>;tag=doctor\r\n"
            f"To: <sip:{sip.effective_domain}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        try:
            await loop.sock_sendall(sock, request)
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
            reply = parse_message(data)
        except (TimeoutError, OSError, ParseError) as exc:
            if isinstance(exc, TimeoutError):
                reason = f"no answer in {timeout:g} s from"
            elif isinstance(exc, ConnectionRefusedError):
                reason = "nothing listens for SIP (the Pi got 'connection refused') at"
            elif isinstance(exc, ParseError):
                reason = f"an answer that is not SIP ({exc}) from"
            else:
                reason = f"cannot reach ({exc.strerror or exc})"
            fix = (
                f"wrong address, port or transport, or a firewall: check sip.server, sip.port "
                f"({sip.port}) and sip.transport ({sip.transport}); "
                "on a FRITZ!Box the door must be set up as an IP phone"
            )
            return Check("PBX answers", False, f"{reason} {address}:{sip.port}", fix), ""
    if not isinstance(reply, SipResponse):
        return Check("PBX answers", True, f"{address}:{sip.port} answered with a request"), ""
    product = pbx_product(reply)
    detail = f"{address}:{sip.port} answered OPTIONS with {reply.status}"
    if reply.status in (401, 407):
        detail += " (a password challenge: normal)"
    return Check("PBX answers", True, detail + (f"; it is {product}" if product else "")), product


async def _registration(
    config: Config, phone: Phone, timeout: float, *, fritz: bool
) -> list[Check]:
    result = await phone.wait_registration(max(timeout, 5.0) + 30.0)
    if result is None or result.state != "registered":
        code = result.code if result is not None else None
        reason = result.reason if result is not None else "no answer"
        detail, fix = registration_failure(config, code, reason, fritz=fritz)
        return [Check("registration", False, detail, fix)]
    ladder = _register_ladder(phone)
    steps = f" ({', then '.join(map(str, ladder))})" if ladder else ""
    checks = [Check("registration", True, f"registered for {result.expires} s{steps}")]
    agent = phone.agent
    assert agent is not None
    local = f"{agent.settings.local_host}:{agent.settings.local_port}"
    contact = agent.core.contact_uri()
    public = f"{contact.host}:{contact.port}"
    if public == local:
        detail = f"{local}; the PBX sees the same address (no NAT)"
    else:
        detail = f"{local}; the PBX sees {public} (NAT: Via received/rport), used in Contact"
    checks.append(Check("local address", True, detail))
    return checks


def _register_ladder(phone: Phone) -> list[int]:
    """The status codes the PBX answered REGISTER with, in order: usually 401, then 200."""
    return [
        msg.status
        for msg in responses_in(phone.wire)
        if msg.cseq[1] == "REGISTER" and msg.status >= 200
    ]


def report(checks: list[Check], as_json: bool) -> str:
    if as_json:
        return json.dumps({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]})
    return "\n".join(c.line() for c in checks)
