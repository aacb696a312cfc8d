"""Registration against a real Kamailio: challenges, refusals, back-off and PBX restarts."""

from __future__ import annotations

import asyncio
import socket

import pytest

from intercom.sip.events import RegistrationChanged
from intercom.sip.message import parse_message
from tests.integration.door import Door, door_config
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers


def _registration(state: str):  # type: ignore[no-untyped-def]
    return lambda e: isinstance(e, RegistrationChanged) and e.state == state


def test_registers_through_401_with_a_request_uri_without_user(kamailio: Kamailio) -> None:
    async def scenario() -> None:
        async with Door(door_config(kamailio)) as door:
            await door.wait_event("registered")
            assert kamailio.registered("door")
            first, second = door.messages("sent", "REGISTER")[:2]
            assert first.uri == "sip:127.0.0.1"
            assert "Authorization" in second.headers and "Authorization" not in first.headers
            assert "qop=auth" in second.headers.get("Authorization")
            assert "+sip" not in second.headers.get("Contact")
            assert first.call_id == second.call_id and first.cseq[0] + 1 == second.cseq[0]
        # A clean shutdown un-REGISTERs.
        kamailio.wait_unregistered("door", 5)

    asyncio.run(scenario())


def test_wrong_password_fails_with_403_and_backs_off(kamailio: Kamailio) -> None:
    async def scenario() -> None:
        async with Door(door_config(kamailio, password="wrong")) as door:
            failed = await door.wait_for(_registration("failed"), 10)
            assert isinstance(failed, RegistrationChanged)
            assert failed.code == 403
            assert "password" in failed.reason
            assert failed.retry_in is not None and failed.retry_in >= 30
            sent = len(door.messages("sent", "REGISTER"))
            await asyncio.sleep(2)
            assert len(door.messages("sent", "REGISTER")) == sent, "no retry before the back-off"
            assert not kamailio.registered("door")

    asyncio.run(scenario())


def test_registration_comes_back_after_the_pbx_restarts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A registrar that forgets everything on restart (usrloc in memory), granting 10 s."""
    pbx = Kamailio({"door": "doorpass"}, workdir=tmp_path / "pbx", max_expires=10)
    pbx.start()
    try:

        async def scenario() -> None:
            async with Door(door_config(pbx)) as door:
                reg = await door.wait_for(_registration("registered"), 10)
                assert isinstance(reg, RegistrationChanged) and reg.expires == 10
                await asyncio.to_thread(pbx.restart)
                assert not pbx.registered("door")
                await asyncio.to_thread(pbx.wait_registered, "door", 10)

        asyncio.run(scenario())
    finally:
        pbx.close()


def test_registration_recovers_from_a_pbx_outage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The PBX is down long enough for a refresh to time out; the door retries until it is back."""
    pbx = Kamailio({"door": "doorpass"}, workdir=tmp_path / "pbx", max_expires=10)
    pbx.start()
    try:

        async def scenario() -> None:
            async with Door(door_config(pbx)) as door:
                await door.wait_for(_registration("registered"), 10)
                await asyncio.to_thread(pbx.stop)
                failed = await door.wait_for(_registration("failed"), 45)
                assert isinstance(failed, RegistrationChanged) and failed.code is None
                assert failed.retry_in is not None and failed.retry_in <= 10
                await asyncio.to_thread(pbx.start)
                await asyncio.to_thread(pbx.wait_registered, "door", 20)

        asyncio.run(scenario())
    finally:
        pbx.close()


def test_options_is_answered(kamailio: Kamailio) -> None:
    async def scenario() -> None:
        async with Door(door_config(kamailio, register=False)) as door:
            host, port = door.phone.local_addr
            request = (
                f"OPTIONS sip:door@{host}:{port} SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKopt1;rport\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:probe@127.0.0.1>;tag=p1\r\n"
                f"To: <sip:door@{host}>\r\n"
                "Call-ID: options-probe-1\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                probe.setblocking(False)
                loop = asyncio.get_running_loop()
                await loop.sock_sendto(probe, request, (host, port))
                data = await asyncio.wait_for(loop.sock_recv(probe, 4096), 2)
            reply = parse_message(data)
            assert reply.status == 200  # type: ignore[union-attr]
            assert "INVITE" in (reply.headers.get("Allow") or "")
            assert reply.call_id == "options-probe-1"

    asyncio.run(scenario())
