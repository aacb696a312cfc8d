"""Who may open the door, and when; pure code, the time is passed in.

Opening the door is the one thing the intercom does that a stranger must not be able to make it
do, so the rules live here, apart from SIP, GPIO and MQTT, where every one of them can be tested
with virtual time:

* Nothing opens the door unless the owner said so: with no ``dtmf_code`` and ``mqtt_open``
  false, every request is refused as ``disabled``.
* A code is only taken from a call the caller marks as allowed (a call the door placed, or one
  from ``incoming.allow``). Caller ID can be spoofed, so the code is the real secret and the
  allowlist only keeps strangers from trying it.
* Digits are collected per call. A complete code of the configured length is compared at once,
  ``#`` ends a shorter entry early, and a pause of ``digit_timeout`` forgets what was keyed, so a
  half-typed code does not prefix the next try.
* ``max_attempts`` wrong codes within ``lockout`` seconds lock DTMF opening for ``lockout``
  seconds, across calls (hanging up and calling again must not reset the count). While locked
  out, digits are not even collected. Wrong codes older than ``lockout`` are forgotten, so a
  household that mistypes once a month is never locked out, and an attacker gets no more tries
  than without that window.
* Codes are compared with :func:`hmac.compare_digest`, which takes as long for a near miss as for
  a wild guess.
* The code and the digits keyed so far appear in no action, message or ``repr``: actions say
  *that* a code was wrong, never what it was.

Refusals that say nothing new (``disabled``, ``not_allowed``, ``locked_out``) are reported once
per call, so an audit log does not get a line per key press. Timers are not needed: the digit
timeout and the end of the lockout are both checked when the next request arrives.
"""

from __future__ import annotations

import hmac
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from intercom.media.dtmf import DIGITS

if TYPE_CHECKING:
    from intercom.config import DoorConfig

__all__ = [
    "CODE_KEYS",
    "DoorAction",
    "DoorRules",
    "LockedOut",
    "OpenDoor",
    "Refused",
    "ScheduleHangup",
]

#: The keys a code may consist of; ``#`` is the end-of-code key.
CODE_KEYS = "0123456789*ABCD"
MAX_CODE_LENGTH = 8

How = Literal["dtmf", "mqtt"]
Reason = Literal["wrong_code", "not_allowed", "locked_out", "disabled"]
_HOWS = ("dtmf", "mqtt")
_REASONS = ("wrong_code", "not_allowed", "locked_out", "disabled")


@dataclass(frozen=True, slots=True)
class OpenDoor:
    """Pulse the door relay. ``who`` is the caller's address, or ``"mqtt"``; for the audit."""

    how: How
    who: str

    def __post_init__(self) -> None:
        if self.how not in _HOWS:
            raise ValueError(f"unknown way to open the door: {self.how!r}")


@dataclass(frozen=True, slots=True)
class Refused:
    """A request to open was refused; for the audit log and the MQTT event."""

    reason: Reason
    who: str

    def __post_init__(self) -> None:
        if self.reason not in _REASONS:
            raise ValueError(f"unknown refusal reason: {self.reason!r}")


@dataclass(frozen=True, slots=True)
class LockedOut:
    """DTMF opening is locked until ``until`` (the same clock as ``now``)."""

    until: float


@dataclass(frozen=True, slots=True)
class ScheduleHangup:
    """Hang up the current call, if one is up, ``after`` seconds from now."""

    after: float

    def __post_init__(self) -> None:
        if not (self.after >= 0 and math.isfinite(self.after)):
            raise ValueError(f"hang-up delay must be a finite number >= 0, not {self.after!r}")


DoorAction = OpenDoor | Refused | LockedOut | ScheduleHangup


class DoorRules:
    """The door-opening rules of one door, with their state (digits, attempts, lockout).

    ``dtmf_code`` is 1 to 8 of ``0-9*ABCD``, or ``""`` for no opening by DTMF. Times are in
    seconds on one monotonic clock, passed in as ``now``.
    """

    __slots__ = (
        "_attempts",
        "_code",
        "_digits",
        "_last_digit",
        "_locked_until",
        "_told",
        "digit_timeout",
        "hangup_after_open",
        "last_opened",
        "lockout",
        "max_attempts",
        "mqtt_open_allowed",
    )

    def __init__(
        self,
        dtmf_code: str,
        digit_timeout: float,
        max_attempts: int,
        lockout: float,
        mqtt_open: bool,
        hangup_after_open: float | None,
    ) -> None:
        code = dtmf_code.upper()
        # The messages name the rule, never the code.
        if len(code) > MAX_CODE_LENGTH or any(ch not in CODE_KEYS for ch in code):
            raise ValueError(f"dtmf_code must be 0 to {MAX_CODE_LENGTH} of 0-9, *, A-D")
        if not (digit_timeout > 0 and math.isfinite(digit_timeout)):
            raise ValueError(f"digit_timeout must be a finite number > 0, not {digit_timeout!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts!r}")
        if not (lockout > 0 and math.isfinite(lockout)):
            raise ValueError(f"lockout must be a finite number > 0, not {lockout!r}")
        if hangup_after_open is not None:
            ScheduleHangup(hangup_after_open)  # validates
        self._code = code.encode("ascii")
        self.digit_timeout = digit_timeout
        self.max_attempts = max_attempts
        self.lockout = lockout
        self.mqtt_open_allowed = mqtt_open
        self.hangup_after_open = hangup_after_open
        self._digits = ""
        self._last_digit = -math.inf
        self._attempts: deque[float] = deque()
        self._locked_until: float | None = None
        self._told: set[Reason] = set()
        self.last_opened: float | None = None
        """When the door was last opened (either way), for state reports."""

    @classmethod
    def from_config(cls, door: DoorConfig | None) -> DoorRules:
        """The rules for ``door``; without a door section, rules that refuse everything."""
        if door is None:
            return cls("", 5.0, 3, 300.0, mqtt_open=False, hangup_after_open=None)
        return cls(
            door.secret(),
            door.digit_timeout,
            door.max_attempts,
            door.lockout,
            mqtt_open=door.mqtt_open,
            hangup_after_open=door.hangup_after_open,
        )

    def __repr__(self) -> str:
        return (
            f"DoorRules(dtmf={'on' if self.dtmf_enabled else 'off'}, "
            f"mqtt_open={self.mqtt_open_allowed}, attempts={len(self._attempts)}, "
            f"locked_until={self._locked_until})"
        )

    @property
    def dtmf_enabled(self) -> bool:
        return bool(self._code)

    @property
    def can_open(self) -> bool:
        """Whether any request could open the door at all."""
        return self.dtmf_enabled or self.mqtt_open_allowed

    def locked_until(self, now: float) -> float | None:
        """The end of the current DTMF lockout, or None when not locked out at ``now``."""
        if self._locked_until is not None and now >= self._locked_until:
            self._locked_until = None
            self._attempts.clear()
            self._told.discard("locked_out")
        return self._locked_until

    def dtmf(self, digit: str, now: float, *, call_allowed: bool, caller: str) -> list[DoorAction]:
        """A key pressed on the phone during a call with ``caller``.

        ``call_allowed`` says whether this call may open the door at all. Returns what to do:
        nothing while a code is being keyed, else one of ``[OpenDoor, ScheduleHangup?]``,
        ``[Refused]`` or ``[Refused("wrong_code"), LockedOut]``.
        """
        if len(digit) != 1 or digit.upper() not in DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        digit = digit.upper()
        if not self.dtmf_enabled:
            return self._refuse_once("disabled", caller)
        if not call_allowed:
            return self._refuse_once("not_allowed", caller)
        if self.locked_until(now) is not None:
            return self._refuse_once("locked_out", caller)
        if now - self._last_digit >= self.digit_timeout:
            self._digits = ""
        self._last_digit = now
        if digit == "#":
            if not self._digits:
                return []  # a lone '#' (or one after a timeout) is no attempt
        else:
            self._digits += digit
            if len(self._digits) < len(self._code):
                return []
        entered, self._digits = self._digits, ""
        if hmac.compare_digest(entered.encode("ascii"), self._code):
            self._attempts.clear()
            return self._open("dtmf", caller, now)
        return self._wrong(caller, now)

    def mqtt_open(self, now: float, *, in_call: bool = False) -> list[DoorAction]:
        """The MQTT "open door" command. The broker authenticates the sender, so neither the
        allowlist nor the DTMF lockout applies; ``mqtt_open`` in the config is the only gate.
        ``in_call`` asks for the hang-up after opening too, as a DTMF opening would."""
        if not self.mqtt_open_allowed:
            return [Refused("disabled", "mqtt")]
        return self._open("mqtt", "mqtt", now, hangup=in_call)

    def call_ended(self) -> None:
        """Forget the digits of this call; attempts and the lockout outlive it."""
        self._digits = ""
        self._last_digit = -math.inf
        self._told.clear()

    def _open(self, how: How, who: str, now: float, *, hangup: bool = True) -> list[DoorAction]:
        self.last_opened = now
        actions: list[DoorAction] = [OpenDoor(how, who)]
        if hangup and self.hangup_after_open is not None:
            actions.append(ScheduleHangup(self.hangup_after_open))
        return actions

    def _wrong(self, caller: str, now: float) -> list[DoorAction]:
        while self._attempts and now - self._attempts[0] >= self.lockout:
            self._attempts.popleft()
        self._attempts.append(now)
        if len(self._attempts) < self.max_attempts:
            return [Refused("wrong_code", caller)]
        self._attempts.clear()
        self._locked_until = now + self.lockout
        self._told.add("locked_out")  # LockedOut said it; the next digit need not
        return [Refused("wrong_code", caller), LockedOut(self._locked_until)]

    def _refuse_once(self, reason: Reason, caller: str) -> list[DoorAction]:
        if reason in self._told:
            return []
        self._told.add(reason)
        return [Refused(reason, caller)]
