"""An established call: the dialog's requests in both directions, sans-I/O.

Re-INVITEs in the middle of a call are routine (hold, transfer, Asterisk's ``direct_media``): each
gets its own 200 with our SDP in a new transaction and never drops the call. The ACK for a 2xx is
end-to-end, built from the dialog, and re-sent whenever the 2xx is.

A session knows the addresses of the dialog's other end (:meth:`Session.peer_hosts`): the agent
takes requests of the dialog only from there (or the PBX), so a SIP INFO with DTMF, a BYE or a
re-INVITE that moves the audio cannot come from a stranger who guessed or sniffed the tags. A
401/407 to one of our requests is answered only when the request went to the PBX
(:meth:`~intercom.sip.core.SipCore.may_answer`).
"""

from __future__ import annotations

from collections.abc import Callable

from intercom.errors import AuthError
from intercom.sip.auth import parse_challenge
from intercom.sip.core import ALLOW, SdpProvider, SipCore
from intercom.sip.dialog import Dialog
from intercom.sip.events import CallUpdated, InfoReceived
from intercom.sip.message import SipRequest, SipResponse
from intercom.sip.transaction import T1, T2, Addr, ServerTransaction, response_to

#: Called once when the session ends: (reason, SIP code or None, now).
EndHandler = Callable[[str, int | None, float], None]


class Session:
    def __init__(
        self,
        core: SipCore,
        handle: int,
        dialog: Dialog,
        local_sdp: bytes,
        remote_sdp: bytes,
        on_end: EndHandler,
        *,
        sdp_provider: SdpProvider,
        source: Addr | None = None,
    ) -> None:
        """``source`` is where the dialog's INVITE came from (an incoming call), if anywhere.

        The creator enters the session into ``core.sessions`` (``core.add_session``).
        """
        self.core = core
        self.sdp_provider = sdp_provider
        self.handle = handle
        self.dialog = dialog
        self._source_host = source[0] if source is not None else None
        self.local_sdp = local_sdp
        self.remote_sdp = remote_sdp
        self.on_end = on_end
        self.ended = False
        self._ack: bytes | None = None  # our ACK for the 2xx, re-sent on each retransmitted 2xx
        self._pending_2xx: bytes | None = None  # our 2xx awaiting ACK (UAS side)
        self._pending_dest: tuple[str, int] | None = None
        self._retx_timer: int | None = None
        self._retx_interval = T1
        self._retx_deadline = 0.0
        self._max_timer: int | None = None
        #: Our 2xx carried an offer (the INVITE had none): the answer comes in the ACK.
        self.awaiting_answer = False
        self.on_answer: Callable[[bytes, float], None] | None = None

        self._peers = self._find_peers()

    def peer_hosts(self) -> frozenset[str]:
        """Where the dialog's other end sends from: its first route or remote target, and the
        source of its INVITE. Only these (and the PBX) may send requests of this dialog."""
        return self._peers

    def _find_peers(self) -> frozenset[str]:
        hosts = {
            self.core.addr_of(self.dialog.next_hop())[0],
            self.dialog.remote_target.host.strip("[]"),
        }
        if self._source_host is not None:
            hosts.add(self._source_host)
        return frozenset(hosts)

    def _update_target(self, msg: SipRequest | SipResponse) -> None:
        self.dialog.update_target(msg)
        self._peers = self._find_peers()

    # ---------------------------------------------------------------- UAC side
    def send_ack(self, now: float) -> None:
        """ACK our INVITE's 2xx: To tag of the 2xx, to its Contact, through the route set."""
        ack = self.dialog.request("ACK", cseq=self.dialog.local_seq)
        ack.headers.items.insert(0, ("Via", self.core.via()))
        self._ack = ack.to_bytes()
        self.core.outbox.send(self._ack, self.core.addr_of(self.dialog.next_hop()))

    def resend_ack(self) -> None:
        if self._ack is not None:
            self.core.outbox.send(self._ack, self.core.addr_of(self.dialog.next_hop()))

    # ---------------------------------------------------------------- UAS side
    def send_2xx_until_acked(
        self, server: ServerTransaction, resp: SipResponse, now: float
    ) -> None:
        """RFC 3261 13.3.1.4: the UAS core retransmits its 2xx until the ACK comes."""
        server.respond(resp, now)
        self._pending_2xx = resp.to_bytes()
        self._pending_dest = server.source
        self._retx_interval = T1
        self._retx_deadline = now + 64 * T1
        self._arm_retx(now + T1)

    def _arm_retx(self, when: float) -> None:
        self.core.timers.cancel(self._retx_timer)
        self._retx_timer = self.core.timers.call_at(when, self._retransmit_2xx)

    def _retransmit_2xx(self, now: float) -> None:
        if self._pending_2xx is None or self.ended:
            return
        if now >= self._retx_deadline:
            self._pending_2xx = None
            self.bye(now, "error", 408)  # no ACK ever came: end the call (section 13.3.1.4)
            return
        # Regardless of transport (RFC 3261 13.3.1.4): the 2xx is end-to-end, and a proxy may
        # carry it over UDP further on.
        assert self._pending_dest is not None
        self.core.outbox.send(self._pending_2xx, self._pending_dest)
        self._retx_interval = min(self._retx_interval * 2, T2)
        # Give up at 64*T1 sharp, not at the first retransmission after it.
        self._arm_retx(min(now + self._retx_interval, self._retx_deadline))

    def ack_received(self, ack: SipRequest, now: float) -> None:
        self._pending_2xx = None
        self.core.timers.cancel(self._retx_timer)
        if self.awaiting_answer and ack.body:
            # Delayed offer: our 200 carried the offer, the ACK carries the answer.
            self.awaiting_answer = False
            self.remote_sdp = ack.body
            if self.on_answer is not None:
                self.on_answer(ack.body, now)
            else:
                self.core.emit(CallUpdated(self.handle, ack.body))

    # ---------------------------------------------------------------- requests in the dialog
    def handle_request(self, req: SipRequest, server: ServerTransaction, now: float) -> None:
        if self.ended:
            server.respond(response_to(req, 481, "Call/Transaction Does Not Exist"), now)
            return
        if not self.dialog.accept_remote_cseq(req):
            server.respond(response_to(req, 500, "Server Internal Error"), now)
            return
        method = req.method
        if method == "BYE":
            server.respond(response_to(req, 200, "OK"), now)
            self._finish("remote_hangup", None, now)
        elif method == "INVITE":
            self._reinvite(req, server, now)
        elif method == "UPDATE":
            self._update_target(req)
            resp = response_to(req, 200, "OK")
            if req.body:
                if not self._take_offer(req, server, now):
                    return
                resp = self._with_sdp(resp, self.local_sdp)
            server.respond(resp, now)
        elif method == "INFO":
            server.respond(response_to(req, 200, "OK"), now)
            ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            self.core.emit(InfoReceived(self.handle, ctype, req.body))
        elif method == "OPTIONS":
            resp = response_to(req, 200, "OK")
            resp.headers.add("Allow", ALLOW)
            server.respond(resp, now)
        else:
            server.respond(response_to(req, 501, "Not Implemented"), now)

    def _reinvite(self, req: SipRequest, server: ServerTransaction, now: float) -> None:
        if self._pending_2xx is not None:
            # Our previous 2xx is not ACKed yet: the peer must retry later (RFC 3261 14.2).
            resp = response_to(req, 500, "Server Internal Error")
            resp.headers.add("Retry-After", "1")
            server.respond(resp, now)
            return
        self._update_target(req)
        if req.body:
            if not self._take_offer(req, server, now):
                return
        else:
            # A re-INVITE without SDP asks for our offer; its answer comes in the ACK.
            self.awaiting_answer = True
        resp = self._with_sdp(response_to(req, 200, "OK"), self.local_sdp)
        self.send_2xx_until_acked(server, resp, now)

    def _take_offer(self, req: SipRequest, server: ServerTransaction, now: float) -> bool:
        """Answer an offer in the call with our SDP (never echo the peer's own offer back).

        False when no codec is shared: the request got its 488 and the call goes on unchanged.
        """
        answer = self.sdp_provider(self.handle, req.body)
        if answer is None:
            server.respond(response_to(req, 488, "Not Acceptable Here"), now)
            return False
        self.local_sdp = answer
        self.remote_sdp = req.body
        self.core.emit(CallUpdated(self.handle, req.body))
        return True

    def _with_sdp(self, resp: SipResponse, sdp: bytes) -> SipResponse:
        resp.headers.add("Contact", self.core.contact())
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = sdp
        return resp

    # ---------------------------------------------------------------- our requests
    def send_info(self, content_type: str, body: bytes, now: float) -> None:
        req = self.dialog.request("INFO")
        req.headers.add("Content-Type", content_type)
        req.body = body
        self._send_in_dialog(req, now)

    def _send_in_dialog(self, req: SipRequest, now: float, *, retried: bool = False) -> None:
        """Send a request of this dialog; answer one 401/407 challenge with credentials."""
        req.headers.items.insert(0, ("Via", self.core.via()))

        dest = self.core.addr_of(self.dialog.next_hop())

        def on_response(resp: SipResponse, t: float) -> None:
            digest = self.core.digest
            if resp.status not in (401, 407) or retried or digest is None:
                return
            proxy = resp.status == 407
            value = resp.headers.get("Proxy-Authenticate" if proxy else "WWW-Authenticate")
            try:
                challenge = parse_challenge(value or "", proxy=proxy)
                if not self.core.may_answer(challenge, dest, t):
                    return
                again = self.dialog.request(req.method)
                for name, header in req.headers.items:
                    if name.lower() in ("content-type", "user-agent", "allow"):
                        again.headers.add(name, header)
                again.body = req.body
                again.headers.add(
                    digest.header_name(challenge),
                    digest.authorize(challenge, req.method, again.uri),
                )
            except AuthError:
                return
            self._send_in_dialog(again, t, retried=True)

        self.core.send_request(req, dest, now, on_response, lambda n: None)

    def arm_max_duration(self, now: float, seconds: float) -> None:
        self._max_timer = self.core.timers.call_at(
            now + seconds, lambda t: self.bye(t, "max_duration", None)
        )

    def bye(self, now: float, reason: str = "local_hangup", code: int | None = None) -> None:
        if self.ended:
            return
        req = self.dialog.request("BYE")
        self.core.add_common_headers(req)
        self._send_in_dialog(req, now)
        self._finish(reason, code, now)

    def _finish(self, reason: str, code: int | None, now: float) -> None:
        if self.ended:
            return
        self.ended = True
        self.core.timers.cancel(self._retx_timer)
        self.core.timers.cancel(self._max_timer)
        # Keep answering retransmitted 2xx with our ACK for a while: leave the dialog reachable.
        self.core.timers.call_at(now + 64 * T1, lambda _n: self._forget())
        self.on_end(reason, code, now)

    def _forget(self) -> None:
        self.core.forget_session(self)
