"""Calls to the door: allowed callers are answered, others refused, busy while in a call."""

from __future__ import annotations

import asyncio

import pytest

from intercom.sip.events import CallAnswered, CallEnded, IncomingCall
from tests.integration.door import Door, door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers


def test_allowed_caller_is_answered_after_the_delay(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    caller = handset("620")

    async def scenario() -> None:
        config = door_config(kamailio, incoming={"allow": ["620"], "answer_after": 1})
        async with Door(config) as door:
            await door.wait_event("registered")
            await asyncio.to_thread(caller.dial, kamailio.uri("door"))
            incoming = await door.wait_event("incoming", 5)
            assert isinstance(incoming, IncomingCall) and "620" in incoming.caller
            await asyncio.to_thread(caller.wait_event, "CALL_RINGING", 5)
            answered = await door.wait_event("answered", 5)
            assert isinstance(answered, CallAnswered) and answered.incoming
            await asyncio.to_thread(caller.wait_event, "CALL_ESTABLISHED", 5)
            await asyncio.to_thread(caller.hangup)
            ended = await door.wait_event("ended", 5)
            assert isinstance(ended, CallEnded) and ended.reason == "remote_hangup"

    asyncio.run(scenario())


def test_caller_not_allowed_gets_403(kamailio: Kamailio, handset: HandsetFactory) -> None:
    caller = handset("621")

    async def scenario() -> None:
        config = door_config(kamailio, incoming={"allow": ["620"], "answer_after": 1})
        async with Door(config) as door:
            await door.wait_event("registered")
            await asyncio.to_thread(caller.dial, kamailio.uri("door"))
            closed = await asyncio.to_thread(caller.wait_event, "CALL_CLOSED", 5)
            assert "403" in closed.get("param", "")
            assert "incoming" not in door.names()

    asyncio.run(scenario())


def test_caller_cancels_before_the_door_answers(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    caller = handset("620")

    async def scenario() -> None:
        config = door_config(kamailio, incoming={"allow": ["620"], "answer_after": None})
        async with Door(config) as door:
            await door.wait_event("registered")
            await asyncio.to_thread(caller.dial, kamailio.uri("door"))
            await door.wait_event("incoming", 5)
            await asyncio.to_thread(caller.wait_event, "CALL_RINGING", 5)
            await asyncio.to_thread(caller.hangup)
            ended = await door.wait_event("ended", 5)
            assert isinstance(ended, CallEnded) and ended.reason == "cancelled"
            assert "sent 487 INVITE" in door.ladder()

    asyncio.run(scenario())


def test_busy_while_in_a_call(kamailio: Kamailio, handset: HandsetFactory) -> None:
    handset("621")
    caller = handset("620")

    async def scenario() -> None:
        config = door_config(kamailio, incoming={"allow": ["620"], "answer_after": 0})
        async with Door(config) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(caller.dial, kamailio.uri("door"))
            closed = await asyncio.to_thread(caller.wait_event, "CALL_CLOSED", 5)
            assert "486" in closed.get("param", "")
            door.phone.hangup(handle)
            await door.wait_event("ended", 5)

    asyncio.run(scenario())
