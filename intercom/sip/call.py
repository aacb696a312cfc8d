"""Outgoing calls: one INVITE per target, ringing in parallel or in turn, sans-I/O.

A door must never ring forever nor ring twice: every leg ends in a final response, a CANCEL or a
time-out; the first leg to answer wins and the others are cancelled; a 200 that crosses our CANCEL
is ACKed and then ended with BYE, so no phone is left off the hook.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from intercom.errors import AuthError, LocalProtocolError, RemoteProtocolError
from intercom.sip.auth import parse_challenge
from intercom.sip.core import SdpProvider, SipCore
from intercom.sip.dialog import Dialog
from intercom.sip.events import CallAnswered, CallCalling, CallEnded, CallRinging, end_reason_for
from intercom.sip.message import SipRequest, SipResponse
from intercom.sip.session import Session
from intercom.sip.transaction import T1, ClientTransaction

log = logging.getLogger(__name__)


class LegState(enum.Enum):
    CALLING = "calling"  # INVITE sent, nothing heard yet
    RINGING = "ringing"  # a provisional response arrived
    CANCELLING = "cancelling"  # CANCEL sent (or due as soon as a provisional arrives)
    ANSWERED = "answered"  # 2xx received and ACKed
    DONE = "done"


L = LegState
#: Allowed changes of a leg's state, the single source for code and diagram.
LEG_TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    L.CALLING: frozenset({L.CALLING, L.RINGING, L.CANCELLING, L.ANSWERED, L.DONE}),
    L.RINGING: frozenset({L.RINGING, L.CANCELLING, L.ANSWERED, L.DONE}),
    L.CANCELLING: frozenset({L.CANCELLING, L.ANSWERED, L.DONE}),  # a 200 crossed our CANCEL
    L.ANSWERED: frozenset({L.DONE}),
    L.DONE: frozenset(),
}

#: How bad each end reason is when several legs failed: the call reports the most telling one.
_REASON_RANK = ["busy", "rejected", "unavailable", "not_found", "auth_failed", "timeout", "error"]


class Leg:
    def __init__(self, call: OutgoingCall, target: str) -> None:
        self.call = call
        self.core = call.core
        self.target = target
        self.state = LegState.CALLING
        self.call_id = self.core.new_call_id()
        self.tag = self.core.new_tag()
        self.cseq = 0
        self.invite: SipRequest | None = None
        self.txn: ClientTransaction | None = None
        self.auth_failures = 0
        self.rang = False
        self._guard: int | None = None

    def _go(self, new: LegState) -> None:
        if new not in LEG_TRANSITIONS[self.state]:
            raise LocalProtocolError(f"leg: no transition {self.state.value} -> {new.value}")
        self.state = new

    # ---------------------------------------------------------------- INVITE
    def start(self, now: float, auth: tuple[str, str] | None = None) -> None:
        core = self.core
        self.cseq += 1
        req = SipRequest(method="INVITE", uri=self.target)
        req.headers.add("Via", core.via())
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", core.from_header(self.tag))
        req.headers.add("To", f"<{self.target}>")
        req.headers.add("Call-ID", self.call_id)
        req.headers.add("CSeq", f"{self.cseq} INVITE")
        req.headers.add("Contact", core.contact())
        if auth is not None:
            req.headers.add(*auth)
        core.add_common_headers(req)
        req.headers.add("Content-Type", "application/sdp")
        req.body = self.call.local_sdp
        self.invite = req
        self.txn = core.send_request(req, core.proxy_addr(), now, self._on_response, self._timeout)

    def _on_response(self, resp: SipResponse, now: float) -> None:
        status = resp.status
        if status < 200:
            if self.state is LegState.CALLING:
                self._go(LegState.RINGING)
            if self.state is LegState.CANCELLING and self._cancel_due:
                self._send_cancel(now)
            if status in (180, 183) and not self.rang and self.state is LegState.RINGING:
                self.rang = True
                self.call.leg_ringing(self, status)
            return
        if status < 300:
            self._answered(resp, now)
            return
        if status in (401, 407) and self.state in (LegState.CALLING, LegState.RINGING):
            if self._retry_with_auth(resp, now):
                return
            self._done(now)
            self.call.leg_failed(self, status, "auth_failed", now)
            return
        cancelled = self.state is LegState.CANCELLING
        self._done(now)
        if cancelled:
            self.call.leg_failed(self, status, "cancelled", now)
        else:
            self.call.leg_failed(self, status, end_reason_for(status), now)

    def _retry_with_auth(self, resp: SipResponse, now: float) -> bool:
        proxy = resp.status == 407
        value = resp.headers.get("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        digest = self.core.digest
        if value is None or digest is None:
            return False
        try:
            challenge = parse_challenge(value, proxy=proxy)
            if not self.core.may_answer(challenge, self.core.proxy_addr(), now):
                return False
            if not digest.should_retry(challenge, self.auth_failures):
                return False
            header = digest.authorize(challenge, "INVITE", self.target)
        except AuthError as exc:
            log.warning("cannot answer the PBX's challenge: %s", exc)
            return False
        if not challenge.stale:
            self.auth_failures += 1
        # Same Call-ID and From tag, CSeq plus one, a new branch (RFC 3261 22.2).
        self.start(now, (digest.header_name(challenge), header))
        return True

    def _answered(self, resp: SipResponse, now: float) -> None:
        assert self.invite is not None
        try:
            dialog = Dialog.from_uac(self.invite, resp)
        except RemoteProtocolError as exc:
            # No dialog can be built, so there is nothing to ACK or BYE: the leg has failed
            # (the phone gives up on its own 32 s later), and the call must not wait for it.
            log.warning("unusable 2xx from %s: %s", self.target, exc)
            if self.active:
                self._done(now)
                self.call.leg_failed(self, resp.status, "error", now)
            return
        existing = self.core.sessions.get(dialog.key)
        if isinstance(existing, Session):
            existing.resend_ack()  # a retransmitted 2xx: our ACK was lost
            return
        first = self.state in (LegState.CALLING, LegState.RINGING)
        if first or self.state is LegState.CANCELLING:
            self._go(LegState.ANSWERED)
            self._clear_guard()
        session = Session(
            self.core,
            self.call.handle,
            dialog,
            self.call.local_sdp,
            resp.body,
            self.call.ended_by,
            sdp_provider=self.call.sdp_provider,
        )
        entered = self.core.add_session(session)
        session.send_ack(now)
        if entered and first and self.call.accept_answer(self, session, resp, now):
            return
        # The 200 crossed our CANCEL, another phone was first, or a second fork answered:
        # ACK it, then BYE, so that no phone is left off the hook.
        if first and not entered:
            # Sixteen live dialogs already: nothing a door does. Say so, and end the call.
            log.error("too many calls at once: hanging up on %s", self.target)
            session.on_end = lambda reason, code, t: self._done(t)
            session.bye(now)
            self.call.leg_failed(self, 503, "error", now)
            return
        if self.state is LegState.ANSWERED:
            session.on_end = lambda reason, code, t: self._done(t)
        else:
            session.on_end = lambda reason, code, t: None
        session.bye(now)

    def _timeout(self, now: float) -> None:
        cancelled = self.state is LegState.CANCELLING
        self._done(now)
        self.call.leg_failed(self, 408, "cancelled" if cancelled else "timeout", now)

    # ---------------------------------------------------------------- CANCEL
    _cancel_due = False

    def cancel(self, now: float) -> None:
        """Stop ringing this leg. RFC 3261 9.1: no CANCEL before a provisional response."""
        if self.state is LegState.RINGING:
            self._go(LegState.CANCELLING)
            self._send_cancel(now)
        elif self.state is LegState.CALLING:
            self._go(LegState.CANCELLING)
            self._cancel_due = True
        else:
            return
        # Whatever happens, this leg is over within 64*T1 (RFC 3261 9.1).
        self._guard = self.core.timers.call_at(now + 64 * T1, self._give_up)

    def _send_cancel(self, now: float) -> None:
        self._cancel_due = False
        invite = self.invite
        assert invite is not None
        cancel = SipRequest(method="CANCEL", uri=invite.uri)
        cancel.headers.add("Via", invite.vias[0])  # same branch as the INVITE
        for route in invite.headers.get_all("Route"):
            cancel.headers.add("Route", route)
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("From", invite.from_)
        cancel.headers.add("To", invite.to)
        cancel.headers.add("Call-ID", invite.call_id)
        cancel.headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
        self.core.add_common_headers(cancel)
        self.core.send_request(
            cancel, self.core.proxy_addr(), now, lambda r, n: None, lambda n: None
        )

    def _give_up(self, now: float) -> None:
        if self.state is LegState.CANCELLING:
            # RFC 3261 9.1: no final response 64*T1 after the CANCEL; forget the INVITE.
            if self.txn is not None:
                self.txn.cancel_timers()
            self._done(now)
            self.call.leg_failed(self, 408, "cancelled", now)

    def _clear_guard(self) -> None:
        self.core.timers.cancel(self._guard)
        self._guard = None

    def _done(self, now: float) -> None:
        self._clear_guard()
        if self.state is not LegState.DONE:
            self._go(LegState.DONE)
            self.call.leg_finished(self, now)

    @property
    def active(self) -> bool:
        return self.state in (LegState.CALLING, LegState.RINGING, LegState.CANCELLING)


class OutgoingCall:
    def __init__(
        self,
        core: SipCore,
        handle: int,
        targets: list[str],
        *,
        sdp_provider: SdpProvider,
        on_done: Callable[[int], None],
        strategy: str,
        ring_timeout: float,
        max_duration: float,
    ) -> None:
        if strategy not in ("parallel", "sequential"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.core = core
        self.sdp_provider = sdp_provider
        self.on_done = on_done
        self.handle = handle
        self.targets = targets
        self.strategy = strategy
        self.ring_timeout = ring_timeout
        self.max_duration = max_duration
        self.legs: list[Leg] = []
        self.pending = list(targets)
        self.session: Session | None = None
        self.winner: Leg | None = None
        self.ended = False
        self.stopping: str | None = None  # "no_answer" or "local_hangup" once we gave up
        self.failures: list[tuple[str, int, str]] = []  # (target, code, reason)
        self.local_sdp = b""
        self._ring_timer: int | None = None

    def owns_call_id(self, call_id: str) -> bool:
        return any(leg.call_id == call_id for leg in self.legs)

    # ---------------------------------------------------------------- lifecycle
    def start(self, now: float) -> None:
        sdp = self.sdp_provider(self.handle, None)
        if sdp is None:
            self._end("error", None, None, now)
            return
        self.local_sdp = sdp
        if self.strategy == "parallel":
            while self.pending:
                self._start_leg(now)
        else:
            self._start_leg(now)

    def _start_leg(self, now: float) -> None:
        target = self.pending.pop(0)
        leg = Leg(self, target)
        self.legs.append(leg)
        self.core.emit(CallCalling(self.handle, target))
        self._arm_ring_timer(now)
        leg.start(now)

    def _arm_ring_timer(self, now: float) -> None:
        if self.strategy == "parallel" and self._ring_timer is not None:
            return  # one timer for all targets
        self.core.timers.cancel(self._ring_timer)
        self._ring_timer = self.core.timers.call_at(now + self.ring_timeout, self._ring_expired)

    def _ring_expired(self, now: float) -> None:
        self._ring_timer = None
        if self.session is not None or self.ended:
            return
        if self.strategy == "sequential" and self.pending:
            for leg in self.legs:
                leg.cancel(now)  # the next target starts once this leg has ended
            return
        self.stopping = "no_answer"
        self._end("no_answer", None, None, now)
        for leg in self.legs:
            leg.cancel(now)

    def hangup(self, now: float, reason: str = "local_hangup") -> None:
        if self.session is not None and not self.session.ended:
            self.session.bye(now, reason)
            return
        if self.ended:
            return
        self.stopping = "local_hangup"
        self.pending.clear()
        self._end("local_hangup", None, None, now)
        for leg in self.legs:
            leg.cancel(now)

    # ---------------------------------------------------------------- from the legs
    def leg_ringing(self, leg: Leg, code: int) -> None:
        if not self.ended and self.session is None:
            self.core.emit(CallRinging(self.handle, leg.target, code))

    def accept_answer(self, leg: Leg, session: Session, resp: SipResponse, now: float) -> bool:
        """The first answer wins; False tells the leg to hang up again."""
        if self.session is not None or self.ended:
            return False
        self.session = session
        self.winner = leg
        self.core.timers.cancel(self._ring_timer)
        self.pending.clear()
        for other in self.legs:
            if other is not leg:
                other.cancel(now)
        self.core.emit(
            CallAnswered(self.handle, leg.target, resp.status, self.local_sdp, resp.body)
        )
        session.arm_max_duration(now, self.max_duration)
        return True

    def ended_by(self, reason: str, code: int | None, now: float) -> None:
        """The winning session ended (BYE either way, or max duration)."""
        target = self.winner.target if self.winner else None
        if self.winner is not None:
            self.winner._done(now)
        self._end(reason, code, target, now)

    def leg_failed(self, leg: Leg, code: int, reason: str, now: float) -> None:
        if reason != "cancelled":
            self.failures.append((leg.target, code, reason))
        if self.ended or self.session is not None:
            return
        if self.strategy == "sequential" and self.pending and reason != "auth_failed":
            self._start_leg(now)
            return
        if any(other.active for other in self.legs):
            return
        if self.pending and reason != "auth_failed":
            self._start_leg(now)
            return
        self._end_with_failures(now)

    def leg_finished(self, leg: Leg, now: float) -> None:
        idle = all(not o.active and o.state is not LegState.ANSWERED for o in self.legs)
        if idle and self.ended:
            self.on_done(self.handle)

    def _end_with_failures(self, now: float) -> None:
        if not self.failures:
            self._end(self.stopping or "no_answer", None, None, now)
            return
        best = min(
            self.failures,
            key=lambda f: _REASON_RANK.index(f[2]) if f[2] in _REASON_RANK else len(_REASON_RANK),
        )
        self._end(best[2], best[1], best[0], now)

    def _end(self, reason: str, code: int | None, target: str | None, now: float) -> None:
        if self.ended:
            return
        self.ended = True
        self.core.timers.cancel(self._ring_timer)
        self.core.emit(CallEnded(self.handle, reason, code, target))
        if not any(leg.active or leg.state is LegState.ANSWERED for leg in self.legs):
            self.on_done(self.handle)

    def stray_2xx(self, resp: SipResponse, now: float) -> None:
        """A 2xx whose INVITE transaction is gone: ACK it, and hang up if it is not the call."""
        for leg in self.legs:
            if leg.call_id == resp.call_id:
                leg._answered(resp, now)
                return
