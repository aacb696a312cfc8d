"""The SIP user agent, sans-I/O: the one object the transport adapters drive.

Contract (after aioquic): ``receive_datagram(data, addr, now)`` feeds what arrived,
``datagrams_to_send()`` returns what to send, ``get_timer()`` says when to call
``handle_timer(now)`` next, and ``next_event()`` yields what happened. Commands (``register``,
``call``, ``hangup``...) take ``now`` too. The agent never reads a clock or touches a socket, so
every SIP flow, retransmissions and 32-second timers included, is tested in virtual time.

The agent only dispatches: what the parts share lives in :class:`~intercom.sip.core.SipCore`,
and who may talk to the door is :mod:`intercom.sip.trust`. Hostile input is first a matter of
cost, so the checks run cheapest first: where the datagram came from (a dictionary lookup, before
any parsing), then the parser's caps, then whether it belongs to a dialog or transaction. What a
stranger sends outside a dialog is dropped without an answer; what is refused from a trusted
source is answered once and statelessly, so nothing is held and nothing is retransmitted.
Whatever goes wrong is counted and logged at most once a minute per kind, never a traceback per
datagram.
"""

from __future__ import annotations

import logging

from intercom.errors import ProtocolError, RemoteProtocolError
from intercom.sip.address import NameAddr, Via
from intercom.sip.call import OutgoingCall
from intercom.sip.core import ALLOW, AgentSettings, SdpProvider, SipCore
from intercom.sip.dialog import DialogKey
from intercom.sip.events import Event
from intercom.sip.incoming import IncomingInvite, Refusal, screen
from intercom.sip.message import MAX_HOPS, SipRequest, SipResponse, parse_message
from intercom.sip.registration import Registration
from intercom.sip.session import Session
from intercom.sip.timers import Timers
from intercom.sip.transaction import Addr, TransactionLayer, response_to
from intercom.sip.trust import Trust

__all__ = ["ALLOW", "AgentSettings", "SdpProvider", "UserAgent"]

log = logging.getLogger(__name__)

#: Outgoing calls held at once (the intercom rings one call at a time; the CLI may ring more).
MAX_CALLS = 8


class UserAgent:
    def __init__(self, settings: AgentSettings, sdp_provider: SdpProvider) -> None:
        self.core = SipCore(settings)
        self.settings = settings
        self.sdp_provider = sdp_provider
        self._handles = 0
        self.registration: Registration | None = None
        self.calls: dict[int, OutgoingCall] = {}
        self.incoming: dict[int, IncomingInvite] = {}
        #: Malformed or unmatched input, logged (rate-limited) and dropped.
        self.dropped = 0
        #: Datagrams from strangers while closed (``sip.register: true``), dropped unanswered.
        self.untrusted = 0

    # The parts' shared state, for the transport, the tests and the doctor.
    @property
    def timers(self) -> Timers:
        return self.core.timers

    @property
    def txns(self) -> TransactionLayer:
        return self.core.txns

    @property
    def trust(self) -> Trust:
        return self.core.trust

    @property
    def sessions(self) -> dict[DialogKey, Session]:
        return {k: v for k, v in self.core.sessions.items() if isinstance(v, Session)}

    # ---------------------------------------------------------------- driving interface
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Feed one SIP message. Never raises: bad input is counted, logged and dropped."""
        if not data.strip(b"\r\n"):
            return  # keep-alive
        core = self.core
        if not self.accepts_from(addr[0]):
            self.untrusted += 1
            core.limits.info(
                "untrusted", now, "dropped SIP from %s: not the PBX nor a trusted source", addr[0]
            )
            return
        try:
            self._receive(data, addr, now)
        except Exception as exc:  # a bug must cost one datagram, never the door
            self.dropped += 1
            written = core.limits.log(
                logging.ERROR,
                "bug",
                now,
                "dropped a SIP message from %s after an internal error: %s: %s",
                addr[0],
                type(exc).__name__,
                str(exc),  # never the exception itself: it holds the frames, the datagram
            )
            if written:  # the traceback too, as rarely as the line
                log.debug("the internal error", exc_info=True)

    def _receive(self, data: bytes, addr: Addr, now: float) -> None:
        core = self.core
        try:
            msg = parse_message(data)
        except ProtocolError as exc:
            self.dropped += 1
            core.limits.warning(
                "malformed", now, "dropped malformed SIP from %s: %s", addr[0], str(exc)
            )
            if isinstance(exc, RemoteProtocolError):
                self._maybe_answer_400(data, addr, exc)
            return
        try:
            if isinstance(msg, SipResponse):
                self._receive_response(msg, addr, now)
            else:
                self._receive_request(msg, addr, now)
        except ProtocolError as exc:
            self.dropped += 1
            core.limits.warning("bad-value", now, "dropped SIP from %s: %s", addr[0], str(exc))
            if isinstance(msg, SipRequest) and isinstance(exc, RemoteProtocolError):
                self._maybe_answer_400(data, addr, exc)  # RFC 3261 8.2: malformed values

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        return self.core.outbox.drain()

    def get_timer(self) -> float | None:
        return self.core.timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        def failed(exc: Exception) -> None:
            self.core.limits.log(
                logging.ERROR,
                "timer-bug",
                now,
                "a SIP timer failed: %s: %s",
                type(exc).__name__,
                str(exc),
            )

        self.core.timers.run_due(now, failed)

    def next_event(self) -> Event | None:
        events = self.core.events
        return events.popleft() if events else None

    def resolved(self, name: str, addresses: frozenset[str]) -> None:
        """What a host name resolved to (from the transport): the PBX's name and
        ``trusted_sources`` become trusted addresses; a dialog peer's name, its addresses."""
        self.core.resolved(name, addresses)

    def accepts_from(self, host: str) -> bool:
        """Whether anything from ``host`` is worth reading (the transport asks before it
        traces a datagram or admits a TCP connection)."""
        return not self.core.trust.closed or self._may_send(host)

    # ---------------------------------------------------------------- commands
    def register(self, now: float) -> None:
        if self.registration is None:
            self.registration = Registration(self.core, self.settings.expires)
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
        if len(self.calls) >= MAX_CALLS:
            raise RuntimeError(f"{MAX_CALLS} calls are up already")
        handle = self._new_handle()
        call = OutgoingCall(
            self.core,
            handle,
            [self.core.target_uri(t) for t in targets],
            sdp_provider=self.sdp_provider,
            on_done=self._forget_call,
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

    # ---------------------------------------------------------------- bookkeeping
    def _new_handle(self) -> int:
        self._handles += 1
        return self._handles

    def _forget_call(self, handle: int) -> None:
        self.calls.pop(handle, None)
        self.incoming.pop(handle, None)

    def _may_send(self, host: str) -> bool:
        """Whether a datagram from ``host`` is worth parsing while closed."""
        core = self.core
        return core.trust.trusts(host) or host in core.peer_hosts()

    # ---------------------------------------------------------------- dispatch
    def _receive_response(self, resp: SipResponse, addr: Addr, now: float) -> None:
        core = self.core
        txn = core.txns.match_response(resp)
        if txn is not None:
            if addr[0] != txn.dest[0] and not core.trust.trusts(addr[0]):
                # Right branch, wrong sender: someone who saw our request on the wire.
                self.dropped += 1
                core.limits.warning(
                    "response-source",
                    now,
                    "dropped a response from %s to a request sent to %s",
                    addr[0],
                    txn.dest[0],
                )
                return
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
        self.core.limits.log(
            logging.DEBUG,
            "stray-response",
            now,
            "dropped a response that matches no transaction: %s %s",
            resp.status,
            method,
        )

    def _receive_request(self, req: SipRequest, addr: Addr, now: float) -> None:
        core = self.core
        self._stamp_via(req, addr)
        txn = core.txns.match_request(req)
        if txn is not None:
            if addr[0] == txn.source[0]:
                txn.retransmitted(req, now)
            else:
                self.dropped += 1  # the same branch from elsewhere: not a retransmission
            return
        to_tag = NameAddr.parse(req.to).tag
        NameAddr.parse(req.from_)  # a malformed From is refused before any state is made
        if req.method == "ACK":
            session = self._find_session(req, addr)
            if session is not None:
                session.ack_received(req, now)
            return
        if req.method == "CANCEL":
            self._receive_cancel(req, addr, now)
            return
        if to_tag:
            session = self._find_session(req, addr)
            if session is None:
                self._stateless(req, addr, 481, "Call/Transaction Does Not Exist")
                return
            if core.txns.full(server=True):
                self._overloaded(req, addr, now)
                return
            session.handle_request(req, core.txns.create_server(req, addr, now), now)
            return
        if core.trust.closed and not core.trust.trusts(addr[0]):
            # A dialog's peer may answer and send inside its dialog, but a new request
            # outside one comes only from the PBX.
            self.untrusted += 1
            core.limits.info(
                "untrusted", now, "dropped a %s from %s: not the PBX", req.method, addr[0]
            )
            return
        if req.method == "INVITE":
            self._receive_invite(req, addr, now)
        elif req.method == "OPTIONS":
            resp = response_to(req, 200, "OK", to_tag=core.stateless_tag(req))
            resp.headers.add("Allow", ALLOW)
            resp.headers.add("Accept", "application/sdp")
            resp.headers.add("Supported", "")
            resp.headers.add("Server", self.settings.user_agent)
            core.outbox.send(resp.to_bytes(), addr)
        elif req.method == "BYE":
            self._stateless(req, addr, 481, "Call/Transaction Does Not Exist")
        else:
            self._stateless(req, addr, 501, "Not Implemented", allow=True)

    def _receive_invite(self, req: SipRequest, addr: Addr, now: float) -> None:
        core = self.core
        busy = bool(self.calls) or any(i.active for i in self.incoming.values())
        admission = screen(core, req, addr, busy=busy)
        if isinstance(admission, Refusal):
            status = admission.status
            core.limits.info(
                f"refused-{status}",
                now,
                "incoming call from %s refused: %s",
                addr[0],
                admission.why,
            )
            self._stateless(req, addr, status, admission.reason)
            return
        if core.txns.full(server=True):
            self._overloaded(req, addr, now)
            return
        handle = self._new_handle()
        server = core.txns.create_server(req, addr, now)
        self.incoming[handle] = IncomingInvite(
            core,
            handle,
            admission,
            req,
            server,
            now,
            sdp_provider=self.sdp_provider,
            on_done=self._forget_call,
        )

    def _receive_cancel(self, req: SipRequest, addr: Addr, now: float) -> None:
        core = self.core
        invite_txn = core.txns.invite_server_for_cancel(req)
        if invite_txn is None or invite_txn.source[0] != addr[0]:
            self._stateless(req, addr, 481, "Call/Transaction Does Not Exist")
            return
        core.outbox.send(response_to(req, 200, "OK").to_bytes(), addr)
        for incoming in list(self.incoming.values()):
            if incoming.server is invite_txn:
                incoming.cancelled(now)

    def _find_session(self, req: SipRequest, addr: Addr) -> Session | None:
        """The session a request belongs to, if it came from that dialog's other end."""
        to_tag = NameAddr.parse(req.to).tag or ""
        from_tag = NameAddr.parse(req.from_).tag or ""
        party = self.core.sessions.get((req.call_id, to_tag, from_tag))
        if not isinstance(party, Session):
            return None
        if addr[0] not in party.peer_hosts() and not self.core.trust.trusts(addr[0]):
            return None  # right tags, wrong sender
        return party

    def _stateless(
        self, req: SipRequest, addr: Addr, status: int, reason: str, *, allow: bool = False
    ) -> None:
        """Answer once, keep nothing: a refusal must cost the door no memory and no resends."""
        resp = response_to(req, status, reason, to_tag=self.core.stateless_tag(req))
        if allow:
            resp.headers.add("Allow", ALLOW)
        resp.headers.add("Server", self.settings.user_agent)
        self.core.outbox.send(resp.to_bytes(), addr)

    def _overloaded(self, req: SipRequest, addr: Addr, now: float) -> None:
        self.core.limits.warning(
            "overloaded", now, "too many SIP transactions at once: refusing %s", req.method
        )
        resp = response_to(req, 503, "Service Unavailable", to_tag=self.core.stateless_tag(req))
        resp.headers.add("Retry-After", "5")
        self.core.outbox.send(resp.to_bytes(), addr)

    def _stamp_via(self, req: SipRequest, addr: Addr) -> None:
        """RFC 3261 18.2.1 and RFC 3581: record where the request really came from."""
        vias = req.headers.get_all("Via")
        try:
            top = Via.parse(vias[0])
        except (IndexError, ProtocolError):
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
        """RFC 3261 16.3/8.2: a request that parses far enough gets its 400 (or 513) answer.

        Once, statelessly, with only the headers a response must copy: never larger than what
        came in, so it amplifies nothing.
        """
        if data.startswith(b"SIP/") or (b"\nVia:" not in data and b"\nv:" not in data):
            return
        text = data[:8192].decode("utf-8", "replace")
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        request_line = head[0].split()
        if len(request_line) != 3 or request_line[0] == "ACK":
            return
        resp = SipResponse(status=exc.status_hint, reason="Bad Request")
        if exc.status_hint == 513:
            resp.reason = "Message Too Large"
        wanted = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
        vias = 0
        for line in head[1:40]:
            name, sep, value = line.partition(":")
            key = name.strip().lower()
            if not sep or key not in wanted or not value.strip().isprintable():
                continue
            if key in ("via", "v"):
                vias += 1
                if vias > MAX_HOPS:
                    continue  # a response never carries more Vias than a request may
            resp.headers.add(name.strip(), value.strip())
        if not resp.headers.get("Via"):
            return
        self.core.outbox.send(resp.to_bytes(), addr)
