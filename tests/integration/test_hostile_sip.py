"""A stranger on the LAN against the door's SIP side, on loopback (issue 10, the adversarial suite).

Linux delivers all of 127.0.0.0/8 to ``lo``: the PBX (Kamailio) and the handsets are on
127.0.0.1, so a socket bound to 127.0.0.2 is a stranger on the LAN. To prove that the door did
*not* answer something, each test sends a marker the door does answer right after it, on the
same door socket: datagrams are handled in order, so once the marker's answer is back, the
stranger's datagram has been handled too. No sleeping to wait for silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from intercom.sip.events import CallAnswered, CallEnded
from intercom.sip.message import SipRequest, SipResponse, parse_message
from tests.integration.door import Door, door_config
from tests.peers.fixtures import HandsetFactory
from tests.peers.kamailio import Kamailio

pytestmark = pytest.mark.peers

STRANGER = "127.0.0.2"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@contextlib.contextmanager
def udp(host: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def sip(method: str, sock: socket.socket, door: tuple[str, int], n: str, **kw: str) -> bytes:
    """A request from ``sock``: ``n`` names its branch, and (unless ``call`` is given) its
    Call-ID and From tag."""
    host, port = sock.getsockname()
    body = kw.pop("body", "")
    call = kw.pop("call", n)
    lines = [
        f"{method} sip:door@{door[0]}:{door[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-{n}",
        "Max-Forwards: 70",
        f"From: {kw.pop('from_', f'<sip:620@{host}>')};tag=f{call}",
        f"To: {kw.pop('to', f'<sip:door@{door[0]}>')}",
        f"Call-ID: {call}@{host}",
        f"CSeq: {kw.pop('cseq', '1')} {method}",
        f"Contact: <sip:620@{host}:{port}>",
        *(f"{k.replace('_', '-')}: {v}" for k, v in kw.items()),
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


async def answer_to(sock: socket.socket, call_id: str, timeout: float = 5.0) -> SipResponse:
    """The first response for ``call_id`` that reaches ``sock``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for data in drain(sock):
            msg = parse_message(data)
            if isinstance(msg, SipResponse) and msg.call_id == call_id:
                return msg
        await asyncio.sleep(0.01)
    raise AssertionError(f"no answer for {call_id}")


async def request_to(sock: socket.socket, method: str, timeout: float = 5.0) -> SipRequest:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for data in drain(sock):
            msg = parse_message(data)
            if isinstance(msg, SipRequest) and msg.method == method:
                return msg
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {method} came")


def test_a_strangers_forged_invite_gets_no_answer_and_leaves_no_state(kamailio: Kamailio) -> None:
    async def scenario() -> None:
        config = door_config(kamailio, incoming={"allow": ["620"], "answer_after": 0})
        async with Door(config) as door:
            await door.wait_event("registered")
            addr = door.phone.local_addr
            agent = door.phone.agent
            assert agent is not None
            with udp(STRANGER) as stranger, udp("127.0.0.1") as pbx_side:
                for n, from_ in enumerate(("<sip:620@evil>", "<sip:620@127.0.0.1>")):
                    stranger.sendto(
                        sip("INVITE", stranger, addr, f"x{n}", from_=from_, body=SDP), addr
                    )
                stranger.sendto(sip("OPTIONS", stranger, addr, "probe"), addr)
                pbx_side.sendto(sip("OPTIONS", pbx_side, addr, "marker"), addr)
                marker = await answer_to(pbx_side, "marker@127.0.0.1")
                assert marker.status == 200
                assert drain(stranger) == []  # not a 100, not a 403: nothing at all
            assert agent.incoming == {} and agent.txns.servers == {}
            assert agent.untrusted == 3
            assert [e for e in door.events if isinstance(e, CallAnswered)] == []

    asyncio.run(scenario())


def test_a_strangers_401_to_the_doors_bye_gets_no_authorization(kamailio: Kamailio) -> None:
    """The door (not registering, calls allowed from the stranger's own URI) hangs up a call
    the stranger set up; the stranger answers the BYE with 401 and a nonce of its choosing, in
    the registrar's realm. A digest of the SIP password would be crackable offline."""

    async def scenario() -> None:
        config = door_config(
            kamailio,
            register=False,
            incoming={"allow": [f"sip:620@{STRANGER}"], "answer_after": 0},
        )
        async with Door(config) as door:
            addr = door.phone.local_addr
            with udp(STRANGER) as stranger:
                stranger.sendto(sip("INVITE", stranger, addr, "call", body=SDP), addr)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                ok: SipResponse | None = None
                while ok is None and loop.time() < deadline:
                    for data in drain(stranger):
                        msg = parse_message(data)
                        if isinstance(msg, SipResponse) and msg.status == 200:
                            ok = msg
                    await asyncio.sleep(0.01)
                assert ok is not None, "the door did not answer the allowed call"
                stranger.sendto(sip("ACK", stranger, addr, "ack", call="call", to=ok.to), addr)
                await door.wait_event("answered")
                door.phone.hangup(1)
                bye = await request_to(stranger, "BYE")
                realm = kamailio.realm  # the PBX's own realm, to make it look right
                challenge = (
                    "SIP/2.0 401 Unauthorized\r\n"
                    + "".join(f"Via: {v}\r\n" for v in bye.vias)
                    + f"From: {bye.from_}\r\nTo: {bye.to}\r\nCall-ID: {bye.call_id}\r\n"
                    + f"CSeq: {bye.headers.get('CSeq')}\r\n"
                    + f'WWW-Authenticate: Digest realm="{realm}", nonce="chosen", qop="auth"\r\n'
                    + "Content-Length: 0\r\n\r\n"
                )
                stranger.sendto(challenge.encode(), addr)
                stranger.sendto(sip("OPTIONS", stranger, addr, "marker"), addr)
                await answer_to(stranger, f"marker@{STRANGER}")
                await door.wait_event("ended")
            sent = [data for d, _t, data in door.phone.wire if d == "sent"]
            assert not any(b"Authorization:" in data for data in sent)

    asyncio.run(scenario())


FLOODER = textwrap.dedent(
    r"""
    import socket, sys, time
    host, port, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    strangers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); strangers.bind(("127.0.0.2", 0))
    pbx_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); pbx_side.bind(("127.0.0.1", 0))
    def invite(n, cseq="1", contact="<sip:620@127.0.0.1:5090>", extra=""):
        return (f"INVITE sip:door@{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-fl{n}\r\n"
                f"From: <sip:620@127.0.0.1>;tag=f{n}\r\nTo: <sip:door@{host}>\r\n"
                f"Call-ID: flood{n}@x\r\nCSeq: {cseq} INVITE\r\nContact: {contact}\r\n{extra}"
                "Content-Length: 0\r\n\r\n").encode()
    kinds = [
        lambda n: invite(n, cseq="\u00b2"),
        lambda n: invite(n, contact="<sip:620@127.0.0.1:\u00b2>"),
        lambda n: invite(n, extra="X-Junk: a\r\n" * 900),
        lambda n: b"\x00\xff" * 700,
        lambda n: (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{n}\r\n"
                   "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: s\r\n"
                   "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(),
        lambda n: invite(n).replace(b"620@127", b"666@127"),  # not allowed: one 403
    ]
    gap = 1.0 / rate
    start = time.monotonic()
    for n in range(count):
        data = kinds[n % len(kinds)](n)
        (strangers if n % 2 else pbx_side).sendto(data, (host, port))
        delay = start + (n + 1) * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    """
)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_flood_of_hostile_datagrams_during_a_call(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    """10,000 hostile datagrams in 5 s while a call is up, half from a stranger (dropped unread)
    and half from the PBX's own address (a buggy or hijacked PBX: they reach the parser). The
    call goes on, its audio stays paced, memory stays where it was, and a new call works."""
    phone = handset("621")

    async def scenario() -> None:
        config = door_config(kamailio, incoming={"allow": ["620"], "answer_after": 0})
        async with Door(config) as door:
            await door.wait_event("registered")
            handle = door.phone.call(["621"])
            await door.wait_event("answered")
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            agent = door.phone.agent
            assert agent is not None
            await asyncio.sleep(0.5)
            media = door.phone.media[handle]
            endpoint = door.phone.endpoint
            assert endpoint is not None
            endpoint.on_received = None  # the test's capture would keep every datagram
            rss_before = _rss()
            sent_before = media.stats.sent
            host, port = door.phone.local_addr
            flood = await asyncio.create_subprocess_exec(
                sys.executable, "-c", FLOODER, host, str(port), "10000", "2000"
            )
            assert await flood.wait() == 0
            await asyncio.sleep(0.2)
            assert media.stats.sent - sent_before > 200  # about 5 s of 20 ms frames went out
            assert media.stats.pacing.stdev < 0.003, media.stats.pacing.stdev
            assert [e for e in door.events if isinstance(e, CallEnded)] == []
            assert len(agent.txns.servers) < 20 and agent.incoming == {}
            assert _rss() - rss_before < 8 * 1024 * 1024
            assert agent.untrusted >= 2500  # the stranger's half reached the door (most of it)
            door.phone.hangup(handle)
            await door.wait_event("ended")
            second = door.phone.call(["621"])
            answered = await door.wait_for(
                lambda e: isinstance(e, CallAnswered) and e.call == second, 10, "second call"
            )
            assert answered.call == second
            door.phone.hangup(second)

    asyncio.run(scenario())


TCP_FLOODER = textwrap.dedent(
    r"""
    import contextlib, resource, socket, sys
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the door's lowered limit is not ours
    host, port = sys.argv[1], int(sys.argv[2])
    held = []
    for source, count in (("127.0.0.2", 500), ("127.0.0.1", 100)):
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((host, port))
            held.append(sock)
    print("ready", flush=True)
    sys.stdin.read()  # hold them all until the test is done
    """
)


def test_a_tcp_connection_flood_does_not_stop_the_next_call(
    kamailio: Kamailio, handset: HandsetFactory
) -> None:
    """600 connections, 500 from a stranger and 100 from the PBX's own address, held open while
    the door places a call. The door closes the stranger's at once and caps the rest, so its
    descriptors are not used up (today's limit is lowered to a little above what the door uses,
    as a Pi's 1,024 would be) and the next call, which needs two new RTP sockets, still works."""
    phone = handset("621")

    async def scenario() -> None:
        async with Door(door_config(kamailio, transport="tcp")) as door:
            await door.wait_event("registered")
            host, port = door.phone.local_addr
            endpoint = door.phone.endpoint
            assert endpoint is not None
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 120, hard)
            )
            flood = await asyncio.create_subprocess_exec(
                sys.executable, "-c", TCP_FLOODER, host, str(port),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert flood.stdout is not None and flood.stdin is not None
                assert (await flood.stdout.readline()).strip() == b"ready"
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while endpoint.tcp_refused < 100 and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert endpoint.tcp_refused >= 100  # the flood reached the door
                assert len(endpoint._accepted) <= 32
                handle = door.phone.call(["621"])
                answered = await door.wait_for(
                    lambda e: isinstance(e, CallAnswered) and e.call == handle, 10, "the call"
                )
                assert answered.call == handle
                await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
                door.phone.hangup(handle)
                await door.wait_event("ended")
                assert len(endpoint._accepted) <= 32
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                if flood.stdin is not None:
                    flood.stdin.close()
                await flood.wait()

    asyncio.run(scenario())


def test_flooder_script_runs() -> None:
    """The flood test's flooder on its own: it must send what it says, to something that
    listens, or the flood test would pass by flooding nothing."""
    with udp("127.0.0.1") as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        port = sink.getsockname()[1]
        subprocess.run(
            [sys.executable, "-c", FLOODER, "127.0.0.1", str(port), "60", "10000"], check=True
        )
        got = drain(sink)
    assert len(got) == 60
