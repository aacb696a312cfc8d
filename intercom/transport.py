"""asyncio adapters around the sans-I/O user agent: they own the sockets, and nothing else does.

:class:`SipEndpoint` feeds what a socket receives into the agent with ``now = loop.time()``, sends
what the agent queued, delivers its events, and keeps one ``loop.call_at`` timer armed at the
agent's next deadline (the shape of aioquic's ``QuicConnectionProtocol``). UDP and TCP differ only
in framing and in how a destination maps to a socket.

Nothing here may block the event loop, which also paces the audio every 20 ms: host names are
looked up with the loop's own resolver (:class:`Resolver`), with a cache of successes and a
shorter one of failures, and a datagram to a name not yet known waits for the answer. TCP is
bounded like everything else: a cap on connections in all and per address, an idle time-out, a
cap on what a peer that does not read may make the door buffer, and with ``sip.register: true``
a connection from a stranger is closed as soon as it is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable

from intercom.errors import ParseError
from intercom.ratelimit import LogLimiter
from intercom.sip.agent import UserAgent
from intercom.sip.events import Event
from intercom.sip.message import StreamParser
from intercom.sip.trace import trace_text
from intercom.sip.trust import is_ip

log = logging.getLogger(__name__)
trace_log = logging.getLogger("intercom.sip.trace")

Addr = tuple[str, int]

#: TCP bounds (a door talks to one PBX: a handful of connections is all it ever needs).
MAX_TCP_CONNECTIONS = 32
MAX_TCP_PER_HOST = 4
TCP_IDLE_TIMEOUT = 120.0
#: What may wait in the kernel-side write buffer of a peer that does not read; then it is closed.
MAX_TCP_WRITE_BUFFER = 256 * 1024


async def local_address_for(host: str, port: int) -> str:
    """The local address that routes to ``host``: what goes into Via, Contact and SDP.

    A connected UDP socket sends nothing; the kernel just picks the route. This is what keeps
    0.0.0.0 out of every header. The name is looked up on the loop's resolver.
    """
    loop = asyncio.get_running_loop()
    info = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
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
            sock.listen(64)
    except OSError as exc:
        sock.close()
        msg = f"cannot listen on {host}:{port} ({transport}): {exc.strerror}"
        raise OSError(exc.errno, msg) from None
    sock.setblocking(False)
    return sock


class Resolver:
    """Host names to IPv4 addresses, on the loop's resolver, with a bounded cache.

    A success is kept ``ok_ttl`` seconds, a failure ``fail_ttl`` seconds, so a Contact whose name
    does not resolve costs one lookup per half minute, not one per retransmission. ``clock`` is
    the loop's time.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ok_ttl: float = 300.0,
        fail_ttl: float = 30.0,
        max_names: int = 64,
    ) -> None:
        self.clock = clock
        self.ok_ttl = ok_ttl
        self.fail_ttl = fail_ttl
        self.max_names = max_names
        self.lookups = 0
        # name -> (expiry, addresses; empty when the lookup failed)
        self._cache: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()

    def cached(self, host: str) -> tuple[str, ...] | None:
        """The fresh answer for ``host`` (an empty tuple: it does not resolve), or None."""
        entry = self._cache.get(host)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    async def resolve(self, host: str) -> tuple[str, ...]:
        """Every IPv4 address of ``host`` (empty when it does not resolve), and cache it."""
        if is_ip(host):
            return (host,)
        self.lookups += 1
        loop = asyncio.get_running_loop()
        try:
            info = await loop.getaddrinfo(host, None, family=socket.AF_INET)
        except OSError:
            addresses: tuple[str, ...] = ()
        else:
            addresses = tuple(dict.fromkeys(str(i[4][0]) for i in info))
        ttl = self.ok_ttl if addresses else self.fail_ttl
        self._cache[host] = (self.clock() + ttl, addresses)
        self._cache.move_to_end(host)
        while len(self._cache) > self.max_names:
            self._cache.popitem(last=False)
        return addresses


class SipEndpoint:
    def __init__(self, agent: UserAgent, *, trace: bool = False, hide_dtmf: bool = False) -> None:
        self.agent = agent
        self.trace = trace
        #: A door code is set: DTMF in SIP INFO bodies stays out of the trace.
        self.hide_dtmf = hide_dtmf
        self.listeners: list[Callable[[Event], None]] = []
        self.on_sent: Callable[[bytes, Addr], None] | None = None
        self.on_received: Callable[[bytes, Addr], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.resolver = Resolver(time.monotonic)
        self._waiting: dict[str, list[tuple[bytes, int]]] = {}  # name -> datagrams for it
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp: dict[Addr, _TcpConnection] = {}
        self._accepted: list[_TcpConnection] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.limits = LogLimiter(log)
        self.tcp_refused = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "endpoint not started"
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock``, bound by :func:`bind_sip_socket` before the agent was built."""
        self._loop = asyncio.get_running_loop()
        self.resolver.clock = self._loop.time
        s = self.agent.settings
        for name in dict.fromkeys((s.proxy[0], *s.trusted_sources)):
            addresses = await self.resolver.resolve(name)
            if not addresses:
                raise OSError(f"cannot resolve {name}")
            self.agent.resolved(name, frozenset(addresses))
        if s.transport == "tcp":
            self._tcp_server = await self.loop.create_server(
                lambda: _TcpConnection(self, None), sock=sock
            )
            self._sweeper = self.loop.call_later(TCP_IDLE_TIMEOUT / 4, self._sweep)
        else:
            self._udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), sock=sock
            )

    async def close(self) -> None:
        self._closed = True
        for handle in (self._timer, self._sweeper):
            if handle is not None:
                handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
        for conn in [*self._tcp.values(), *self._accepted]:
            conn.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            with contextlib.suppress(Exception):
                await self._tcp_server.wait_closed()

    # ---------------------------------------------------------------- the pump
    def received(self, data: bytes, addr: Addr) -> None:
        # A stranger's datagram goes to the agent (which counts it) but not to the trace: a
        # flood must not become a flood of log lines.
        if self.trace and self.agent.accepts_from(addr[0]):
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
                    log.exception(
                        "event listener failed on a %s", type(event).__name__
                    )  # no repr: it may hold DTMF
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
        host, port = addr
        if is_ip(host):
            self._send_to(data, addr)
            return
        addresses = self.resolver.cached(host)
        if addresses is None:
            self._wait_for(host, data, port)
        elif addresses:
            self._send_to(data, (addresses[0], port))
        else:
            self._unresolved(host)

    def _wait_for(self, host: str, data: bytes, port: int) -> None:
        """Hold a datagram for a name being looked up (bounded), and start the lookup."""
        waiting = self._waiting.get(host)
        if waiting is None:
            if len(self._waiting) >= self.resolver.max_names:
                return  # that many names at once is an attack on the resolver, not SIP
            waiting = self._waiting[host] = []
            task = self.loop.create_task(self._look_up(host))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if len(waiting) < 32:
            waiting.append((data, port))

    async def _look_up(self, host: str) -> None:
        addresses = await self.resolver.resolve(host)
        waiting = self._waiting.pop(host, [])
        if self._closed:
            return
        if not addresses:
            self._unresolved(host)
            return
        self.agent.resolved(host, frozenset(addresses))
        for data, port in waiting:
            self._send_to(data, (addresses[0], port))

    def _unresolved(self, host: str) -> None:
        self.limits.warning(
            f"unresolved-{host}", self.now(), "cannot send to %s: the name does not resolve", host
        )

    def _send_to(self, data: bytes, dest: Addr) -> None:
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
            task = self.loop.create_task(conn.connect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        conn.send(data)

    def _trace(self, direction: str, addr: Addr, data: bytes) -> None:
        text = trace_text(data, hide_dtmf=self.hide_dtmf)
        trace_log.debug("%s %s:%s\n%s", direction, addr[0], addr[1], text)

    # ---------------------------------------------------------------- TCP bookkeeping
    def tcp_admit(self, conn: _TcpConnection, peer: Addr) -> bool:
        """Whether to keep a connection a peer opened to us; makes room for the PBX."""
        now = self.now()
        if not self.agent.accepts_from(peer[0]):
            self.tcp_refused += 1
            return False
        trusted = self.agent.trust.trusts(peer[0])
        same_host = [c for c in self._accepted if c.peer is not None and c.peer[0] == peer[0]]
        if not trusted and len(same_host) >= MAX_TCP_PER_HOST:
            self.tcp_refused += 1
            self.limits.warning("tcp-host", now, "refused TCP from %s: too many", peer[0])
            return False
        if len(self._accepted) >= MAX_TCP_CONNECTIONS:
            strangers = [c for c in self._accepted if not self.agent.trust.trusts(c.host)]
            if not trusted or not strangers:
                self.tcp_refused += 1
                self.limits.warning("tcp-full", now, "refused a TCP connection: too many open")
                return False
            strangers[0].close()  # the PBX always gets in: make room by closing the oldest
        self._accepted.append(conn)
        self._tcp.setdefault(peer, conn)
        return True

    def tcp_gone(self, conn: _TcpConnection) -> None:
        for key, value in list(self._tcp.items()):
            if value is conn:
                del self._tcp[key]
        if conn in self._accepted:
            self._accepted.remove(conn)

    def _sweep(self) -> None:
        """Close connections idle for :data:`TCP_IDLE_TIMEOUT`, but never the one to the PBX."""
        now = self.now()
        for conn in [*self._tcp.values(), *self._accepted]:
            if conn.dest is not None and self.agent.trust.trusts(conn.dest[0]):
                continue  # the door's own connection to the PBX carries its incoming calls
            if now - conn.last_active > TCP_IDLE_TIMEOUT:
                conn.close()
        if not self._closed:
            self._sweeper = self.loop.call_later(TCP_IDLE_TIMEOUT / 4, self._sweep)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.endpoint.received(data, (addr[0], addr[1]))
        except Exception as exc:  # never let one bad datagram stop the socket
            endpoint = self.endpoint
            written = endpoint.limits.log(
                logging.ERROR,
                "udp-bug",
                endpoint.now(),
                "error handling a datagram from %s: %s: %s",
                addr[0],
                type(exc).__name__,
                str(exc),
            )
            if written:
                log.debug("the error", exc_info=True)

    def error_received(self, exc: Exception) -> None:
        endpoint = self.endpoint
        endpoint.limits.log(logging.DEBUG, "udp-error", endpoint.now(), "UDP error: %s", str(exc))


class _TcpConnection(asyncio.Protocol):
    """One TCP connection, outgoing (``dest`` set) or accepted from a peer."""

    def __init__(self, endpoint: SipEndpoint, dest: Addr | None) -> None:
        self.endpoint = endpoint
        self.dest = dest
        self.peer: Addr | None = dest
        self.parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self.last_active = endpoint.now()

    @property
    def host(self) -> str:
        return self.peer[0] if self.peer is not None else ""

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
        self.last_active = self.endpoint.now()
        if self.dest is None:
            peer = transport.get_extra_info("peername")
            self.peer = (peer[0], peer[1]) if peer else ("", 0)
            if not self.endpoint.tcp_admit(self, self.peer):
                transport.abort()
                self.transport = None
                return
        for data in self._pending:
            transport.write(data)
        self._pending.clear()

    def send(self, data: bytes) -> None:
        self.last_active = self.endpoint.now()
        if self.transport is None:
            if sum(len(d) for d in self._pending) < MAX_TCP_WRITE_BUFFER:
                self._pending.append(data)
            return
        if self.transport.get_write_buffer_size() > MAX_TCP_WRITE_BUFFER:
            log.warning("closing TCP connection to %s: it reads nothing", self.host)
            self.close()
            return
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except ParseError as exc:
            log.warning("closing TCP connection from %s: %s", self.host, exc)
            self.close()
            return
        for message in messages:
            self.last_active = self.endpoint.now()
            assert self.peer is not None
            self.endpoint.received(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.endpoint.tcp_gone(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.endpoint.tcp_gone(self)
