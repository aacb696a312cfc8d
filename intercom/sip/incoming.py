"""Incoming calls to the door, sans-I/O.

Only callers listed in ``incoming.allow`` ring; anyone else gets 403, and everyone gets 486 while a
call is up. Those refusals are decided before anything is kept (:func:`screen`)
and sent once, statelessly, by the agent: a refused caller costs the door no memory and no
retransmissions. The caller's identity comes from the From header, which anybody can forge, so
an entry matches only where the call came from (:func:`allow_entry`, :mod:`intercom.sip.trust`),
and nothing here opens a door: identity only decides whether the
door answers. An incoming call that is never answered (``answer_after: null``) rings for at most
``incoming_ring_limit`` seconds, then gets 480.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from intercom.errors import LocalProtocolError, ParseError, RemoteProtocolError
from intercom.sip.address import NameAddr
from intercom.sip.core import SdpProvider, SipCore
from intercom.sip.dialog import Dialog
from intercom.sip.events import CallAnswered, CallEnded, IncomingCall
from intercom.sip.message import SipRequest
from intercom.sip.session import Session
from intercom.sip.transaction import Addr, ServerTransaction, response_to
from intercom.sip.trust import is_ip

log = logging.getLogger(__name__)


class InState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    DONE = "done"


I = InState  # noqa: E741
#: Allowed changes of an incoming call's state, the single source for code and diagram.
TRANSITIONS: dict[InState, frozenset[InState]] = {
    I.RINGING: frozenset({I.ANSWERED, I.DONE}),
    I.ANSWERED: frozenset({I.DONE}),
    I.DONE: frozenset(),
}


def allow_entry(
    caller: NameAddr, allow: tuple[str, ...], *, source: str, via_pbx: bool
) -> str | None:
    """The first ``incoming.allow`` entry that admits ``caller``, calling from ``source``.

    The From header is the caller's claim; where the INVITE came from is the fact. So a bare
    user name (``620``) says "this extension of my PBX" and matches only a call that came from
    the PBX (``via_pbx``); a full URI must match user and host, and its host must also be where
    the call came from (an IP address) or the call must have come through the PBX (a host name,
    such as ``sip:620@fritz.box``). The entry is the caller's identity for the door's lockout:
    changing the host of a forged From buys no fresh tries.
    """
    user = caller.uri.user or ""
    for entry in allow:
        text = entry.strip()
        if text.startswith(("sip:", "sips:")):
            try:
                allowed = NameAddr.parse(text).uri
            except ParseError:
                continue
            host = allowed.host.strip("[]").lower()
            if (allowed.user, allowed.host.lower()) != (user, caller.uri.host.lower()):
                continue
            if via_pbx or (is_ip(host) and host == source.strip("[]").lower()):
                return entry
        elif text == user and via_pbx:
            return entry
    return None


@dataclass(frozen=True, slots=True)
class Refusal:
    """An INVITE refused before anything is kept: answered once, statelessly, by the agent."""

    status: int
    reason: str  # the reason phrase
    why: str  # for the log


@dataclass(frozen=True, slots=True)
class Admission:
    """An INVITE that may ring: what :func:`screen` learned of it, kept for the call."""

    caller: NameAddr
    entry: str  # the incoming.allow entry that admitted it: who it counts as at the door
    tag: str  # our To tag
    dialog: Dialog


def screen(core: SipCore, invite: SipRequest, source: Addr, *, busy: bool) -> Refusal | Admission:
    """Whether an INVITE from ``source`` may ring, decided once and before any state is made."""
    try:
        caller = NameAddr.parse(invite.from_)
        tag = core.new_tag()
        # Checked now, not when the answer timer fires: no dialog without From tag, Contact and
        # well-formed Record-Routes.
        dialog = Dialog.from_uas(invite, tag)
    except RemoteProtocolError as exc:
        return Refusal(400, "Bad Request", str(exc))
    if busy:
        return Refusal(486, "Busy Here", "busy")
    via_pbx = core.trust.trusts(source[0])
    entry = allow_entry(caller, core.settings.allow_incoming, source=source[0], via_pbx=via_pbx)
    if entry is None:
        return Refusal(403, "Forbidden", "not in incoming.allow")
    return Admission(caller, entry, tag, dialog)


class IncomingInvite:
    def __init__(
        self,
        core: SipCore,
        handle: int,
        admission: Admission,
        invite: SipRequest,
        server: ServerTransaction,
        now: float,
        *,
        sdp_provider: SdpProvider,
        on_done: Callable[[int], None],
    ) -> None:
        self.core = core
        self.handle = handle
        self.invite = invite
        self.server = server
        self.sdp_provider = sdp_provider
        self.on_done = on_done
        self.tag = admission.tag
        self.session: Session | None = None
        self._timer: int | None = None  # when to answer
        self._limit: int | None = None  # when to give up ringing, answered or not
        self.caller = str(admission.caller.uri.without_params())
        self._dialog = admission.dialog
        self._source = server.source
        self.state = InState.RINGING
        server.respond(response_to(invite, 100, "Trying"), now)
        ringing = response_to(invite, 180, "Ringing", to_tag=self.tag)
        ringing.headers.add("Contact", core.contact())
        server.respond(ringing, now)
        core.emit(IncomingCall(handle, self.caller, True, admission.entry))
        delay = core.settings.answer_after
        if delay is not None:
            self._timer = core.timers.call_at(now + delay, self.answer)
        self._limit = core.timers.call_at(now + core.settings.incoming_ring_limit, self._ring_limit)

    def _go(self, new: InState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"incoming call: no transition {self.state} -> {new}")
        self.state = new

    @property
    def active(self) -> bool:
        return self.state is not InState.DONE

    def _final(self, status: int, reason: str, now: float) -> None:
        self.server.respond(response_to(self.invite, status, reason, to_tag=self.tag), now)

    def answer(self, now: float) -> None:
        if self.state is not InState.RINGING:
            return
        core = self.core
        offer = self.invite.body or None
        sdp = self.sdp_provider(self.handle, offer)
        if sdp is None:
            self._final(488, "Not Acceptable Here", now)
            self._end("error", 488, now)
            return
        session = Session(
            core,
            self.handle,
            self._dialog,
            sdp,
            self.invite.body,
            self._end,
            sdp_provider=self.sdp_provider,
            source=self._source,
        )
        if not core.add_session(session):
            self._final(503, "Service Unavailable", now)
            self._end("error", 503, now)
            return
        self._go(InState.ANSWERED)
        self.session = session
        core.timers.cancel(self._timer)
        core.timers.cancel(self._limit)
        resp = response_to(self.invite, 200, "OK", to_tag=self.tag)
        resp.headers.add("Contact", core.contact())
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = sdp
        session.send_2xx_until_acked(self.server, resp, now)
        session.arm_max_duration(now, core.settings.max_duration)
        if offer is None:
            # Delayed offer: the call is up (media-wise) once the ACK brings the answer.
            session.awaiting_answer = True
            session.on_answer = lambda body, _t: core.emit(
                CallAnswered(self.handle, self.caller, 200, sdp, body, incoming=True)
            )
            return
        core.emit(CallAnswered(self.handle, self.caller, 200, sdp, self.invite.body, incoming=True))

    def _ring_limit(self, now: float) -> None:
        if self.state is InState.RINGING:
            log.info("incoming call from %s rang unanswered for too long: ending it", self.caller)
            self._final(480, "Temporarily Unavailable", now)
            self._end("no_answer", None, now)

    def hangup(self, now: float, reason: str = "local_hangup") -> None:
        if self.state is InState.RINGING:
            self._final(480, "Temporarily Unavailable", now)
            self._end("local_hangup", None, now)
        elif self.session is not None:
            self.session.bye(now, reason)

    def cancelled(self, now: float) -> None:
        if self.state is InState.RINGING:
            self._final(487, "Request Terminated", now)
            self._end("cancelled", 487, now)

    def _end(self, reason: str, code: int | None, now: float) -> None:
        if self.state is InState.DONE:
            return
        self._go(InState.DONE)
        self.core.timers.cancel(self._timer)
        self.core.timers.cancel(self._limit)
        self.core.emit(CallEnded(self.handle, reason, code, self.caller))
        self.on_done(self.handle)
