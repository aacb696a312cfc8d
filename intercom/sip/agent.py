"""The SIP user agent, sans-I/O: the one object the transport adapters drive.

Contract (after aioquic): ``receive_datagram(data, addr, now)`` feeds what arrived,
``datagrams_to_send()`` returns what to send, ``get_timer()`` says when to call
``handle_timer(now)`` next, and ``next_event()`` yields what happened. Commands (``register``,
``call``, ``hangup``...) take ``now`` too. The agent never reads a clock or touches a socket, so
every SIP flow, retransmissions and 32-second timers included, is tested in virtual time.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from intercom.errors import ParseError, RemoteProtocolError
from intercom.sip.address import NameAddr, SipUri, Via
from intercom.sip.auth import Credentials, DigestClient
from intercom.sip.call import OutgoingCall
from intercom.sip.dialog import DialogKey
from intercom.sip.events import Event, RegistrationChanged
from intercom.sip.incoming import IncomingInvite
from intercom.sip.message import SipRequest, SipResponse, parse_message
from intercom.sip.registration import Registration
from intercom.sip.session import Session
from intercom.sip.timers import Timers
from intercom.sip.transaction import (
    Addr,
    ClientTransaction,
    Outbox,
    ResponseHandler,
    TimeoutHandler,
    TransactionLayer,
    response_to,
)

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"

#: Makes the local SDP for a call: (call handle, remote offer or None) -> SDP, or None to refuse.
SdpProvider = Callable[[int, bytes | None], bytes | None]


@dataclass(frozen=True)
class AgentSettings:
    username: str
    domain: str  # host[:port] of the SIP domain, used in From, To and the REGISTER URI
    proxy: Addr  # registrar and outbound proxy: every request out of a dialog goes there
    local_host: str  # the address that routes to the PBX (never 0.0.0.0)
    local_port: int
    transport: str = "udp"
    password: str | None = field(default=None, repr=False)
    auth_username: str | None = None
    display_name: str | None = None
    user_agent: str = "pi-intercom"
    expires: int = 300
    allow_incoming: tuple[str, ...] = ()
    answer_after: float | None = 2.0
    max_duration: float = 300.0


def _random_token(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


class UserAgent:
    def __init__(self, settings: AgentSettings, sdp_provider: SdpProvider) -> None:
        self.settings = settings
        self.sdp_provider = sdp_provider
        self.timers = Timers()
        self.outbox = Outbox()
        reliable = settings.transport == "tcp"
        self.txns = TransactionLayer(self.outbox, self.timers, reliable=reliable)
        self.digest: DigestClient | None = None
        if settings.password is not None:
            user = settings.auth_username or settings.username
            self.digest = DigestClient(Credentials(user, settings.password))
        self._events: deque[Event] = deque()
        self._public_host: str | None = None
        self._public_port: int | None = None
        self._handles = 0
        self.registration: Registration | None = None
        self.calls: dict[int, OutgoingCall] = {}
        self.incoming: dict[int, IncomingInvite] = {}
        self.sessions: dict[DialogKey, Session] = {}
        self.dropped = 0  # malformed or unmatched input, logged and dropped

    # ---------------------------------------------------------------- driving interface
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Feed one SIP message. Malformed input is logged and dropped (or answered with 400)."""
        if not data.strip(b"\r\n"):
            return  # keep-alive
        try:
            msg = parse_message(data)
        except ParseError as exc:
            self.dropped += 1
            log.warning("dropped malformed SIP message from %s:%s: %s", addr[0], addr[1], exc)
            self._maybe_answer_400(data, addr, exc)
            return
        try:
            if isinstance(msg, SipResponse):
                self._receive_response(msg, now)
            else:
                self._receive_request(msg, addr, now)
        except RemoteProtocolError as exc:
            self.dropped += 1
            log.warning("dropped SIP message from %s:%s: %s", addr[0], addr[1], exc)
            if isinstance(msg, SipRequest):
                self._maybe_answer_400(data, addr, exc)  # RFC 3261 8.2: malformed values

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        return self.outbox.drain()

    def get_timer(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.timers.run_due(now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ---------------------------------------------------------------- commands
    def register(self, now: float) -> None:
        if self.registration is None:
            self.registration = Registration(self, self.settings.expires)
        self.registration.start(now)

    def unregister(self, now: float) -> None:
        if self.registration is not None:
            self.registration.stop(now)

    @property
    def registered(self) -> bool:
        return self.registration is not None and self.registration.registered

    def call(
        self,
        targets: list[str],
        now: float,
        *,
        strategy: str = "parallel",
        ring_timeout: float = 30.0,
        max_duration: float | None = None,
    ) -> int:
        """Ring ``targets``; returns the call's handle, used in every event about it."""
        if not targets:
            raise ValueError("no target to call")
        handle = self._new_handle()
        call = OutgoingCall(
            self,
            handle,
            [self.target_uri(t) for t in targets],
            strategy=strategy,
            ring_timeout=ring_timeout,
            max_duration=max_duration if max_duration is not None else self.settings.max_duration,
        )
        self.calls[handle] = call
        call.start(now)
        return handle

    def hangup(self, handle: int, now: float, reason: str = "local_hangup") -> None:
        """Cancel a ringing call or end an established one; unknown handles are ignored.

        ``reason`` says why in the CallEnded event of an established call: ``local_hangup``,
        or ``rtp_timeout`` when the media layer heard nothing for too long.
        """
        if handle in self.calls:
            self.calls[handle].hangup(now, reason)
        elif handle in self.incoming:
            self.incoming[handle].hangup(now, reason)

    def answer(self, handle: int, now: float) -> None:
        if handle in self.incoming:
            self.incoming[handle].answer(now)

    def send_info(self, handle: int, content_type: str, body: bytes, now: float) -> None:
        for session in self.sessions.values():
            if session.handle == handle:
                session.send_info(content_type, body, now)

    def active_calls(self) -> list[int]:
        return sorted(set(self.calls) | set(self.incoming))

    # ---------------------------------------------------------------- helpers for the parts
    def emit(self, event: Event) -> None:
        self._events.append(event)

    def _new_handle(self) -> int:
        self._handles += 1
        return self._handles

    def new_call_id(self) -> str:
        return f"{_random_token(12)}@pi-intercom"

    def new_tag(self) -> str:
        return _random_token(6)

    def new_branch(self) -> str:
        return "z9hG4bK" + _random_token(10)

    def via(self, branch: str | None = None) -> str:
        s = self.settings
        transport = s.transport.upper()
        branch = branch or self.new_branch()
        return f"SIP/2.0/{transport} {s.local_host}:{s.local_port};rport;branch={branch}"

    def contact_uri(self) -> SipUri:
        s = self.settings
        host = self._public_host or s.local_host
        port = self._public_port or s.local_port
        params: dict[str, str | None] = {}
        if s.transport == "tcp":
            params["transport"] = "tcp"
        return SipUri("sip", s.username, host, port, params)

    def contact(self) -> str:
        return f"<{self.contact_uri()}>"

    def learn_public_address(self, host: str | None, port: int | None) -> bool:
        """Take the address the registrar saw (Via received/rport); True when it changed."""
        new_host = host or self._public_host or self.settings.local_host
        new_port = port or self._public_port or self.settings.local_port
        old_host = self._public_host or self.settings.local_host
        old_port = self._public_port or self.settings.local_port
        if (new_host, new_port) == (old_host, old_port):
            return False
        log.info("the PBX sees this door at %s:%s; using it in Contact", new_host, new_port)
        self._public_host, self._public_port = new_host, new_port
        return True

    def proxy_addr(self) -> Addr:
        return self.settings.proxy

    def addr_of(self, uri: SipUri) -> Addr:
        """Where to send a request whose next hop is ``uri`` (no DNS SRV: the PBX is local)."""
        default = 5061 if uri.scheme == "sips" else 5060
        return (uri.host.strip("[]"), uri.port or default)

    def target_uri(self, target: str) -> str:
        target = target.strip()
        if target.startswith(("sip:", "sips:")):
            return target
        return f"sip:{target}@{self.settings.domain}"

    def from_header(self, tag: str) -> str:
        s = self.settings
        display = f'"{s.display_name}" ' if s.display_name else ""
        return f"{display}<sip:{s.username}@{s.domain}>;tag={tag}"

    def add_common_headers(self, req: SipRequest) -> None:
        req.headers.add("User-Agent", self.settings.user_agent)
        if req.method in ("INVITE", "REGISTER", "OPTIONS") or req.method == "UPDATE":
            req.headers.add("Allow", ALLOW)

    def send_request(
        self,
        req: SipRequest,
        dest: Addr,
        now: float,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
    ) -> ClientTransaction:
        return self.txns.send_request(req, dest, now, on_response, on_timeout)

    def send_stateless(self, msg: SipRequest | SipResponse, dest: Addr) -> None:
        self.outbox.send(msg.to_bytes(), dest)

    def answer_stateless(self, req: SipRequest, addr: Addr, status: int, reason: str) -> None:
        resp = response_to(req, status, reason, to_tag=self.new_tag() if status >= 200 else None)
        resp.headers.add("Server", self.settings.user_agent)
        self.outbox.send(resp.to_bytes(), addr)

    def forget_call(self, handle: int) -> None:
        self.calls.pop(handle, None)
        self.incoming.pop(handle, None)

    # ---------------------------------------------------------------- dispatch
    def _receive_response(self, resp: SipResponse, now: float) -> None:
        txn = self.txns.match_response(resp)
        if txn is not None:
            txn.receive(resp, now)
            return
        method = resp.cseq[1]
        if method == "INVITE" and 200 <= resp.status < 300:
            # A 2xx retransmitted after its transaction ended, or from a second fork.
            for call in list(self.calls.values()):
                if call.owns_call_id(resp.call_id):
                    call.stray_2xx(resp, now)
                    return
            for session in self.sessions.values():
                if session.dialog.call_id == resp.call_id:
                    session.resend_ack()
                    return
        self.dropped += 1
        log.debug("dropped a response that matches no transaction: %s %s", resp.status, method)

    def _receive_request(self, req: SipRequest, addr: Addr, now: float) -> None:
        self._stamp_via(req, addr)
        txn = self.txns.match_request(req)
        if txn is not None:
            txn.retransmitted(req, now)
            return
        to_tag = NameAddr.parse(req.to).tag
        NameAddr.parse(req.from_)  # a malformed From is refused before any state is made
        if req.method == "ACK":
            session = self._find_session(req)
            if session is not None:
                session.ack_received(req, now)
            return
        if req.method == "CANCEL":
            self._receive_cancel(req, addr, now)
            return
        if to_tag:
            session = self._find_session(req)
            server = self.txns.create_server(req, addr)
            if session is None:
                server.respond(response_to(req, 481, "Call/Transaction Does Not Exist"), now)
            else:
                session.handle_request(req, server, now)
            return
        server = self.txns.create_server(req, addr)
        if req.method == "INVITE":
            self._receive_invite(req, server, now)
        elif req.method == "OPTIONS":
            resp = response_to(req, 200, "OK", to_tag=self.new_tag())
            resp.headers.add("Allow", ALLOW)
            resp.headers.add("Accept", "application/sdp")
            resp.headers.add("Supported", "")
            resp.headers.add("Server", self.settings.user_agent)
            server.respond(resp, now)
        elif req.method == "BYE":
            server.respond(response_to(req, 481, "Call/Transaction Does Not Exist"), now)
        else:
            resp = response_to(req, 501, "Not Implemented", to_tag=self.new_tag())
            resp.headers.add("Allow", ALLOW)
            server.respond(resp, now)

    def _receive_invite(self, req: SipRequest, server: object, now: float) -> None:
        handle = self._new_handle()
        busy = bool(self.calls) or any(i.active for i in self.incoming.values())
        incoming = IncomingInvite(self, handle, req, server, now, busy=busy)  # type: ignore[arg-type]
        if incoming.active:
            self.incoming[handle] = incoming

    def _receive_cancel(self, req: SipRequest, addr: Addr, now: float) -> None:
        invite_txn = self.txns.invite_server_for_cancel(req)
        server = self.txns.create_server(req, addr)
        if invite_txn is None:
            server.respond(response_to(req, 481, "Call/Transaction Does Not Exist"), now)
            return
        server.respond(response_to(req, 200, "OK"), now)
        for incoming in list(self.incoming.values()):
            if incoming.server is invite_txn:
                incoming.cancelled(now)

    def _find_session(self, req: SipRequest) -> Session | None:
        to_tag = NameAddr.parse(req.to).tag or ""
        from_tag = NameAddr.parse(req.from_).tag or ""
        return self.sessions.get((req.call_id, to_tag, from_tag))

    def _stamp_via(self, req: SipRequest, addr: Addr) -> None:
        """RFC 3261 18.2.1 and RFC 3581: record where the request really came from."""
        vias = req.headers.get_all("Via")
        try:
            top = Via.parse(vias[0])
        except (IndexError, ParseError):
            raise RemoteProtocolError("request without a usable Via") from None
        params = dict(top.params)
        changed = False
        if top.host != addr[0]:
            params["received"] = addr[0]
            changed = True
        if "rport" in params and not params["rport"]:
            params["rport"] = str(addr[1])
            changed = True
        if changed:
            new_top = str(Via(top.transport, top.host, top.port, params))
            rest = vias[1:]
            req.headers.remove("Via")
            # Keep the Via order: the stamped top first, then the others, before other headers.
            req.headers.items[0:0] = [("Via", new_top), *[("Via", v) for v in rest]]

    def _maybe_answer_400(self, data: bytes, addr: Addr, exc: RemoteProtocolError) -> None:
        """RFC 3261 16.3/8.2: a request that parses far enough gets its 400 (or 513) answer."""
        if data.startswith(b"SIP/") or (b"\nVia:" not in data and b"\nv:" not in data):
            return
        try:
            text = data.decode("utf-8", "replace")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            request_line = head[0].split()
            if len(request_line) != 3 or request_line[0] == "ACK":
                return
            resp = SipResponse(status=exc.status_hint, reason="Bad Request")
            if exc.status_hint == 513:
                resp.reason = "Message Too Large"
            wanted = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
            for line in head[1:]:
                name, sep, value = line.partition(":")
                if sep and name.strip().lower() in wanted:
                    resp.headers.add(name.strip(), value.strip())
            if not resp.headers.get("Via"):
                return
            self.outbox.send(resp.to_bytes(), addr)
        except Exception:  # pragma: no cover - best effort on garbage
            return

    def registration_event_pending(self) -> bool:
        return any(isinstance(e, RegistrationChanged) for e in self._events)
