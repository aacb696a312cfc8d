"""SIP transactions, RFC 3261 section 17 with the RFC 6026 fixes, sans-I/O.

A transaction retransmits over UDP, absorbs retransmissions from the peer, and tells its user
(the registration, a call leg, the agent) about the responses or requests that matter. It never
touches a socket or a clock: it appends ``(bytes, addr)`` to an outbox and schedules callbacks on a
:class:`~intercom.sip.timers.Timers` queue driven with virtual time.

The allowed state changes of each kind are data (:data:`TRANSITIONS`), so an impossible change is
a bug that raises at once instead of a call that silently hangs; ``scripts/draw_states`` renders
the same tables as diagrams.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from intercom.errors import LocalProtocolError, ProtocolError
from intercom.sip.address import NameAddr, Via
from intercom.sip.message import SipRequest, SipResponse
from intercom.sip.timers import Timers

Addr = tuple[str, int]

T1 = 0.5  # RTT estimate
T2 = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
T4 = 5.0  # maximum duration a message remains in the network
TIMER_D_UNRELIABLE = 32.0
#: No transaction outlives this, whatever its peer does or fails to do: a backstop behind the
#: RFC timers and the call's own (ringing is at most 600 s plus a CANCEL's 32 s).
MAX_LIFETIME = 900.0
#: Transactions held at once, of each kind; past it, new requests get a stateless 503.
MAX_TRANSACTIONS = 128


class State(enum.Enum):
    CALLING = "calling"  # INVITE client, before any response
    TRYING = "trying"  # non-INVITE client/server, before any response
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026: 2xx seen, absorbing retransmissions
    COMPLETED = "completed"
    CONFIRMED = "confirmed"  # INVITE server: ACK for a non-2xx received
    TERMINATED = "terminated"


S = State
TRANSITIONS: dict[str, dict[State, frozenset[State]]] = {
    "invite_client": {
        S.CALLING: frozenset({S.PROCEEDING, S.ACCEPTED, S.COMPLETED, S.TERMINATED}),
        S.PROCEEDING: frozenset({S.PROCEEDING, S.ACCEPTED, S.COMPLETED, S.TERMINATED}),
        S.ACCEPTED: frozenset({S.TERMINATED}),
        S.COMPLETED: frozenset({S.TERMINATED}),
    },
    "non_invite_client": {
        S.TRYING: frozenset({S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
        S.PROCEEDING: frozenset({S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
        S.COMPLETED: frozenset({S.TERMINATED}),
    },
    "invite_server": {
        S.PROCEEDING: frozenset({S.PROCEEDING, S.ACCEPTED, S.COMPLETED, S.TERMINATED}),
        S.ACCEPTED: frozenset({S.TERMINATED}),
        S.COMPLETED: frozenset({S.CONFIRMED, S.TERMINATED}),
        S.CONFIRMED: frozenset({S.TERMINATED}),
    },
    "non_invite_server": {
        S.TRYING: frozenset({S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
        S.PROCEEDING: frozenset({S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
        S.COMPLETED: frozenset({S.TERMINATED}),
    },
}


@dataclass
class Outbox:
    """Where the core leaves what must be sent; the transport adapter drains it."""

    items: list[tuple[bytes, Addr]] = field(default_factory=list)
    on_send: Callable[[bytes, Addr], None] | None = None

    def send(self, data: bytes, addr: Addr) -> None:
        self.items.append((data, addr))
        if self.on_send is not None:
            self.on_send(data, addr)

    def drain(self) -> list[tuple[bytes, Addr]]:
        items, self.items = self.items, []
        return items


class _Transaction:
    kind = ""

    def __init__(self, layer: TransactionLayer, key: tuple[str, str], state: State) -> None:
        self.layer = layer
        self.key = key
        self.state = state
        self._timers: dict[str, int] = {}

    @property
    def reliable(self) -> bool:
        return self.layer.reliable

    def _go(self, new: State) -> None:
        allowed = TRANSITIONS[self.kind].get(self.state, frozenset())
        if new not in allowed:
            raise LocalProtocolError(
                f"{self.kind}: no transition {self.state.value} -> {new.value}"
            )
        self.state = new
        if new is State.TERMINATED:
            for handle in self._timers.values():
                self.layer.timers.cancel(handle)
            self._timers.clear()
            self.layer.forget(self)

    def _arm(self, name: str, when: float, callback: Callable[[float], None]) -> None:
        self.layer.timers.cancel(self._timers.get(name))
        self._timers[name] = self.layer.timers.call_at(when, callback)

    def _disarm(self, name: str) -> None:
        self.layer.timers.cancel(self._timers.pop(name, None))

    def _expire(self, now: float) -> None:
        """:data:`MAX_LIFETIME` is up: end the transaction, whatever state it is in."""
        if self.state is not State.TERMINATED:
            self.state = State.TERMINATED  # not a protocol transition: the backstop
            for name, handle in self._timers.items():
                if name != "lifetime":
                    self.layer.timers.cancel(handle)
            self._timers.clear()
            self.layer.forget(self)
            self._expired(now)

    def _expired(self, now: float) -> None:
        """What the kind does when the backstop fires (a client tells its user)."""


ResponseHandler = Callable[[SipResponse, float], None]
TimeoutHandler = Callable[[float], None]


class ClientTransaction(_Transaction):
    """INVITE or non-INVITE client transaction, chosen by the request's method."""

    def __init__(
        self,
        layer: TransactionLayer,
        request: SipRequest,
        dest: Addr,
        now: float,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
    ) -> None:
        self.invite = request.method == "INVITE"
        self.kind = "invite_client" if self.invite else "non_invite_client"
        branch = Via.parse(request.vias[0]).branch or ""
        super().__init__(layer, (branch, request.method), S.CALLING if self.invite else S.TRYING)
        self.request = request
        self.dest = dest
        self.on_response = on_response
        self.on_timeout = on_timeout
        self._wire = request.to_bytes()
        self._interval = T1
        self._ack: bytes | None = None
        layer.register(self, now)
        layer.outbox.send(self._wire, dest)
        if not self.reliable:
            self._arm("retransmit", now + T1, self._retransmit)
        self._arm("timeout", now + 64 * T1, self._timeout)

    @property
    def branch(self) -> str:
        return self.key[0]

    def _retransmit(self, now: float) -> None:
        if self.state in (S.CALLING, S.TRYING, S.PROCEEDING):
            if self.invite and self.state is S.PROCEEDING:
                return  # timer A stops once a provisional response arrived
            self.layer.outbox.send(self._wire, self.dest)
            self._interval = self._interval * 2 if self.invite else min(self._interval * 2, T2)
            if self.state is S.PROCEEDING:
                self._interval = T2
            self._arm("retransmit", now + self._interval, self._retransmit)

    def _timeout(self, now: float) -> None:
        if self.invite and self.state is not S.CALLING:
            return  # timer B only guards the Calling state
        if self.state in (S.CALLING, S.TRYING, S.PROCEEDING):
            self._go(S.TERMINATED)
            self.on_timeout(now)

    def _expired(self, now: float) -> None:
        self.on_timeout(now)

    def receive(self, response: SipResponse, now: float) -> None:
        status = response.status
        if self.state in (S.COMPLETED, S.TERMINATED):
            if self._ack is not None and status >= 300:
                self.layer.outbox.send(self._ack, self.dest)  # retransmitted final: ACK again
            return
        if self.state is S.ACCEPTED:
            if 200 <= status < 300:
                self.on_response(response, now)  # the TU re-sends its ACK for a repeated 2xx
            return
        if status < 200:
            self._go(S.PROCEEDING)
            if self.invite:
                self._disarm("retransmit")
            self.on_response(response, now)
            return
        self._disarm("retransmit")
        self._disarm("timeout")
        if self.invite and status < 300:
            self._go(S.ACCEPTED)
            self._arm("end", now + 64 * T1, lambda _now: self._go(S.TERMINATED))
        elif self.invite:
            self._ack = self._build_ack(response).to_bytes()
            self.layer.outbox.send(self._ack, self.dest)
            self._go(S.COMPLETED)
            wait = 0.0 if self.reliable else TIMER_D_UNRELIABLE
            self._arm("end", now + wait, lambda _now: self._go(S.TERMINATED))
        else:
            self._go(S.COMPLETED)
            wait = 0.0 if self.reliable else T4
            self._arm("end", now + wait, lambda _now: self._go(S.TERMINATED))
        self.on_response(response, now)

    def _build_ack(self, response: SipResponse) -> SipRequest:
        """The hop-by-hop ACK for a non-2xx final response (RFC 3261 section 17.1.1.3)."""
        req = self.request
        ack = SipRequest(method="ACK", uri=req.uri)
        ack.headers.add("Via", req.vias[0])
        for name in ("Route",):
            for value in req.headers.get_all(name):
                ack.headers.add(name, value)
        ack.headers.add("Max-Forwards", "70")
        ack.headers.add("From", req.from_)
        ack.headers.add("To", response.to)
        ack.headers.add("Call-ID", req.call_id)
        ack.headers.add("CSeq", f"{req.cseq[0]} ACK")
        return ack

    def cancel_timers(self) -> None:
        """Stop retransmitting: used when the transport layer is torn down."""
        if self.state is not S.TERMINATED:
            self._go(S.TERMINATED)


class ServerTransaction(_Transaction):
    """INVITE or non-INVITE server transaction: absorbs retransmitted requests."""

    def __init__(
        self, layer: TransactionLayer, request: SipRequest, source: Addr, now: float
    ) -> None:
        self.invite = request.method == "INVITE"
        self.kind = "invite_server" if self.invite else "non_invite_server"
        branch = Via.parse(request.vias[0]).branch or ""
        super().__init__(layer, (branch, request.method), S.PROCEEDING if self.invite else S.TRYING)
        self.request = request
        self.source = source
        self.last: bytes | None = None
        self.final_status: int | None = None
        self.on_ack: Callable[[SipRequest, float], None] | None = None
        self._interval = T1
        layer.register(self, now)

    def retransmitted(self, request: SipRequest, now: float) -> None:
        """The same request again: repeat the last response, or take an ACK for a non-2xx."""
        if request.method == "ACK":
            if self.state is S.COMPLETED:
                self._disarm("retransmit")
                self._disarm("timeout")
                self._go(S.CONFIRMED)
                wait = 0.0 if self.reliable else T4
                self._arm("end", now + wait, lambda _now: self._go(S.TERMINATED))
            return
        if self.last is not None and self.state is not S.ACCEPTED:
            self.layer.outbox.send(self.last, self.source)

    def respond(self, response: SipResponse, now: float) -> None:
        if self.state in (S.COMPLETED, S.CONFIRMED, S.TERMINATED, S.ACCEPTED):
            raise LocalProtocolError(f"{self.kind}: response after the final one")
        self.last = response.to_bytes()
        self.layer.outbox.send(self.last, self.source)
        status = response.status
        if status < 200:
            self._go(S.PROCEEDING)
            return
        self.final_status = status
        if self.invite and status < 300:
            # RFC 6026: the TU retransmits the 2xx; we only absorb INVITE retransmissions.
            self._go(S.ACCEPTED)
            self._arm("end", now + 64 * T1, lambda _now: self._go(S.TERMINATED))
        elif self.invite:
            self._go(S.COMPLETED)
            if not self.reliable:
                self._arm("retransmit", now + T1, self._retransmit)
            self._arm("timeout", now + 64 * T1, lambda _now: self._go(S.TERMINATED))
        else:
            self._go(S.COMPLETED)
            wait = 0.0 if self.reliable else 64 * T1
            self._arm("end", now + wait, lambda _now: self._go(S.TERMINATED))

    def _retransmit(self, now: float) -> None:
        if self.state is S.COMPLETED and self.last is not None:
            self.layer.outbox.send(self.last, self.source)
            self._interval = min(self._interval * 2, T2)
            self._arm("retransmit", now + self._interval, self._retransmit)


class TransactionLayer:
    """Matches messages to transactions (RFC 3261 sections 17.1.3 and 17.2.3)."""

    def __init__(self, outbox: Outbox, timers: Timers, *, reliable: bool = False) -> None:
        self.outbox = outbox
        self.timers = timers
        self.reliable = reliable
        self.clients: dict[tuple[str, str], ClientTransaction] = {}
        self.servers: dict[tuple[str, str], ServerTransaction] = {}
        self._destinations: dict[str, int] = {}  # host -> client transactions sent there

    def register(self, txn: _Transaction, now: float) -> None:
        txn._timers["lifetime"] = self.timers.call_at(now + MAX_LIFETIME, txn._expire)
        if isinstance(txn, ClientTransaction):
            self.clients[txn.key] = txn
            host = txn.dest[0]
            self._destinations[host] = self._destinations.get(host, 0) + 1
        elif isinstance(txn, ServerTransaction):
            self.servers[txn.key] = txn

    def forget(self, txn: _Transaction) -> None:
        self.timers.cancel(txn._timers.pop("lifetime", None))
        if isinstance(txn, ClientTransaction) and self.clients.get(txn.key) is txn:
            del self.clients[txn.key]
            host = txn.dest[0]
            left = self._destinations.get(host, 0) - 1
            if left > 0:
                self._destinations[host] = left
            else:
                self._destinations.pop(host, None)
        elif isinstance(txn, ServerTransaction) and self.servers.get(txn.key) is txn:
            del self.servers[txn.key]

    def destinations(self) -> frozenset[str]:
        """Hosts our live client transactions went to: their responses may come from there."""
        return frozenset(self._destinations)

    def full(self, server: bool) -> bool:
        table = self.servers if server else self.clients
        return len(table) >= MAX_TRANSACTIONS

    def send_request(
        self,
        request: SipRequest,
        dest: Addr,
        now: float,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
    ) -> ClientTransaction:
        return ClientTransaction(self, request, dest, now, on_response, on_timeout)

    def match_response(self, response: SipResponse) -> ClientTransaction | None:
        try:
            branch = Via.parse(response.vias[0]).branch or ""
            method = response.cseq[1]
        except (IndexError, ProtocolError):
            return None
        return self.clients.get((branch, method))

    def match_request(self, request: SipRequest) -> ServerTransaction | None:
        """The server transaction a request belongs to: a retransmission or an ACK for a non-2xx."""
        branch = Via.parse(request.vias[0]).branch or ""
        method = "INVITE" if request.method == "ACK" else request.method
        txn = self.servers.get((branch, method))
        # An ACK for a 2xx has a new branch, so it never gets here; double-check all the same.
        acked_2xx = txn is not None and txn.final_status is not None and txn.final_status < 300
        if request.method == "ACK" and acked_2xx:
            return None
        return txn

    def invite_server_for_cancel(self, cancel: SipRequest) -> ServerTransaction | None:
        branch = Via.parse(cancel.vias[0]).branch or ""
        return self.servers.get((branch, "INVITE"))

    def create_server(self, request: SipRequest, source: Addr, now: float) -> ServerTransaction:
        return ServerTransaction(self, request, source, now)


def response_to(
    request: SipRequest, status: int, reason: str, *, to_tag: str | None = None
) -> SipResponse:
    """A response that copies Via, From, To, Call-ID and CSeq from the request (section 8.2.6)."""
    resp = SipResponse(status=status, reason=reason)
    for via in request.headers.get_all("Via"):
        resp.headers.add("Via", via)
    resp.headers.add("From", request.from_)
    to = request.to
    if to_tag is not None and NameAddr.parse(to).tag is None:
        to = f"{to};tag={to_tag}"
    resp.headers.add("To", to)
    resp.headers.add("Call-ID", request.call_id)
    resp.headers.add("CSeq", request.headers.get("CSeq") or "")
    if 180 <= status < 300 and request.method == "INVITE":
        for rr in request.headers.get_all("Record-Route"):
            resp.headers.add("Record-Route", rr)
    return resp
