"""Incoming calls to the door, sans-I/O.

Only callers listed in ``incoming.allow`` ring; anyone else gets 403, and everyone gets 486 while a
call is up. The caller's identity comes from the From header, which anybody can forge, so nothing
here opens a door: identity only decides whether the door answers.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from intercom.errors import ParseError, RemoteProtocolError
from intercom.sip.address import NameAddr
from intercom.sip.dialog import Dialog
from intercom.sip.events import CallAnswered, CallEnded, IncomingCall
from intercom.sip.message import SipRequest
from intercom.sip.session import Session
from intercom.sip.transaction import ServerTransaction, response_to

if TYPE_CHECKING:
    from intercom.sip.agent import UserAgent

log = logging.getLogger(__name__)


class InState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    DONE = "done"


def caller_allowed(caller: NameAddr, allow: tuple[str, ...]) -> bool:
    """Match a caller against ``incoming.allow`` entries: user names or full SIP URIs."""
    user = caller.uri.user or ""
    for entry in allow:
        entry = entry.strip()
        if entry.startswith(("sip:", "sips:")):
            try:
                allowed = NameAddr.parse(entry).uri
            except ParseError:
                continue
            if (allowed.user, allowed.host.lower()) == (user, caller.uri.host.lower()):
                return True
        elif entry == user:
            return True
    return False


class IncomingInvite:
    def __init__(
        self,
        agent: UserAgent,
        handle: int,
        invite: SipRequest,
        server: ServerTransaction,
        now: float,
        *,
        busy: bool,
    ) -> None:
        self.agent = agent
        self.handle = handle
        self.invite = invite
        self.server = server
        self.state = InState.DONE
        self.tag = agent.new_tag()
        self.session: Session | None = None
        self._answer_timer: int | None = None
        caller = NameAddr.parse(invite.from_)
        self.caller = str(caller.uri.without_params())
        allowed = caller_allowed(caller, agent.settings.allow_incoming)
        try:
            # Checked now, not when the answer timer fires: no dialog without From tag and Contact.
            self._dialog: Dialog | None = Dialog.from_uas(invite, self.tag)
        except RemoteProtocolError as exc:
            self._final(400, "Bad Request", now)
            log.info("incoming call from %s refused: %s", self.caller, exc)
            return
        if busy:
            self._final(486, "Busy Here", now)
            log.info("incoming call from %s refused: busy", self.caller)
            return
        if not allowed:
            self._final(403, "Forbidden", now)
            log.info("incoming call from %s refused: not in incoming.allow", self.caller)
            return
        self.state = InState.RINGING
        server.respond(response_to(invite, 100, "Trying"), now)
        ringing = response_to(invite, 180, "Ringing", to_tag=self.tag)
        ringing.headers.add("Contact", agent.contact())
        server.respond(ringing, now)
        agent.emit(IncomingCall(handle, self.caller, True))
        delay = agent.settings.answer_after
        if delay is not None:
            self._answer_timer = agent.timers.call_at(now + delay, self.answer)

    @property
    def active(self) -> bool:
        return self.state is not InState.DONE

    def _final(self, status: int, reason: str, now: float) -> None:
        self.server.respond(response_to(self.invite, status, reason, to_tag=self.tag), now)

    def answer(self, now: float) -> None:
        if self.state is not InState.RINGING:
            return
        offer = self.invite.body or None
        sdp = self.agent.sdp_provider(self.handle, offer)
        if sdp is None:
            self._final(488, "Not Acceptable Here", now)
            self._end("error", 488, now)
            return
        dialog = self._dialog
        assert dialog is not None
        self.state = InState.ANSWERED
        self.session = Session(self.agent, self.handle, dialog, sdp, self.invite.body, self._ended)
        resp = response_to(self.invite, 200, "OK", to_tag=self.tag)
        resp.headers.add("Contact", self.agent.contact())
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = sdp
        self.session.send_2xx_until_acked(self.server, resp, now)
        self.session.arm_max_duration(now, self.agent.settings.max_duration)
        if offer is None:
            # Delayed offer: the call is up (media-wise) once the ACK brings the answer.
            self.session.awaiting_answer = True
            self.session.on_answer = lambda body, _t: self.agent.emit(
                CallAnswered(self.handle, self.caller, 200, sdp, body, incoming=True)
            )
            return
        self.agent.emit(
            CallAnswered(self.handle, self.caller, 200, sdp, self.invite.body, incoming=True)
        )

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

    def _ended(self, reason: str, code: int | None, now: float) -> None:
        self._end(reason, code, now)

    def _end(self, reason: str, code: int | None, now: float) -> None:
        if self.state is InState.DONE:
            return
        self.state = InState.DONE
        self.agent.timers.cancel(self._answer_timer)
        self.agent.emit(CallEnded(self.handle, reason, code, self.caller))
        self.agent.forget_call(self.handle)
