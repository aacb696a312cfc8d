"""asyncio adapters around the sans-I/O user agent: they own the sockets, and nothing else does.

:class:`SipEndpoint` feeds what a socket receives into the agent with ``now = loop.time()``, sends
what the agent queued, delivers its events, and keeps one ``loop.call_at`` timer armed at the
agent's next deadline (the shape of aioquic's ``QuicConnectionProtocol``). UDP and TCP differ only
in framing and in how a destination maps to a socket; TLS will be a third ``_Transport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable

from intercom.errors import ParseError
from intercom.sip.agent import UserAgent
from intercom.sip.auth import mask_secrets
from intercom.sip.events import Event
from intercom.sip.message import StreamParser

log = logging.getLogger(__name__)
trace_log = logging.getLogger("intercom.sip.trace")

Addr = tuple[str, int]


def local_address_for(host: str, port: int) -> str:
    """The local address that routes to ``host``: what goes into Via, Contact and SDP.

    A connected UDP socket sends nothing; the kernel just picks the route. This is what keeps
    0.0.0.0 out of every header.
    """
    info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(info[0][4])
        return str(probe.getsockname()[0])


def bind_sip_socket(host: str, port: int, transport: str) -> socket.socket:
    """Bind the SIP socket first, so that port 0 becomes a real port before any header is built.

    Raises OSError naming the address when the port is taken.
    """
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if transport == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if transport == "tcp":
            sock.listen(16)
    except OSError as exc:
        sock.close()
        msg = f"cannot listen on {host}:{port} ({transport}): {exc.strerror}"
        raise OSError(exc.errno, msg) from None
    sock.setblocking(False)
    return sock


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Resolver:
    """Host names to IPv4 addresses, cached: the PBX's name is resolved once, off the loop."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    async def prime(self, host: str) -> str:
        if _is_ip(host):
            return host
        loop = asyncio.get_running_loop()
        info = await loop.getaddrinfo(host, None, family=socket.AF_INET)
        self._cache[host] = str(info[0][4][0])
        return self._cache[host]

    def resolve(self, addr: Addr) -> Addr:
        host, port = addr
        if _is_ip(host):
            return addr
        if host not in self._cache:
            # A name first seen in a dialog's Contact: rare, and a LAN lookup is quick.
            self._cache[host] = socket.gethostbyname(host)
        return (self._cache[host], port)


class SipEndpoint:
    def __init__(self, agent: UserAgent, *, trace: bool = False) -> None:
        self.agent = agent
        self.trace = trace
        self.listeners: list[Callable[[Event], None]] = []
        self.on_sent: Callable[[bytes, Addr], None] | None = None
        self.on_received: Callable[[bytes, Addr], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._resolver = _Resolver()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp: dict[Addr, _TcpConnection] = {}
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "endpoint not started"
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock``, bound by :func:`bind_sip_socket` before the agent was built."""
        self._loop = asyncio.get_running_loop()
        s = self.agent.settings
        await self._resolver.prime(s.proxy[0])
        if s.transport == "tcp":
            self._tcp_server = await self.loop.create_server(
                lambda: _TcpConnection(self, None), sock=sock
            )
        else:
            self._udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), sock=sock
            )

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        for conn in list(self._tcp.values()):
            conn.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            with contextlib.suppress(Exception):
                await self._tcp_server.wait_closed()

    # ---------------------------------------------------------------- the pump
    def received(self, data: bytes, addr: Addr) -> None:
        if self.trace:
            self._trace("received from", addr, data)
        if self.on_received is not None:
            self.on_received(data, addr)
        self.agent.receive_datagram(data, addr, self.now())
        self.pump()

    def pump(self) -> None:
        """Send what the agent queued, hand out its events, re-arm the timer."""
        if self._closed:
            return
        for data, addr in self.agent.datagrams_to_send():
            self._send(data, addr)
        while (event := self.agent.next_event()) is not None:
            for listener in list(self.listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed on %r", event)
        self._arm()

    def _arm(self) -> None:
        deadline = self.agent.get_timer()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.agent.handle_timer(self.now())
        except Exception:  # one broken callback must not stop every later timer
            log.exception("SIP timer callback failed")
        self.pump()

    def command(self, fn: Callable[[float], object]) -> object:
        """Run a command on the agent with the loop's clock, then pump."""
        result = fn(self.now())
        self.pump()
        return result

    # ---------------------------------------------------------------- sending
    def _send(self, data: bytes, addr: Addr) -> None:
        try:
            dest = self._resolver.resolve(addr)
        except OSError as exc:
            log.warning("cannot resolve %s: %s", addr[0], exc)
            return
        if self.trace:
            self._trace("sent to", dest, data)
        if self.on_sent is not None:
            self.on_sent(data, dest)
        if self._udp is not None:
            self._udp.sendto(data, dest)
            return
        conn = self._tcp.get(dest)
        if conn is None:
            conn = _TcpConnection(self, dest)
            self._tcp[dest] = conn
            self.loop.create_task(conn.connect())
        conn.send(data)

    def _trace(self, direction: str, addr: Addr, data: bytes) -> None:
        text = mask_secrets(data.decode("utf-8", "replace"))
        trace_log.debug("%s %s:%s\n%s", direction, addr[0], addr[1], text)

    def tcp_gone(self, conn: _TcpConnection) -> None:
        for key, value in list(self._tcp.items()):
            if value is conn:
                del self._tcp[key]

    def tcp_register(self, addr: Addr, conn: _TcpConnection) -> None:
        self._tcp.setdefault(addr, conn)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.endpoint.received(data, (addr[0], addr[1]))
        except Exception:  # never let one bad datagram stop the socket
            log.exception("error handling a datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _TcpConnection(asyncio.Protocol):
    """One TCP connection, outgoing (``dest`` set) or accepted from a peer."""

    def __init__(self, endpoint: SipEndpoint, dest: Addr | None) -> None:
        self.endpoint = endpoint
        self.dest = dest
        self.peer: Addr | None = dest
        self.parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []

    async def connect(self) -> None:
        assert self.dest is not None
        try:
            await self.endpoint.loop.create_connection(lambda: self, self.dest[0], self.dest[1])
        except OSError as exc:
            log.warning("TCP connection to %s:%s failed: %s", self.dest[0], self.dest[1], exc)
            self.endpoint.tcp_gone(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if self.peer is None and peer:
            self.peer = (peer[0], peer[1])
            self.endpoint.tcp_register(self.peer, self)
        for data in self._pending:
            transport.write(data)
        self._pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self._pending.append(data)
        else:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except ParseError as exc:
            log.warning("closing TCP connection from %s: %s", self.peer, exc)
            self.close()
            return
        for message in messages:
            assert self.peer is not None
            self.endpoint.received(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.endpoint.tcp_gone(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
