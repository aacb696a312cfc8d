"""From an MQTT ``call/ring`` to the INVITE on the wire, next to baresip's own MQTT module.

A probe publishes the command to a local mosquitto; the door (the real ``Intercom`` app, with its
paho bridge) reaches Kamailio through the UDP tap of ``bench.py``, which notes when the INVITE
passes. baresip, with its ``mqtt`` module on the same broker, gets a ``dial`` command the same
way (its command topic is ``/<basetopic>/command/<token>``, leading slash included) and goes
through the same tap. Run through ``scripts/bench --suite mqtt``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Tap, _stats, _wait_mark, door_config  # type: ignore[import-not-found]

from intercom.app import Intercom
from intercom.phone import PhoneOptions
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.mosquitto import Mosquitto
from tests.peers.mqtt_client import MqttProbe

ROOT = Path(__file__).resolve().parents[1]


async def _ours(tap: Tap, broker: Mosquitto, probe: MqttProbe, runs: int) -> list[float]:
    config = door_config(
        tap.port,
        audio={"input": "silence"},
        mqtt={"host": broker.host, "port": broker.port, "discovery": "off"},
    )
    app = Intercom(config, phone_options=PhoneOptions(local_host="127.0.0.1", any_rtp_port=True))
    await app.start()
    out = []
    try:
        deadline = time.monotonic() + 10
        while not (app.bridge.connected and app.phone.registered):
            if time.monotonic() > deadline:
                raise RuntimeError("the door did not connect and register")
            await asyncio.sleep(0.05)
        for _ in range(runs):
            t0 = time.monotonic()
            await asyncio.to_thread(probe.publish, "intercom/frontdoor/call/ring", "PRESS", qos=0)
            invite = await _wait_mark(tap, "invite", t0)
            out.append(invite - t0)
            await _wait_mark(tap, "180", t0)
            app.hangup()
            while app.call is not None or (app.phone.agent and app.phone.agent.calls):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
    finally:
        await app.stop()
    return out


async def _baresip(tap: Tap, broker: Mosquitto, probe: MqttProbe, work: Path, runs: int) -> Any:
    caller = Baresip(
        "620",
        "pw620",
        "127.0.0.1",
        tap.port,
        work / "caller",
        record=False,
        sip_trace=False,
        extra_config={
            "module_app": "mqtt.so",
            "mqtt_broker_host": broker.host,
            "mqtt_broker_port": str(broker.port),
            "mqtt_broker_clientid": "baresip-bench",
            "mqtt_basetopic": "baresip/bench",
        },
    )
    await asyncio.to_thread(caller.start)
    out = []
    try:
        await asyncio.to_thread(caller.wait_registered, 10)
        await asyncio.sleep(1.0)  # its MQTT client connects after start
        for i in range(runs):
            command = {
                "command": "dial",
                "params": f"sip:621@127.0.0.1:{tap.port}",
                "token": str(i),
            }
            t0 = time.monotonic()
            await asyncio.to_thread(
                probe.publish, f"/baresip/bench/command/{i}", json.dumps(command), qos=0
            )
            try:
                invite = await _wait_mark(tap, "invite", t0, timeout=3)
            except TimeoutError:
                return None  # this baresip build has no working MQTT control
            out.append(invite - t0)
            await _wait_mark(tap, "180", t0)
            await asyncio.to_thread(caller.hangup)
            await asyncio.to_thread(caller.wait_event, "CALL_CLOSED", 10)
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(caller.close)
    return out


async def run(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="intercom-bench-mqtt-") as tmp:
        work = Path(tmp)
        users = {"door": "doorpass", "620": "pw620", "621": "pw621"}
        pbx = Kamailio(users, workdir=work / "pbx", log_level=1)
        pbx.start()
        broker = Mosquitto(work / "broker")
        broker.start()
        handset = Baresip(
            "621", "pw621", pbx.host, pbx.port, work / "handset", answer="manual", record=False
        )
        tap = Tap((pbx.host, pbx.port))
        probe = MqttProbe(broker.host, broker.port)
        try:
            await asyncio.to_thread(handset.start)
            await asyncio.to_thread(handset.wait_registered, 10)
            await tap.start()
            await asyncio.to_thread(probe.connect, 5)
            ours = await _ours(tap, broker, probe, runs)
            theirs = await _baresip(tap, broker, probe, work, runs)
        finally:
            probe.close()
            tap.close()
            await asyncio.to_thread(handset.close)
            broker.close()
            pbx.close()
    result: dict[str, Any] = {
        "benchmark": "MQTT command published to the INVITE on the wire (mosquitto, loopback)",
        "runs": len(ours),
        "pi_intercom": {"publish_to_invite_ms": _stats(ours)},
        "goal_ms": 10,
    }
    if theirs:
        result["baresip"] = {"publish_to_invite_ms": _stats(theirs)}
        result["ratio_median_intercom_over_baresip"] = round(
            statistics.median(ours) / statistics.median(theirs), 3
        )
    else:
        result["baresip"] = "its mqtt module did not dial in this run"
    return result
