"""Requests in the middle of a call from a real handset: hold and resume are re-INVITEs."""

from __future__ import annotations

import asyncio

import pytest

from intercom.sip.events import CallEnded, CallUpdated
from tests.integration.door import Door, door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers


def test_hold_and_resume_do_not_drop_the_call(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621")

    async def scenario() -> None:
        async with Door(door_config(kamailio)) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            await asyncio.to_thread(phone.command, "hold")
            held = await door.wait_for(lambda e: isinstance(e, CallUpdated), 5, "re-INVITE")
            assert isinstance(held, CallUpdated)
            assert b"a=sendonly" in held.remote_sdp or b"a=inactive" in held.remote_sdp
            await asyncio.to_thread(phone.command, "resume")
            await door.wait_for(
                lambda e: isinstance(e, CallUpdated) and b"a=sendrecv" in e.remote_sdp, 5
            )
            oks = [m for m in door.messages("sent", "SIP/2.0 200") if m.cseq[1] == "INVITE"]
            assert len(oks) >= 2 and all(m.body for m in oks)
            assert b"a=recvonly" in oks[0].body  # our answer to their sendonly
            await asyncio.sleep(1)
            assert "ended" not in door.names()
            door.phone.hangup(handle)
            ended = await door.wait_event("ended", 5)
            assert isinstance(ended, CallEnded) and ended.reason == "local_hangup"

    asyncio.run(scenario())
