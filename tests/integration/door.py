"""The door under test: our own Phone, in-process, pointed at the test Kamailio.

Baresip and linphonec helpers block, so tests call them through ``asyncio.to_thread`` to keep the
door's event loop (and so its SIP stack) turning while they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from intercom.config import Config, parse_config
from intercom.controller import event_name
from intercom.phone import Phone, PhoneOptions
from intercom.sip.events import Event
from intercom.sip.message import SipRequest, parse_message
from tests.peers.kamailio import Kamailio


def door_config(
    pbx: Kamailio,
    *,
    password: str = "doorpass",
    targets: tuple[str, ...] = ("621",),
    transport: str = "udp",
    register: bool = True,
    **sections: Any,
) -> Config:
    data: dict[str, Any] = {
        "device_id": "frontdoor",
        "sip": {
            "server": pbx.host,
            "port": pbx.port,
            "transport": transport,
            "username": "door",
            "password": password,
            "local_port": 0,
            "register": register,
            "expires": 60,
        },
        "call": {"targets": list(targets), "ring_timeout": 10, "max_duration": 120},
        "audio": {"input": "tone:1000", "output": "null"},
    }
    for key, value in sections.items():
        if key == "sip":
            data["sip"].update(value)
        elif key in ("call", "audio"):
            data[key].update(value)
        else:
            data[key] = value
    return parse_config(data, base_dir=Path.cwd(), env={})


class Door:
    def __init__(self, config: Config) -> None:
        self.phone = Phone(
            config,
            PhoneOptions(local_host="127.0.0.1", capture=True, trace=True, any_rtp_port=True),
        )
        self.events: list[Event] = []
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Door:
        await self.phone.start()
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.phone.stop()
        if self._task is not None:
            self._task.cancel()

    async def _collect(self) -> None:
        while True:
            event = await self.phone.events.get()
            self.events.append(event)
            self._new.set()

    async def wait_for(
        self, predicate: Callable[[Event], bool], timeout: float, what: str = "event"
    ) -> Event:
        """The first event (past or future) matching ``predicate``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            remaining = deadline - loop.time()
            if remaining <= 0:
                names = [event_name(e) for e in self.events]
                raise AssertionError(f"no {what} within {timeout} s; events: {names}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    async def wait_event(self, name: str, timeout: float = 10.0) -> Event:
        return await self.wait_for(lambda e: event_name(e) == name, timeout, repr(name))

    def names(self) -> list[str]:
        return [event_name(e) for e in self.events]

    def ladder(self) -> list[str]:
        """The SIP ladder as seen by the door: 'sent INVITE', 'received 407', ..."""
        out = []
        for direction, _t, data in self.phone.wire:
            msg = parse_message(data)
            if isinstance(msg, SipRequest):
                out.append(f"{direction} {msg.method}")
            else:
                out.append(f"{direction} {msg.status} {msg.cseq[1]}")
        return out

    def messages(self, direction: str, start: str) -> list[Any]:
        return [
            parse_message(data)
            for d, _t, data in self.phone.wire
            if d == direction and data.startswith(start.encode())
        ]


def run(coro: Any) -> Any:
    return asyncio.run(coro)
