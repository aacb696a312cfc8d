"""Events the SIP core hands to its user (the controller, the CLI, the tests).

Frozen, slotted dataclasses that validate themselves when built (after h11's events), so that an
event with an unknown state or reason cannot exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REGISTRATION_STATES = frozenset({"registering", "registered", "unregistered", "failed"})

#: Why a call ended. ``answered`` calls end with local_hangup, remote_hangup or max_duration.
END_REASONS = frozenset(
    {
        "local_hangup",  # we hung up (or cancelled) on request
        "remote_hangup",  # the other side sent BYE
        "max_duration",  # call.max_duration reached
        "rtp_timeout",  # no RTP from the other side for media.rtp_timeout seconds
        "no_answer",  # ring timeout: nobody picked up, we sent CANCEL
        "busy",  # 486, 600
        "rejected",  # 603, or another final refusal
        "not_found",  # 404, 484, 604
        "unavailable",  # 480, 410, 503, 408 from the far end
        "auth_failed",  # our credentials were refused (401/407 again, or 403)
        "timeout",  # the PBX never answered our request (no response at all)
        "cancelled",  # an incoming call was cancelled by the caller
        "error",  # anything else (a 5xx, a 488 codec mismatch, a broken response)
    }
)


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    state: str
    code: int | None = None
    reason: str = ""
    expires: int | None = None  # granted expiry when registered
    retry_in: float | None = None  # seconds until the next attempt after a failure

    def __post_init__(self) -> None:
        if self.state not in REGISTRATION_STATES:
            raise ValueError(f"unknown registration state {self.state!r}")


@dataclass(frozen=True, slots=True)
class CallCalling:
    call: int
    target: str


@dataclass(frozen=True, slots=True)
class CallRinging:
    call: int
    target: str
    code: int


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call: int
    target: str
    code: int
    local_sdp: bytes
    remote_sdp: bytes
    incoming: bool = False


@dataclass(frozen=True, slots=True)
class CallUpdated:
    """A re-INVITE in the call changed the remote media (hold, direct media...)."""

    call: int
    remote_sdp: bytes


@dataclass(frozen=True, slots=True)
class CallEnded:
    call: int
    reason: str
    code: int | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in END_REASONS:
            raise ValueError(f"unknown end reason {self.reason!r}")


@dataclass(frozen=True, slots=True)
class IncomingCall:
    call: int
    caller: str  # the From URI; spoofable, never proof of identity
    allowed: bool
    #: The incoming.allow entry that admitted the call: who it counts as at the door.
    entry: str | None = None


@dataclass(frozen=True, slots=True)
class InfoReceived:
    """A SIP INFO inside a call (DTMF relay and the like), for the media layer."""

    call: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A digit pressed on the other phone: RFC 4733 in the RTP, or a SIP INFO."""

    call: int
    digit: str = field(repr=False)  # a repr in a log line must not spell the door code
    method: str = "rfc4733"  # or "info"

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {self.digit!r}")
        if self.method not in ("rfc4733", "info"):
            raise ValueError(f"unknown DTMF method {self.method!r}")


Event = (
    RegistrationChanged
    | CallCalling
    | CallRinging
    | CallAnswered
    | CallUpdated
    | CallEnded
    | IncomingCall
    | InfoReceived
    | DtmfReceived
)


def end_reason_for(status: int) -> str:
    """The end reason for a final failure response to our INVITE."""
    if status in (486, 600):
        return "busy"
    if status in (404, 484, 604):
        return "not_found"
    if status in (480, 410, 503, 408):
        return "unavailable"
    if status in (401, 407, 403):
        return "auth_failed"
    if status in (603, 606) or (400 <= status < 500 and status != 488):
        return "rejected"
    return "error"
