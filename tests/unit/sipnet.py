"""An in-memory network for sans-I/O SIP agents, with virtual time and packet loss.

After aioquic's tests: datagrams move between agents without sockets; ``run`` advances ``now`` to
the next timer and delivers what is pending, so a 32-second SIP timer costs no wall time.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from intercom.errors import ParseError, RemoteProtocolError
from intercom.sip.agent import AgentSettings, UserAgent
from intercom.sip.events import Event
from intercom.sip.message import Message, SipRequest, SipResponse, parse_message
from intercom.transport import SipEndpoint, bind_sip_socket

Addr = tuple[str, int]


def fixed_sdp(port: int) -> Callable[[int, bytes | None], bytes | None]:
    from intercom import sdp

    def provider(handle: int, offer: bytes | None) -> bytes | None:
        if offer is None:
            return sdp.build("127.0.0.1", port, [sdp.PCMU, sdp.PCMA], session_id=handle)
        try:
            remote = sdp.parse_audio(offer)
        except RemoteProtocolError:
            return None  # like the real provider: an offer we cannot read is refused (488)
        return sdp.answer(remote, "127.0.0.1", port, [sdp.PCMU], session_id=handle)

    return provider


def make_agent(port: int, proxy_port: int, **kw: object) -> UserAgent:
    user = str(kw.pop("username", f"u{port}"))
    settings = AgentSettings(
        username=user,
        domain=str(kw.pop("domain", "127.0.0.1")),
        proxy=("127.0.0.1", proxy_port),
        local_host="127.0.0.1",
        local_port=port,
        **kw,  # type: ignore[arg-type]
    )
    return UserAgent(settings, fixed_sdp(port + 1000))


def make_endpoint(
    transport: str = "udp", *, trace: bool = False, hide_dtmf: bool = False, **kw: object
) -> tuple[SipEndpoint, socket.socket]:
    """A real asyncio endpoint around a door agent, on a free loopback port (for the transport
    tests; its proxy, port 9 on 127.0.0.1, never answers). Start it with
    ``endpoint.start(sock)``."""
    sock = bind_sip_socket("127.0.0.1", 0, transport)
    settings = AgentSettings(
        username="door",
        domain="127.0.0.1",
        proxy=("127.0.0.1", 9),
        local_host="127.0.0.1",
        local_port=sock.getsockname()[1],
        transport=transport,
        **kw,  # type: ignore[arg-type]
    )
    agent = UserAgent(settings, lambda h, o: None)
    return SipEndpoint(agent, trace=trace, hide_dtmf=hide_dtmf), sock


@dataclass
class Net:
    agents: dict[Addr, UserAgent] = field(default_factory=dict)
    now: float = 0.0
    events: dict[Addr, list[Event]] = field(default_factory=dict)
    wire: list[tuple[Addr, Addr, bytes]] = field(default_factory=list)
    drop: Callable[[Addr, Addr, bytes], bool] = lambda src, dst, data: False
    #: An endpoint that is not an agent: a scripted peer gets what is sent to it here.
    inboxes: dict[Addr, list[bytes]] = field(default_factory=dict)
    #: Every datagram an agent sent, with the virtual time it left: (now, src, dst, bytes).
    timeline: list[tuple[float, Addr, Addr, bytes]] = field(default_factory=list)
    #: Scripted peers that react at once: called with (bytes, src, now) instead of filling inboxes.
    handlers: dict[Addr, Callable[[bytes, Addr, float], None]] = field(default_factory=dict)

    def add(self, agent: UserAgent) -> UserAgent:
        addr = (agent.settings.local_host, agent.settings.local_port)
        self.agents[addr] = agent
        self.events[addr] = []
        return agent

    def flush(self) -> bool:
        moved = False
        for src, agent in list(self.agents.items()):
            for data, dst in agent.datagrams_to_send():
                moved = True
                self.wire.append((src, dst, data))
                self.timeline.append((self.now, src, dst, data))
                if self.drop(src, dst, data):
                    continue
                if dst in self.agents:
                    self.agents[dst].receive_datagram(data, src, self.now)
                elif dst in self.handlers:
                    self.handlers[dst](data, src, self.now)
                else:
                    self.inboxes.setdefault(dst, []).append(data)
            while (ev := agent.next_event()) is not None:
                self.events[src].append(ev)
        return moved

    def settle(self) -> None:
        while self.flush():
            pass

    def run(self, until: float) -> None:
        """Deliver everything and fire every timer up to ``until`` (virtual seconds)."""
        self.settle()
        while True:
            deadlines = [d for a in self.agents.values() if (d := a.get_timer()) is not None]
            if not deadlines or min(deadlines) > until:
                break
            self.now = max(self.now, min(deadlines))
            for agent in self.agents.values():
                agent.handle_timer(self.now)
            self.settle()
        self.now = max(self.now, until)

    def inject(self, src: Addr, dst: Addr, data: bytes) -> None:
        self.agents[dst].receive_datagram(data, src, self.now)
        self.settle()

    def sent(self, src: Addr, dst: Addr | None = None) -> list[str]:
        """Start lines of what ``src`` sent (to ``dst``), in order."""
        out = []
        for s, d, data in self.wire:
            if s == src and (dst is None or d == dst):
                out.append(data.split(b"\r\n", 1)[0].decode())
        return out

    def messages(self, src: Addr, start: str) -> list[object]:
        return [
            parse_message(data)
            for s, _d, data in self.wire
            if s == src and data.startswith(start.encode())
        ]

    def sent_at(self, src: Addr, start: str, dst: Addr | None = None) -> list[float]:
        """The virtual times at which ``src`` sent a message whose start line begins ``start``."""
        return [
            t
            for t, s, d, data in self.timeline
            if s == src and (dst is None or d == dst) and data.startswith(start.encode())
        ]


# ------------------------------------------------------------------------------------------------
# Scripted peers: a PBX or a phone played by the test, message by message.

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}


def reply(
    req: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    via: str | None = None,
) -> bytes:
    """A response to ``req`` as a PBX or phone would build it: Via, From, To, Call-ID, CSeq copied.

    ``to_tag`` is added to To unless it already has one; ``via`` replaces the top Via (for
    received/rport); ``headers`` are appended in order.
    """
    resp = SipResponse(status=status, reason=reason or REASONS.get(status, "Whatever"))
    vias = req.headers.get_all("Via")
    if via is not None:
        vias = [via, *vias[1:]]
    for v in vias:
        resp.headers.add("Via", v)
    resp.headers.add("From", req.from_)
    to = req.to
    if to_tag is not None and ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    resp.headers.add("To", to)
    resp.headers.add("Call-ID", req.call_id)
    resp.headers.add("CSeq", req.headers.get("CSeq") or "")
    for name, value in headers:
        resp.headers.add(name, value)
    resp.body = body
    return resp.to_bytes()


def request(
    method: str,
    uri: str,
    *,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """A request crafted by a scripted peer, Via first, with Content-Length set for the body."""
    req = SipRequest(method=method, uri=uri)
    req.headers.add("Via", via)
    req.headers.add("Max-Forwards", "70")
    req.headers.add("From", from_)
    req.headers.add("To", to)
    req.headers.add("Call-ID", call_id)
    req.headers.add("CSeq", f"{cseq} {method}")
    for name, value in headers:
        req.headers.add(name, value)
    req.body = body
    return req.to_bytes()


class ScriptedPeer:
    """An endpoint of ``net`` that is not an agent: the test reads what it got and answers by hand.

    What agents send to ``addr`` is parsed and queued (:meth:`take`); ``script``, when given, is
    called with (peer, message, source) for each arrival and may answer at once with
    :meth:`send`. Everything received is also kept in ``history`` with its arrival time.
    """

    def __init__(
        self,
        net: Net,
        addr: Addr,
        script: Callable[[ScriptedPeer, Message, Addr], None] | None = None,
    ) -> None:
        self.net = net
        self.addr = addr
        self.script = script
        self.pending: list[Message] = []
        self.history: list[tuple[float, Addr, Message]] = []
        self.sent: list[tuple[float, Addr, bytes]] = []
        self.unparsed: list[tuple[float, Addr, bytes]] = []
        self._busy = False
        net.handlers[addr] = self._arrived

    def _arrived(self, data: bytes, src: Addr, now: float) -> None:
        try:
            msg = parse_message(data)
        except ParseError:
            self.unparsed.append((now, src, data))  # a 400 to a request without Call-ID, say
            return
        self.history.append((now, src, msg))
        self.pending.append(msg)
        if self.script is not None:
            self._busy = True
            try:
                self.script(self, msg, src)
            finally:
                self._busy = False

    def take(self) -> list[Message]:
        """Everything received since the last call, in order."""
        out, self.pending = self.pending, []
        return out

    def take_requests(self, method: str | None = None) -> list[SipRequest]:
        return [
            m
            for m in self.take()
            if isinstance(m, SipRequest) and (method is None or m.method == method)
        ]

    def take_one(self, start: str) -> Message:
        """The single message received since the last take, whose start line begins ``start``."""
        got = self.take()
        lines = [_start_line(m) for m in got]
        assert len(got) == 1 and lines[0].startswith(start), f"expected one {start!r}, got {lines}"
        return got[0]

    def send(self, data: bytes, dst: Addr) -> None:
        """Deliver ``data`` to the agent at ``dst`` now, then let the network settle."""
        self.sent.append((self.net.now, dst, data))
        self.net.agents[dst].receive_datagram(data, self.addr, self.net.now)
        if not self._busy:
            self.net.settle()

    def starts(self) -> list[str]:
        """Start lines of everything received so far, in order."""
        return [_start_line(m) for _t, _s, m in self.history]


def _start_line(msg: Message) -> str:
    if isinstance(msg, SipRequest):
        return f"{msg.method} {msg.uri} SIP/2.0"
    return f"SIP/2.0 {msg.status} {msg.reason}"
