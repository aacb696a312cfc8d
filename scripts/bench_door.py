"""The door in a process of its own, for ``scripts/bench --suite hostile``.

The suite measures the door's CPU and memory from outside (``/proc/PID``), as it does baresip's,
so the door must not share a process with the benchmark, its flooder or its peers. This is the
daemon's wiring as ``intercom run`` builds it (the :class:`~intercom.app.Intercom` app from a
YAML config, with the daemon's logging), minus systemd, driven over stdin and stdout with one
JSON object a line:

* ``{"op": "ring"}``: ring ``call.targets``; answers when the call is answered or has ended
  (``{"handle", "answered", "reason"}``);
* ``{"op": "hangup"}``: hang up; answers when the call has ended;
* ``{"op": "calls", "n": N}``: N calls one after the other, each hung up as soon as it is
  answered and its audio runs (a busy or rejecting handset ends them itself); answers with
  the outcomes;
* ``{"op": "window"}``: start a pacing window on the call that is up;
* ``{"op": "pacing"}``: the gaps since the window started, between the door's own RTP packets
  as it sent them (its 20 ms clock) and between the other side's as they arrived (kernel
  timestamps);
* ``{"op": "counters"}``: what the SIP core counted (strangers dropped, malformed...);
* ``{"op": "quit"}``.

It prints ``{"ready": ...}`` once registered. Run as ``python scripts/bench_door.py CONFIG``.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intercom.app import Intercom  # noqa: E402
from intercom.cli import _setup_logging  # noqa: E402
from intercom.config import load_config  # noqa: E402
from intercom.phone import PhoneOptions  # noqa: E402
from intercom.sip.events import CallAnswered, CallEnded, Event  # noqa: E402


class Gaps:
    """Stands in for a call's ``PacingStats`` during a window: keeps every gap."""

    def __init__(self, last: float | None) -> None:
        self.last = last
        self.gaps: list[float] = []

    def add(self, t: float) -> None:
        if self.last is not None:
            self.gaps.append(t - self.last)
        self.last = t

    @property
    def count(self) -> int:
        return len(self.gaps)

    @property
    def mean(self) -> float:
        return sum(self.gaps) / len(self.gaps) if self.gaps else 0.0

    @property
    def stdev(self) -> float:
        n = len(self.gaps)
        if n < 2:
            return 0.0
        mean = self.mean
        return math.sqrt(sum((g - mean) ** 2 for g in self.gaps) / (n - 1))

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.gaps)
        ms = 1000.0
        return {
            "gaps": len(ordered),
            "mean_ms": round(self.mean * ms, 3),
            "stdev_ms": round(self.stdev * ms, 3),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * ms, 3) if ordered else None,
            "max_ms": round(ordered[-1] * ms, 3) if ordered else None,
        }


class DoorProcess:
    def __init__(self, config_path: str) -> None:
        config = load_config(config_path)
        trace = config.log.sip_trace
        _setup_logging(config.log.level, trace)
        # Any free RTP port: the machine is shared with test runs that use the default range.
        options = PhoneOptions(trace=trace, local_host="127.0.0.1", any_rtp_port=True)
        self.app = Intercom(config, phone_options=options)
        self.app.listeners.append(self._on_event)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.send: Gaps | None = None
        self.arrival: Gaps | None = None

    def _on_event(self, event: Event) -> None:
        self.events.put_nowait(event)

    async def _until(self, handle: int, kinds: tuple[type, ...], timeout: float = 15.0) -> Event:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await asyncio.wait_for(self.events.get(), deadline - loop.time())
            if isinstance(event, kinds) and getattr(event, "call", None) == handle:
                return event

    async def ring(self, timeout: float = 15.0) -> dict[str, Any]:
        handle = self.app.ring(source="bench")
        if handle is None:
            return {"error": "a call is up already"}
        event = await self._until(handle, (CallAnswered, CallEnded), timeout)
        if isinstance(event, CallEnded):
            return {"handle": handle, "answered": False, "reason": event.reason}
        return {"handle": handle, "answered": True, "reason": None}

    async def hangup(self) -> dict[str, Any]:
        call = self.app.call
        if call is None:
            return {"error": "no call"}
        self.app.hangup()
        event = await self._until(call.handle, (CallEnded,))
        assert isinstance(event, CallEnded)
        return {"handle": call.handle, "reason": event.reason}

    async def calls(self, n: int) -> dict[str, Any]:
        outcomes: dict[str, int] = {}
        for _ in range(n):
            rung = await self.ring()
            if rung.get("answered"):
                ended = await self.hangup()
                key = f"answered_then_{ended['reason']}"
            else:
                key = str(rung.get("reason", rung.get("error")))
            outcomes[key] = outcomes.get(key, 0) + 1
        return {"calls": n, "outcomes": outcomes}

    def window(self) -> dict[str, Any]:
        media = next(iter(self.app.phone.media.values()), None)
        if media is None:
            return {"error": "no call with media"}
        stats = media.stats
        self.send = Gaps(stats.pacing.last)
        self.arrival = Gaps(stats.arrival.last)
        stats.pacing = self.send  # type: ignore[assignment]
        stats.arrival = self.arrival  # type: ignore[assignment]
        return {"ok": True}

    def pacing(self) -> dict[str, Any]:
        if self.send is None or self.arrival is None:
            return {"error": "no window"}
        return {"send": self.send.summary(), "arrival": self.arrival.summary()}

    def counters(self) -> dict[str, Any]:
        agent = self.app.phone.agent
        if agent is None:
            return {"error": "not started"}
        timers = agent.timers
        return {
            "untrusted": agent.untrusted,
            "dropped": agent.dropped,
            "server_transactions": len(agent.txns.servers),
            "incoming": len(agent.incoming),
            "calls": len(agent.calls),
            # Ended dialogs stay here for 32 s (retransmitted 2xx); then they must be gone.
            "sessions": len(agent.core.sessions),
            "timers_armed": len(timers),
            "timer_entries": getattr(timers, "footprint", None),
        }

    async def serve(self) -> int:
        await self.app.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not self.app.phone.registered:
            if loop.time() > deadline:
                print(json.dumps({"error": "the door did not register"}), flush=True)
                await self.app.stop()
                return 1
            await asyncio.sleep(0.02)
        host, port = self.app.phone.local_addr
        ready = {"ready": True, "host": host, "sip_port": port}
        print(json.dumps(ready), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            while line := await reader.readline():
                command = json.loads(line)
                op = command.get("op")
                if op == "quit":
                    break
                try:
                    reply = await self._do(op, command)
                except Exception as exc:  # the suite reports it; the door goes on
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(reply), flush=True)
        finally:
            await self.app.stop()
        return 0

    async def _do(self, op: str, command: dict[str, Any]) -> dict[str, Any]:
        if op == "ring":
            return await self.ring(float(command.get("wait", 15.0)))
        if op == "hangup":
            return await self.hangup()
        if op == "calls":
            return await self.calls(int(command["n"]))
        if op == "window":
            return self.window()
        if op == "pacing":
            return self.pacing()
        if op == "counters":
            return self.counters()
        return {"error": f"unknown op {op!r}"}


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} CONFIG", file=sys.stderr)
        return 2
    return asyncio.run(DoorProcess(sys.argv[1]).serve())


if __name__ == "__main__":
    sys.exit(main())
