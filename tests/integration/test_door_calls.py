"""The door against a real PBX and real handsets: Kamailio, baresip and linphonec on loopback."""

from __future__ import annotations

import asyncio
import wave

import pytest

from intercom.sip.events import CallAnswered, CallEnded, RegistrationChanged
from tests.integration.door import Door, door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers


def test_seed_ladder_through_407_then_talk_then_our_bye(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    phone = handset("621")

    async def scenario() -> None:
        async with Door(door_config(kamailio)) as door:
            reg = await door.wait_for(
                lambda e: isinstance(e, RegistrationChanged) and e.state != "registering", 10
            )
            assert isinstance(reg, RegistrationChanged) and reg.state == "registered"
            assert kamailio.registered("door")
            handle = door.phone.call(["621"])
            answered = await door.wait_event("answered", 10)
            assert isinstance(answered, CallAnswered) and answered.call == handle
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            await asyncio.sleep(2.0)
            door.phone.hangup(handle)
            ended = await door.wait_event("ended", 5)
            assert isinstance(ended, CallEnded) and ended.reason == "local_hangup"
            closed = await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5)
            assert "peer" in closed.get("param", "")
            ladder = [step for step in door.ladder() if "REGISTER" not in step]
            assert ladder[:9] == [
                "sent INVITE",
                "received 407 INVITE",
                "sent ACK",
                "sent INVITE",
                "received 100 INVITE",
                "received 180 INVITE",
                "received 200 INVITE",
                "sent ACK",
                "sent BYE",
            ], ladder
            assert "received 200 BYE" in ladder
            first, second = door.messages("sent", "INVITE")
            assert first.call_id == second.call_id
            assert first.cseq[0] + 1 == second.cseq[0]
            assert "Proxy-Authorization" in second.headers
            assert 'uri="sip:621@127.0.0.1"' in second.headers.get("Proxy-Authorization")
            assert "Proxy-Authorization" not in first.headers
            assert first.vias[0] != second.vias[0]  # a new branch

    asyncio.run(scenario())
    # The handset heard the door's RTP for the whole conversation (silence, for now).
    heard = [p for p in phone.recordings() if p.name.endswith("-dec.wav")]
    assert heard, phone.recordings()
    with wave.open(str(heard[0])) as w:
        assert w.getnframes() / w.getframerate() > 1.5


def test_handset_hangs_up(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621")

    async def scenario() -> None:
        async with Door(door_config(kamailio)) as door:
            await door.wait_event("registered")
            door.phone.call(["621"])
            await door.wait_event("answered")
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            await asyncio.to_thread(phone.hangup)
            ended = await door.wait_event("ended", 5)
            assert isinstance(ended, CallEnded) and ended.reason == "remote_hangup"
            assert "received BYE" in door.ladder()
            assert door.messages("sent", "SIP/2.0 200")[-1].cseq[1] == "BYE"

    asyncio.run(scenario())


def test_no_answer_sends_cancel_and_acks_487(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621", answer="manual")

    async def scenario() -> None:
        config = door_config(kamailio, call={"ring_timeout": 2})
        async with Door(config) as door:
            await door.wait_event("registered")
            door.phone.call(["621"])
            await door.wait_event("ringing", 5)
            ended = await door.wait_event("ended", 6)
            assert isinstance(ended, CallEnded) and ended.reason == "no_answer"
            await asyncio.to_thread(phone.wait_cancelled, 5)
            for _ in range(50):
                if "received 487 INVITE" in door.ladder():
                    break
                await asyncio.sleep(0.1)
            ladder = door.ladder()
            assert "sent CANCEL" in ladder and "received 200 CANCEL" in ladder
            assert ladder.index("received 487 INVITE") < len(ladder) - 1
            assert ladder[ladder.index("received 487 INVITE") + 1] == "sent ACK"
            assert not door.phone.agent.calls  # nothing left ringing

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("target", "answer", "code", "reason"),
    [
        ("621", "busy", 486, "busy"),
        ("999", None, 404, "not_found"),
        ("622", None, 480, "unavailable"),
    ],
)
def test_failed_calls_end_with_their_code_and_are_acked(
    kamailio: Kamailio,
    handset: HandsetFactory,
    target: str,
    answer: str | None,
    code: int,
    reason: str,
) -> None:
    if answer is not None:
        handset(target, answer=answer)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with Door(door_config(kamailio)) as door:
            await door.wait_event("registered")
            door.phone.call([target])
            ended = await door.wait_event("ended", 10)
            assert isinstance(ended, CallEnded)
            assert (ended.code, ended.reason) == (code, reason)
            ladder = door.ladder()
            final = f"received {code} INVITE"
            assert ladder[ladder.index(final) + 1] == "sent ACK"

    asyncio.run(scenario())


def test_call_lasting_60_seconds_is_not_dropped(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    """A wrong ACK makes the handset resend its 200 and drop the call after 32 s."""
    phone = handset("621")

    async def scenario() -> None:
        async with Door(door_config(kamailio)) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered")
            await asyncio.sleep(60)
            assert door.names().count("ended") == 0
            assert not phone.find_events("CALL_CLOSED")
            assert len(door.messages("received", "SIP/2.0 200")) >= 1
            oks = [m for m in door.messages("received", "SIP/2.0 200") if m.cseq[1] == "INVITE"]
            assert len(oks) == 1, "the handset retransmitted its 200: our ACK did not reach it"
            door.phone.hangup(handle)
            ended = await door.wait_event("ended", 5)
            assert isinstance(ended, CallEnded) and ended.reason == "local_hangup"

    asyncio.run(scenario())


def test_parallel_ringing_first_answer_wins_other_is_cancelled(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    slow = handset("620", answer="manual")
    fast = handset("621", answer="auto", answer_delay=1.0)

    async def scenario() -> None:
        async with Door(door_config(kamailio, targets=("620", "621"))) as door:
            await door.wait_event("registered")
            door.phone.call(["620", "621"])
            answered = await door.wait_event("answered", 10)
            assert isinstance(answered, CallAnswered) and "621" in answered.target
            await asyncio.to_thread(slow.wait_cancelled, 5)
            await asyncio.to_thread(fast.wait_event, "CALL_ESTABLISHED", 5)
            assert door.names().count("answered") == 1
            door.phone.hangup(answered.call)
            await door.wait_event("ended", 5)

    asyncio.run(scenario())


def test_sequential_ringing_tries_the_next_target(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    first = handset("620", answer="manual")
    handset("621")

    async def scenario() -> None:
        config = door_config(
            kamailio, targets=("620", "621"), call={"strategy": "sequential", "ring_timeout": 2}
        )
        async with Door(config) as door:
            await door.wait_event("registered")
            door.phone.call(["620", "621"])
            answered = await door.wait_event("answered", 10)
            assert isinstance(answered, CallAnswered) and "621" in answered.target
            await asyncio.to_thread(first.wait_cancelled, 5)
            door.phone.hangup(answered.call)
            await door.wait_event("ended", 5)

    asyncio.run(scenario())


def test_linphonec_answers_a_door_call(kamailio: Kamailio, linphone_handset) -> None:  # type: ignore[no-untyped-def]
    phone = linphone_handset("622")

    async def scenario() -> None:
        async with Door(door_config(kamailio, targets=("622",))) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["622"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(phone.wait_established)
            await asyncio.sleep(1.0)
            door.phone.hangup(handle)
            ended = await door.wait_event("ended", 5)
            assert isinstance(ended, CallEnded) and ended.reason == "local_hangup"
            await asyncio.to_thread(phone.wait_ended)

    asyncio.run(scenario())


def test_door_over_tcp(kamailio: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621")

    async def scenario() -> None:
        async with Door(door_config(kamailio, transport="tcp")) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered", 10)
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            door.phone.hangup(handle)
            await door.wait_event("ended", 5)
            await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5)
            invite = door.messages("sent", "INVITE")[0]
            assert invite.vias[0].startswith("SIP/2.0/TCP")

    asyncio.run(scenario())


def test_without_qop(kamailio_noqop: Kamailio, handset: HandsetFactory) -> None:
    phone = handset("621", pbx=kamailio_noqop)

    async def scenario() -> None:
        async with Door(door_config(kamailio_noqop)) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered", 10)
            auth = door.messages("sent", "INVITE")[1].headers.get("Proxy-Authorization")
            assert "qop" not in auth and "nc=" not in auth
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            door.phone.hangup(handle)
            await door.wait_event("ended", 5)

    asyncio.run(scenario())
