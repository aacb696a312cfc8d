"""``intercom demo``: a door call to a virtual handset, both ends this project's own code.

Runs on loopback with free ports and needs no PBX, no sound card and no GPIO, so a newcomer sees the
product work on any Linux PC before buying a Pi. The door calls the handset directly (the handset
stands in for the PBX too), the handset answers, silence flows as RTP both ways, and the door hangs
up after ``talk`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

from intercom.config import Config, parse_config
from intercom.controller import CallStateMachine, describe
from intercom.phone import Phone, PhoneOptions
from intercom.sip.events import CallAnswered, CallEnded, Event

STEPS = ("calling", "ringing", "answered", "audio", "ended")


def _config(device: str, server_port: int, **sections: object) -> Config:
    data: dict[str, object] = {
        "device_id": device,
        "sip": {
            "server": "127.0.0.1",
            "port": server_port,
            "username": device,
            "register": False,
            "local_port": 0,
        },
    }
    data.update(sections)
    from pathlib import Path

    return parse_config(data, base_dir=Path.cwd(), env={})


async def run_demo(talk: float = 3.0, out: TextIO | None = None) -> int:
    import sys

    out = out or sys.stdout
    start = time.monotonic()
    handset = Phone(
        _config("handset", 9, incoming={"allow": ["door"], "answer_after": 1}),
        PhoneOptions(local_host="127.0.0.1", any_rtp_port=True, play="tone:880", record="null"),
    )
    await handset.start()
    hs_port = handset.local_addr[1]
    door = Phone(
        _config("door", hs_port, call={"targets": ["handset"], "ring_timeout": 15}),
        PhoneOptions(local_host="127.0.0.1", any_rtp_port=True, play="tone:440", record="null"),
    )
    await door.start()
    print(f"door on 127.0.0.1:{door.local_addr[1]}, handset on 127.0.0.1:{hs_port}", file=out)
    seen: set[str] = set()
    machines = {"door": CallStateMachine(), "handset": CallStateMachine()}

    def show(who: str, event: Event) -> None:
        state = machines[who].feed(event)
        fields = describe(event)
        seen.add(str(fields["event"]))
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k != "event")
        t = time.monotonic() - start
        print(f"{t:6.2f}s  {who:<8} {fields['event']:<10} [{state}] {extra}", file=out, flush=True)

    async def pump(who: str, phone: Phone, done: asyncio.Event) -> None:
        while True:
            event = await phone.events.get()
            show(who, event)
            if isinstance(event, CallAnswered) and who == "door":
                asyncio.get_running_loop().call_later(talk, phone.hangup, event.call)
            if isinstance(event, CallEnded):
                done.set()

    door_done, hs_done = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(pump("door", door, door_done)),
        asyncio.create_task(pump("handset", handset, hs_done)),
    ]
    print("doorbell pressed: the door calls the handset", file=out)
    handle = door.call(["handset"])
    try:
        await asyncio.wait_for(door_done.wait(), 20 + talk)
        await asyncio.wait_for(hs_done.wait(), 5)
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await door.stop()
        await handset.stop()
    stats = door.media_stats.get(handle)
    rtp_sent, rtp_heard = (stats.sent, stats.received) if stats else (0, 0)
    if rtp_sent and rtp_heard and stats is not None and stats.level_in_dbfs > -60:
        seen.add("audio")
    level = f"{stats.level_in_dbfs:.0f} dBFS" if stats else "nothing"
    print(
        f"audio: the door sent {rtp_sent} RTP packets and heard {rtp_heard} "
        f"({stats.codec if stats else '-'}, the handset's tone at {level})",
        file=out,
    )
    missing = [step for step in STEPS if step not in seen]
    if missing:
        print(f"demo FAILED: these steps did not happen: {', '.join(missing)}", file=out)
        return 1
    print("demo OK: the door rang the handset, they talked, and the call ended", file=out)
    return 0
