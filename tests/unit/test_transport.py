"""The SIP transport never blocks the event loop, and holds a bounded amount for anyone
(issue 10, findings 5 and 6)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from intercom.transport import Resolver
from tests.unit.sipnet import make_endpoint


def test_a_slow_name_lookup_does_not_stall_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Contact or Record-Route host name that takes seconds to resolve (or never does) must
    not stop SIP and the 20 ms audio clock: today gethostbyname ran on the loop itself."""

    def slow(*args: object, **kw: object) -> object:
        time.sleep(0.6)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    monkeypatch.setattr(socket, "gethostbyname", slow)

    async def scenario() -> None:
        endpoint, sock = make_endpoint()
        await endpoint.start(sock)
        loop = asyncio.get_running_loop()
        ticks: list[float] = []
        for i in range(1, 11):
            loop.call_later(0.02 * i, lambda: ticks.append(loop.time()))
        start = loop.time()
        for _ in range(5):  # a request and its retransmissions
            endpoint._send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("phone.invalid", 5060))
        assert loop.time() - start < 0.05  # returned at once
        await asyncio.sleep(0.3)
        assert len(ticks) == 10  # the clock kept ticking while the name was being looked up
        await asyncio.sleep(0.5)
        assert endpoint.resolver.lookups == 1  # one lookup for all five
        endpoint._send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("phone.invalid", 5060))
        assert endpoint.resolver.lookups == 1  # the failure is cached
        await endpoint.close()

    asyncio.run(scenario())


def test_the_resolver_caches_failures_briefly_and_successes_longer() -> None:
    now = [0.0]

    async def scenario() -> None:
        resolver = Resolver(lambda: now[0], ok_ttl=300, fail_ttl=30)
        assert await resolver.resolve("localhost") == ("127.0.0.1",)
        assert await resolver.resolve("no-such-host.invalid") == ()
        assert resolver.cached("no-such-host.invalid") == ()
        now[0] = 31.0
        assert resolver.cached("no-such-host.invalid") is None
        assert resolver.cached("localhost") == ("127.0.0.1",)
        now[0] = 301.0
        assert resolver.cached("localhost") is None

    asyncio.run(scenario())


def test_the_cache_of_names_is_bounded() -> None:
    async def scenario() -> None:
        resolver = Resolver(lambda: 0.0, max_names=8)
        for i in range(50):
            await resolver.resolve(f"n{i}.invalid")
        assert len(resolver._cache) == 8

    asyncio.run(scenario())


def test_an_idle_tcp_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    import intercom.transport as transport

    monkeypatch.setattr(transport, "TCP_IDLE_TIMEOUT", 0.2)

    async def scenario() -> None:
        endpoint, sock = make_endpoint("tcp", register=False)
        await endpoint.start(sock)
        port = sock.getsockname()[1]
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        await asyncio.sleep(0.05)
        assert len(endpoint._accepted) == 1
        await asyncio.sleep(0.5)  # idle: nothing sent, nothing received
        assert endpoint._accepted == []
        writer.close()
        await endpoint.close()

    asyncio.run(scenario())


def test_a_strangers_tcp_connection_is_closed_at_once_when_closed() -> None:
    async def scenario() -> None:
        endpoint, sock = make_endpoint("tcp")  # register: true
        await endpoint.start(sock)
        port = sock.getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        assert await asyncio.wait_for(reader.read(100), 2) == b""  # closed by the door
        assert endpoint.tcp_refused == 1 and endpoint._accepted == []
        writer.close()
        await endpoint.close()

    asyncio.run(scenario())


def test_a_bad_number_does_not_kill_a_tcp_connection() -> None:
    """Finding 2: a CSeq of '²' raised a ValueError out of the parser, which closed the TCP
    connection it came on; now it is one dropped message, and the next one is answered."""
    from tests.unit.sipnet import request

    def options(cseq: str) -> bytes:
        data = request(
            "OPTIONS",
            "sip:door@127.0.0.1",
            via="SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-tcp" + cseq.encode().hex(),
            from_="<sip:pbx@127.0.0.1>;tag=p",
            to="<sip:door@127.0.0.1>",
            call_id="tcp@pbx",
            cseq=1,
        )
        return data.replace(b"CSeq: 1 ", f"CSeq: {cseq} ".encode())

    async def scenario() -> None:
        endpoint, sock = make_endpoint("tcp", trusted_sources=("127.0.0.1",))
        await endpoint.start(sock)
        reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        writer.write(options("\u00b2") + options("2"))
        await writer.drain()
        refused = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert refused.startswith(b"SIP/2.0 400 Bad Request")  # RFC 3261 8.2: malformed value
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert answer.startswith(b"SIP/2.0 200 OK") and b"CSeq: 2 OPTIONS" in answer
        writer.close()
        await endpoint.close()

    asyncio.run(scenario())
