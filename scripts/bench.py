"""Benchmarks of the door, next to baresip measured in the same run (JSON on stdout).

Suite ``setup``: call set-up latency. Suite ``media``: pacing, CPU and SNR (``bench_media.py``).
Suite ``mqtt``: MQTT command to INVITE (``bench_mqtt.py``). Suite ``first``: the demo and the
doctor, wall time (``bench_first.py``). Suite ``hostile``: CPU per 1,000 hostile datagrams, the
flood rate a call's pacing survives, RSS after 100,000 datagrams and after 1,000 calls
(``bench_hostile.py``). Suite ``parsers``: the SIP parser's CPU per datagram, typical, worst
within the caps and garbage (``bench_parsers.py``).

Both callers dial the same baresip handset through the same Kamailio (which challenges every INVITE
with 407), and both reach Kamailio through the same UDP tap, which timestamps the packets. Two
figures per call, from the trigger (the door's ``Phone.call``; baresip's ``dial`` over ctrl_tcp):

* ``trigger_to_invite_ms``: until the first INVITE reaches the wire;
* ``trigger_to_180_ms``: until the 180 Ringing comes back, through the 407 and the second INVITE.

Prints one JSON object. Run it with ``scripts/bench`` (which sets up the virtualenv and peers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from intercom import __version__  # noqa: E402
from intercom.config import Config, parse_config  # noqa: E402
from intercom.phone import Phone, PhoneOptions  # noqa: E402
from tests.peers.baresip import Baresip  # noqa: E402
from tests.peers.kamailio import Kamailio  # noqa: E402

Addr = tuple[str, int]


class Tap:
    """A UDP relay in front of Kamailio that notes when each caller's INVITE and 180 pass."""

    def __init__(self, upstream: Addr) -> None:
        self.upstream = upstream
        self.marks: list[tuple[float, str, Addr]] = []  # (time, what, client)
        self._front: asyncio.DatagramTransport | None = None
        self._backs: dict[Addr, asyncio.DatagramTransport] = {}
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tap = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = loop.create_task(tap._from_client(data, (addr[0], addr[1])))
                tap._tasks.add(task)
                task.add_done_callback(tap._tasks.discard)

        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self.port = self._front.get_extra_info("sockname")[1]

    async def _from_client(self, data: bytes, client: Addr) -> None:
        if data.startswith(b"INVITE "):
            self.marks.append((time.monotonic(), "invite", client))
        back = self._backs.get(client)
        if back is None:
            loop = asyncio.get_running_loop()
            tap = self

            class Back(asyncio.DatagramProtocol):
                def datagram_received(self, reply: bytes, addr: tuple[str, int]) -> None:
                    if reply.startswith(b"SIP/2.0 180"):
                        tap.marks.append((time.monotonic(), "180", client))
                    assert tap._front is not None
                    tap._front.sendto(reply, client)

            back, _ = await loop.create_datagram_endpoint(
                Back, local_addr=("127.0.0.1", 0), remote_addr=self.upstream
            )
            self._backs[client] = back
        back.sendto(data)

    def first(self, what: str, after: float) -> float | None:
        for t, kind, _client in self.marks:
            if kind == what and t >= after:
                return t
        return None

    def close(self) -> None:
        for transport in [self._front, *self._backs.values()]:
            if transport is not None:
                transport.close()


async def _wait_mark(tap: Tap, what: str, after: float, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = tap.first(what, after)
        if t is not None:
            return t
        await asyncio.sleep(0.001)
    raise TimeoutError(f"no {what} seen by the tap")


def door_config(server_port: int, **sections: Any) -> Config:
    """The door of every benchmark: user ``door`` at the PBX (or tap) on ``server_port``."""
    data: dict[str, Any] = {
        "sip": {
            "server": "127.0.0.1",
            "port": server_port,
            "username": "door",
            "password": "doorpass",
            "local_port": 0,
        },
        "call": {"targets": ["621"], "ring_timeout": 30},
        "audio": {"input": "tone:1000", "output": "null"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data, base_dir=ROOT, env={})


async def bench_intercom(tap: Tap, runs: int) -> list[tuple[float, float]]:
    config = door_config(tap.port)
    phone = Phone(config, PhoneOptions(local_host="127.0.0.1", any_rtp_port=True))
    await phone.start()
    out = []
    try:
        if (await phone.wait_registration(10)) is None:
            raise RuntimeError("the door did not register")
        for _ in range(runs):
            t0 = time.monotonic()
            handle = phone.call(["621"])
            invite = await _wait_mark(tap, "invite", t0)
            ringing = await _wait_mark(tap, "180", t0)
            out.append((invite - t0, ringing - t0))
            phone.hangup(handle)
            while phone.agent is not None and phone.agent.calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
    finally:
        await phone.stop()
    return out


async def bench_baresip(tap: Tap, workdir: Path, runs: int) -> list[tuple[float, float]]:
    caller = Baresip("620", "pw620", "127.0.0.1", tap.port, workdir, record=False, sip_trace=False)
    await asyncio.to_thread(caller.start)
    out = []
    try:
        await asyncio.to_thread(caller.wait_registered, 10)
        for _ in range(runs):
            t0 = time.monotonic()
            await asyncio.to_thread(caller.dial, f"sip:621@127.0.0.1:{tap.port}")
            invite = await _wait_mark(tap, "invite", t0)
            ringing = await _wait_mark(tap, "180", t0)
            out.append((invite - t0, ringing - t0))
            await asyncio.to_thread(caller.hangup)
            await asyncio.to_thread(caller.wait_event, "CALL_CLOSED", 10)
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(caller.close)
    return out


def _stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "median": round(statistics.median(ms), 2),
        "min": round(min(ms), 2),
        "max": round(max(ms), 2),
    }


def _summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "trigger_to_invite_ms": _stats([s[0] for s in samples]),
        "trigger_to_180_ms": _stats([s[1] for s in samples]),
    }


async def main_async(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="intercom-bench-") as tmp:
        work = Path(tmp)
        users = {"door": "doorpass", "620": "pw620", "621": "pw621"}
        pbx = Kamailio(users, workdir=work / "pbx", log_level=1)
        pbx.start()
        handset = Baresip(
            "621", "pw621", pbx.host, pbx.port, work / "handset", answer="manual", record=False
        )
        tap = Tap((pbx.host, pbx.port))
        try:
            await asyncio.to_thread(handset.start)
            await asyncio.to_thread(handset.wait_registered, 10)
            await tap.start()
            ours: list[tuple[float, float]] = []
            theirs: list[tuple[float, float]] = []
            # Interleave the two systems in rounds, so that drift of the machine hits both alike.
            rounds = 2
            for _ in range(rounds):
                ours += await bench_intercom(tap, runs // rounds)
                theirs += await bench_baresip(tap, work / f"caller-{len(theirs)}", runs // rounds)
        finally:
            tap.close()
            await asyncio.to_thread(handset.close)
            pbx.close()
    result = {
        "benchmark": "call set-up through a 407 challenge (Kamailio 5.6, loopback, UDP)",
        "runs": len(ours),
        "pi_intercom": {"version": __version__, **_summary(ours)},
        "baresip": {"version": "1.0 (Debian)", **_summary(theirs)},
    }
    result["ratio_median_intercom_over_baresip"] = {
        key: round(
            result["pi_intercom"][key]["median"] / max(result["baresip"][key]["median"], 1e-6), 3
        )
        for key in ("trigger_to_invite_ms", "trigger_to_180_ms")
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite",
        choices=["setup", "media", "mqtt", "first", "hostile", "parsers", "all"],
        default="all",
        help="what to measure",
    )
    parser.add_argument("--runs", type=int, default=20, help="set-up: calls per system")
    parser.add_argument("--seconds", type=float, default=60, help="media: seconds per call")
    parser.add_argument(
        "--datagrams", type=int, default=100_000, help="hostile: datagrams per system"
    )
    parser.add_argument("--calls", type=int, default=1000, help="hostile: calls per system")
    parser.add_argument(
        "--rates", help="hostile: flood rates during a call, datagrams/s, comma-separated"
    )
    parser.add_argument("--window", type=float, default=3.0, help="hostile: seconds per rate")
    parser.add_argument(
        "--per-kind", type=int, default=5000, help="hostile: most datagrams per kind (0: skip)"
    )
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if args.suite in ("setup", "all"):
        result["call_setup"] = asyncio.run(main_async(max(2, args.runs)))
    if args.suite in ("mqtt", "all"):
        import bench_mqtt

        result["mqtt"] = asyncio.run(bench_mqtt.run(max(2, args.runs)))
    if args.suite in ("first", "all"):
        import bench_first

        result["first_five_minutes"] = asyncio.run(bench_first.run(max(2, args.runs // 4)))
    if args.suite in ("media", "all"):
        import bench_media

        result["media"] = asyncio.run(bench_media.run(max(5.0, args.seconds)))
    if args.suite in ("hostile", "all"):
        import bench_hostile

        result["hostile"] = bench_hostile.run(
            datagrams=max(2, args.datagrams),
            calls=max(1, args.calls),
            rates=[int(r) for r in args.rates.split(",") if r.strip()] if args.rates else None,
            window=max(0.5, args.window),
            per_kind=max(0, args.per_kind),
        )
    if args.suite in ("parsers", "all"):
        import bench_parsers

        result["parsers"] = bench_parsers.run()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
