"""The intercom's call state, as a table: SIP core events in, the new state out.

Every state the outside world sees (the CLI's JSON, later MQTT and Home Assistant) comes from this
one table, so the states can't disagree between outputs. ``scripts/draw_states`` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

from intercom.sip.events import (
    CallAnswered,
    CallCalling,
    CallEnded,
    CallRinging,
    DtmfReceived,
    Event,
    IncomingCall,
    RegistrationChanged,
)

CALL_STATES = ("idle", "calling", "ringing", "in_call", "ended", "error")

#: End reasons that mean something is wrong with the door's setup, not with the callee.
ERROR_REASONS = frozenset({"auth_failed", "timeout", "error"})

_IDLE_LIKE = ("idle", "ended", "error")

#: (state, event name) -> new state. A pair that is missing leaves the state as it is.
TRANSITIONS: dict[tuple[str, str], str] = {
    **{(s, "calling"): "calling" for s in _IDLE_LIKE},
    ("calling", "calling"): "calling",  # the next target of a sequential call, or another fork
    ("ringing", "calling"): "calling",
    ("calling", "ringing"): "ringing",
    **{(s, "incoming"): "ringing" for s in _IDLE_LIKE},
    ("calling", "answered"): "in_call",
    ("ringing", "answered"): "in_call",
    **{(s, "ended"): "ended" for s in ("calling", "ringing", "in_call")},
    # A call that was up can fail too: our 2xx never ACKed (often NAT) ends it with "error".
    **{(s, "failed"): "error" for s in ("calling", "ringing", "in_call")},
}


def event_name(event: Event) -> str:
    """The public name of an event, as printed by ``intercom ring --json``."""
    if isinstance(event, RegistrationChanged):
        return event.state
    if isinstance(event, CallCalling):
        return "calling"
    if isinstance(event, CallRinging):
        return "ringing"
    if isinstance(event, CallAnswered):
        return "answered"
    if isinstance(event, CallEnded):
        return "ended"
    if isinstance(event, IncomingCall):
        return "incoming"
    if isinstance(event, DtmfReceived):
        return "dtmf"
    return type(event).__name__.lower()


@dataclass
class CallStateMachine:
    state: str = "idle"

    def feed(self, event: Event) -> str:
        """Apply one event; returns the state after it."""
        if isinstance(event, RegistrationChanged):
            return self.state  # "failed" there is the registration's, not the call's
        name = event_name(event)
        if isinstance(event, CallEnded) and event.reason in ERROR_REASONS:
            name = "failed"
        self.state = TRANSITIONS.get((self.state, name), self.state)
        return self.state


def describe(event: Event, *, show_digits: bool = False) -> dict[str, object]:
    """The JSON fields of an event: event, target, code and reason where they apply.

    A DTMF event names its digit only with ``show_digits``, which callers set when no door code
    is configured: keyed one by one into a log, the digits would spell the code. Hidden is the
    default, so a new caller that forgets the question leaks nothing.
    """
    out: dict[str, object] = {"event": event_name(event)}
    target = getattr(event, "target", None) or getattr(event, "caller", None)
    if target is not None:
        out["target"] = target
    code = getattr(event, "code", None)
    if code is not None:
        out["code"] = code
    reason = getattr(event, "reason", None)
    if reason:
        out["reason"] = reason
    if isinstance(event, DtmfReceived):
        if show_digits:
            out["digit"] = event.digit
        out["method"] = event.method
    if isinstance(event, RegistrationChanged):
        if event.expires is not None:
            out["expires"] = event.expires
        if event.retry_in is not None:
            out["retry_in"] = event.retry_in
    return out
