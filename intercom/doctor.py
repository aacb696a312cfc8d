"""``intercom doctor``: check, in order, everything a door needs, and say in plain words what
is wrong and how to fix it.

Each check is one line. A check that cannot run because an earlier one failed says so instead of
adding a second, confusing error (no registration test against a PBX that does not answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from intercom.config import Config, load_config
from intercom.errors import ConfigError, ParseError
from intercom.sip.message import SipResponse, parse_message


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"[{mark}] {self.name}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix else "")


async def run(path: str, *, timeout: float = 3.0) -> list[Check]:
    checks: list[Check] = []
    try:
        config = load_config(path)
    except ConfigError as exc:
        detail = f"{len(exc.errors)} error(s): " + "; ".join(exc.errors)
        fix = "correct the keys named above (intercom check-config -c FILE lists them)"
        return [Check("config", False, detail, fix)]
    checks.append(Check("config", True, f"{Path(path).name} is valid"))
    sip = config.sip
    try:
        info = await asyncio.get_running_loop().getaddrinfo(sip.server, sip.port)
        address = str(info[0][4][0])
        checks.append(Check("PBX address", True, f"{sip.server} is {address}"))
    except OSError as exc:
        fix = "check sip.server (a host name the Pi can resolve, or the PBX's IP address)"
        checks.append(Check("PBX address", False, f"cannot resolve {sip.server}: {exc}", fix))
        return checks + await asyncio.to_thread(_mqtt_check, config, timeout)
    answered = await _options(config, address, timeout)
    checks.append(answered)
    if answered.ok and sip.register:
        checks.extend(await _registration(config, timeout))
    elif sip.register:
        checks.append(Check("registration", False, "not tried: the PBX does not answer"))
    checks.extend(_audio_checks(config))
    checks.extend(await asyncio.to_thread(_mqtt_check, config, timeout))
    return checks


async def _options(config: Config, address: str, timeout: float) -> Check:
    sip = config.sip
    if sip.transport != "udp":
        return Check("PBX answers", True, "not probed over TCP; see the registration check")
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
            reason = "no answer" if isinstance(exc, TimeoutError) else str(exc)
            fix = (
                f"check sip.server, sip.port ({sip.port}) and sip.transport ({sip.transport}); "
                "a firewall may drop SIP; on a FRITZ!Box the door must be set up as an IP phone"
            )
            return Check("PBX answers", False, f"{reason} from {address}:{sip.port}", fix)
    status = reply.status if isinstance(reply, SipResponse) else 0
    return Check("PBX answers", True, f"OPTIONS answered with {status} from {address}:{sip.port}")


async def _registration(config: Config, timeout: float) -> list[Check]:
    from intercom.phone import Phone, PhoneOptions

    phone = Phone(config, PhoneOptions(any_rtp_port=True))
    try:
        await phone.start()
    except OSError as exc:
        fix = "another program uses sip.local_port; set local_port: 0 or stop it"
        return [Check("registration", False, str(exc), fix)]
    try:
        result = await phone.wait_registration(max(timeout, 5.0) + 30.0)
        agent = phone.agent
        local = agent.settings.local_host if agent else "?"
        public = agent.contact_uri().host if agent else "?"
    finally:
        await phone.stop(timeout=2.0)
    checks: list[Check] = []
    if result is not None and result.state == "registered":
        checks.append(Check("registration", True, f"registered for {result.expires} s"))
        behind = public != local
        detail = f"the PBX sees this door at {public}" + (" (NAT)" if behind else "")
        checks.append(Check("local address", True, f"{local}; {detail}"))
        return checks
    code = result.code if result is not None else None
    if code == 403 or (code in (401, 407)):
        fix = (
            "wrong user name or password: check sip.username, sip.auth_username and the "
            "password; a FRITZ!Box wants the IP phone's user name, not its number"
        )
        return [Check("registration", False, f"refused with {code}", fix)]
    reason = result.reason if result is not None else "no answer"
    fix = "check sip.server, sip.port and sip.transport, and that no firewall blocks SIP"
    return [Check("registration", False, f"{reason} (code {code})", fix)]


def _audio_checks(config: Config) -> list[Check]:
    from intercom.media.audio import open_sink, open_source

    out = []
    for name, spec, opener in (
        ("microphone", config.audio.input, open_source),
        ("speaker", config.audio.output, open_sink),
    ):
        try:
            device: Any = opener(spec, 16000)
            device.close()
            out.append(Check(name, True, f"{spec!r} opens"))
        except Exception as exc:
            fix = "set audio.input/audio.output to a device that `intercom devices` lists"
            out.append(Check(name, False, f"{spec!r}: {exc}", fix))
    return out


def _mqtt_check(config: Config, timeout: float) -> list[Check]:
    mqtt_cfg = config.mqtt
    if mqtt_cfg is None:
        return [Check("MQTT", True, "not configured (no mqtt section)")]
    import paho.mqtt.client as mqtt

    result: dict[str, Any] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pi-intercom-doctor")
    if mqtt_cfg.username is not None:
        client.username_pw_set(mqtt_cfg.username, mqtt_cfg.secret())
    if mqtt_cfg.tls is not None:
        tls = mqtt_cfg.tls
        client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None)
        if tls.insecure:
            client.tls_insecure_set(True)
    topic = f"{config.mqtt_base_topic}/doctor"
    client.on_connect = lambda c, u, f, reason, p: result.update(reason=str(reason))
    client.on_message = lambda c, u, msg: result.update(echo=msg.payload)
    broker = f"{mqtt_cfg.host}:{mqtt_cfg.port}"
    try:
        client.connect(mqtt_cfg.host, mqtt_cfg.port, keepalive=10)
    except (OSError, ValueError) as exc:
        fix = "check mqtt.host and mqtt.port, and that the broker runs"
        return [Check("MQTT", False, f"cannot connect to {broker}: {exc}", fix)]
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while "reason" not in result and time.monotonic() < deadline:
            time.sleep(0.02)
        reason = result.get("reason")
        if reason != "Success":
            fix = "check mqtt.username and the MQTT password"
            return [Check("MQTT", False, f"{broker} refused the connection: {reason}", fix)]
        client.subscribe(topic, qos=1)
        time.sleep(0.2)
        client.publish(topic, "ping", qos=1)
        while "echo" not in result and time.monotonic() < deadline + timeout:
            time.sleep(0.02)
        if result.get("echo") != b"ping":
            fix = "the broker's ACL may forbid the door's topics"
            return [Check("MQTT", False, f"no round trip on {topic}", fix)]
        with contextlib.suppress(Exception):
            client.publish(topic, "", qos=1, retain=True)
        detail = f"{broker}: connected, publish and subscribe work"
        return [Check("MQTT", True, f"{detail}; discovery under {mqtt_cfg.discovery_prefix}/")]
    finally:
        client.disconnect()
        client.loop_stop()


def report(checks: list[Check], as_json: bool) -> str:
    if as_json:
        return json.dumps({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]})
    return "\n".join(c.line() for c in checks)
