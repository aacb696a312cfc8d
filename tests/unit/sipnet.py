"""An in-memory network for sans-I/O SIP agents, with virtual time and packet loss.

After aioquic's tests: datagrams move between agents without sockets; ``run`` advances ``now`` to
the next timer and delivers what is pending, so a 32-second SIP timer costs no wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from intercom.sip.agent import AgentSettings, UserAgent
from intercom.sip.events import Event
from intercom.sip.message import parse_message

Addr = tuple[str, int]


def fixed_sdp(port: int) -> Callable[[int, bytes | None], bytes | None]:
    from intercom import sdp

    def provider(handle: int, offer: bytes | None) -> bytes | None:
        if offer is None:
            return sdp.build("127.0.0.1", port, [sdp.PCMU, sdp.PCMA], session_id=handle)
        return sdp.answer(sdp.parse_audio(offer), "127.0.0.1", port, [sdp.PCMU], session_id=handle)

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


@dataclass
class Net:
    agents: dict[Addr, UserAgent] = field(default_factory=dict)
    now: float = 0.0
    events: dict[Addr, list[Event]] = field(default_factory=dict)
    wire: list[tuple[Addr, Addr, bytes]] = field(default_factory=list)
    drop: Callable[[Addr, Addr, bytes], bool] = lambda src, dst, data: False
    #: An endpoint that is not an agent: a scripted peer gets what is sent to it here.
    inboxes: dict[Addr, list[bytes]] = field(default_factory=dict)

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
                if self.drop(src, dst, data):
                    continue
                if dst in self.agents:
                    self.agents[dst].receive_datagram(data, src, self.now)
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
