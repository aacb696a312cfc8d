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
* Wrong codes are counted per caller: ``max_attempts`` wrong codes within ``lockout`` seconds
  lock DTMF opening for that caller, and only that caller, for ``lockout`` seconds, across calls
  (hanging up and calling again must not reset the count). One shared lockout would let anyone
  with an allowed caller ID lock the household out by keying three wrong codes each time the
  lockout ends; per caller, a stranger locks out only the identity they use. The calls the door
  placed are counted apart from the calls it received (there the caller is who answered), so
  whatever strangers do with incoming calls, the resident whom the door rings can always open.
  While locked out, digits are not even collected. Wrong codes older than ``lockout`` are
  forgotten, so a household that mistypes once a month is never locked out, and an attacker
  gets no more tries than without that window.
* The table of callers is bounded (:data:`MAX_CALLERS` per kind of call) and forgets a caller
  ``lockout`` seconds after their last wrong code, which is also when any lockout of theirs ends,
  so a year of uptime does not grow it. When it is full, the caller whose last wrong code is
  oldest and who is not locked out makes room; a table full of locked-out callers locks out a new
  one too (fail closed: evicting a lockout would hand its owner fresh tries).
* ``door/open`` over MQTT is rate-limited: at most :data:`MQTT_OPENS` openings within
  :data:`MQTT_WINDOW` seconds, the other commands refused as ``rate_limited``. The relay itself
  refuses to extend a pulse and rests between pulses (:mod:`intercom.devices`); the limit here
  keeps a stream of commands from buzzing the door open every few seconds for as long as it
  lasts. Commands refused for any reason use none of it.
* Codes are compared with :func:`hmac.compare_digest`, which takes as long for a near miss as for
  a wild guess.
* The code and the digits keyed so far appear in no action, message or ``repr``: actions say
  *that* a code was wrong, never what it was.

Refusals that say nothing new (``disabled``, ``not_allowed``, ``locked_out``) are reported once
per call, so an audit log does not get a line per key press; the app rate-limits what reaches the
log and MQTT further. Timers are not needed: the digit timeout, the end of a lockout and the
rate limit's window are all checked when the next request arrives.
"""

from __future__ import annotations

import hmac
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from intercom.media.dtmf import DIGITS

if TYPE_CHECKING:
    from intercom.config import DoorConfig

__all__ = [
    "CODE_KEYS",
    "MAX_CALLERS",
    "MQTT_OPENS",
    "MQTT_WINDOW",
    "REASONS",
    "DoorAction",
    "DoorRules",
    "LockedOut",
    "OpenDoor",
    "Reason",
    "Refused",
    "ScheduleHangup",
]

#: The keys a code may consist of; ``#`` is the end-of-code key.
CODE_KEYS = "0123456789*ABCD"
MAX_CODE_LENGTH = 8

#: Callers tracked per kind of call (placed by the door, received). Far more than the entries of
#: any ``incoming.allow`` or ``call.targets``, which are the only callers that can key a code.
MAX_CALLERS = 64
#: ``door/open`` commands accepted within :data:`MQTT_WINDOW` seconds; more are ``rate_limited``.
#: A resident who taps "Open door" again because the visitor was slow needs a few, not dozens.
MQTT_OPENS = 5
MQTT_WINDOW = 60.0

How = Literal["dtmf", "mqtt"]
Reason = Literal[
    "wrong_code",
    "not_allowed",
    "locked_out",
    "disabled",
    "rate_limited",  # too many door/open commands in MQTT_WINDOW
    "no_relay",  # GPIO failed, or no door section: nothing to pulse
    "already_open",  # the strike is powered right now; the pulse is not extended
    "relay_resting",  # within the relay's off-time after a pulse
]
_HOWS: tuple[How, ...] = get_args(How)
REASONS: tuple[Reason, ...] = get_args(Reason)
"""Every reason a ``door_refused`` event can give, for the docs and the tests."""


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
        if self.reason not in REASONS:
            raise ValueError(f"unknown refusal reason: {self.reason!r}")


@dataclass(frozen=True, slots=True)
class LockedOut:
    """DTMF opening is locked for ``who`` until ``until`` (the same clock as ``now``)."""

    until: float
    who: str


@dataclass(frozen=True, slots=True)
class ScheduleHangup:
    """Hang up the current call, if one is up, ``after`` seconds from now."""

    after: float

    def __post_init__(self) -> None:
        if not (self.after >= 0 and math.isfinite(self.after)):
            raise ValueError(f"hang-up delay must be a finite number >= 0, not {self.after!r}")


DoorAction = OpenDoor | Refused | LockedOut | ScheduleHangup


@dataclass(slots=True)
class _Tries:
    """One caller's recent wrong codes, or their lockout."""

    wrong: deque[float]
    last: float  # the last wrong code: the entry is forgotten ``lockout`` seconds after it
    locked_until: float | None = None


class _Callers:
    """Wrong codes and lockouts per caller, for one kind of call; bounded in size and time.

    Entries are kept in the order of their last wrong code, so the ones to forget (``lockout``
    seconds after it) are always at the front.
    """

    __slots__ = ("_table", "cap", "lockout", "max_attempts")

    def __init__(self, max_attempts: int, lockout: float, cap: int) -> None:
        self.max_attempts = max_attempts
        self.lockout = lockout
        self.cap = cap
        self._table: dict[str, _Tries] = {}

    def __len__(self) -> int:
        return len(self._table)

    def attempts(self) -> int:
        return sum(len(t.wrong) for t in self._table.values())

    def prune(self, now: float) -> None:
        table = self._table
        while table:
            key, first = next(iter(table.items()))
            if now - first.last < self.lockout:
                break
            del table[key]

    def locked_until(self, who: str, now: float) -> float | None:
        self.prune(now)
        tries = self._table.get(who)
        if tries is not None:
            return tries.locked_until
        if len(self._table) >= self.cap and all(t.locked_until for t in self._table.values()):
            # Full of lockouts: fail closed until the first of them ends.
            return min(t.locked_until or now for t in self._table.values())
        return None

    def clear(self, who: str) -> None:
        self._table.pop(who, None)

    def wrong(self, who: str, now: float) -> float | None:
        """Count a wrong code; the end of the lockout when this one locks ``who`` out."""
        self.prune(now)
        tries = self._table.pop(who, None)
        if tries is None:
            if len(self._table) >= self.cap:
                self._evict()
            tries = _Tries(deque(maxlen=self.max_attempts), now)
        while tries.wrong and now - tries.wrong[0] >= self.lockout:
            tries.wrong.popleft()
        tries.wrong.append(now)
        tries.last = now
        if len(tries.wrong) >= self.max_attempts:
            tries.wrong.clear()
            tries.locked_until = now + self.lockout
        self._table[who] = tries  # to the end: the newest
        return tries.locked_until

    def _evict(self) -> None:
        victim = next((k for k, t in self._table.items() if t.locked_until is None), None)
        if victim is None:  # only reached when callers bypass locked_until(); drop the oldest
            victim = next(iter(self._table))
        del self._table[victim]


class DoorRules:
    """The door-opening rules of one door, with their state (digits, attempts, lockouts).

    ``dtmf_code`` is 1 to 8 of ``0-9*ABCD``, or ``""`` for no opening by DTMF. Times are in
    seconds on one monotonic clock, passed in as ``now``.
    """

    __slots__ = (
        "_code",
        "_digits",
        "_incoming",
        "_last_digit",
        "_mqtt_opens",
        "_placed",
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
        self._incoming = _Callers(max_attempts, lockout, MAX_CALLERS)
        self._placed = _Callers(max_attempts, lockout, MAX_CALLERS)
        self._mqtt_opens: deque[float] = deque(maxlen=MQTT_OPENS)
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
            f"mqtt_open={self.mqtt_open_allowed}, "
            f"callers={len(self._placed)}+{len(self._incoming)})"
        )

    @property
    def dtmf_enabled(self) -> bool:
        return bool(self._code)

    @property
    def can_open(self) -> bool:
        """Whether any request could open the door at all."""
        return self.dtmf_enabled or self.mqtt_open_allowed

    def callers(self, now: float) -> int:
        """How many callers the rules remember at ``now`` (both kinds of call): bounded."""
        self._placed.prune(now)
        self._incoming.prune(now)
        return len(self._placed) + len(self._incoming)

    def locked_until(self, now: float, caller: str, *, placed: bool = False) -> float | None:
        """The end of ``caller``'s DTMF lockout, or None when not locked out at ``now``."""
        return (self._placed if placed else self._incoming).locked_until(caller, now)

    def dtmf(
        self,
        digit: str,
        now: float,
        *,
        call_allowed: bool,
        caller: str,
        placed: bool = False,
        identity: str | None = None,
    ) -> list[DoorAction]:
        """A key pressed on the phone during a call with ``caller``.

        ``call_allowed`` says whether this call may open the door at all. ``placed`` says that
        the door placed the call (``caller`` is then who answered). Wrong codes are counted
        against ``identity`` (default ``caller``), which the app sets to the ``incoming.allow``
        entry that admitted the call, so one allowed identity is one count however its From
        header is spelled. Returns what to do: nothing while a code is being keyed, else one of
        ``[OpenDoor, ScheduleHangup?]``, ``[Refused]`` or ``[Refused("wrong_code"), LockedOut]``.
        """
        if len(digit) != 1 or digit.upper() not in DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        digit = digit.upper()
        if not self.dtmf_enabled:
            return self._refuse_once("disabled", caller)
        if not call_allowed:
            return self._refuse_once("not_allowed", caller)
        table = self._placed if placed else self._incoming
        key = caller if identity is None else identity
        if table.locked_until(key, now) is not None:
            self._digits = ""
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
            table.clear(key)
            return self._open("dtmf", caller, now)
        until = table.wrong(key, now)
        if until is None:
            return [Refused("wrong_code", caller)]
        self._told.add("locked_out")  # LockedOut said it; the next digit need not
        return [Refused("wrong_code", caller), LockedOut(until, caller)]

    def mqtt_open(
        self, now: float, *, in_call: bool = False, relay_busy: Reason | None = None
    ) -> list[DoorAction]:
        """The MQTT "open door" command. The broker authenticates the sender, so neither the
        allowlist nor the DTMF lockout applies; ``mqtt_open`` in the config is the gate, and at
        most :data:`MQTT_OPENS` openings within :data:`MQTT_WINDOW` seconds are obeyed.

        ``relay_busy`` (``already_open``, ``relay_resting``) says the relay would refuse now: the
        command is refused with that reason and uses none of the budget, so taps during a pulse
        or its rest, and refused commands in general, cost the resident nothing. ``in_call``
        asks for the hang-up after opening too, as a DTMF opening would."""
        if not self.mqtt_open_allowed:
            return [Refused("disabled", "mqtt")]
        opens = self._mqtt_opens
        if len(opens) == opens.maxlen and now - opens[0] < MQTT_WINDOW:
            return [Refused("rate_limited", "mqtt")]
        if relay_busy is not None:
            return [Refused(relay_busy, "mqtt")]
        opens.append(now)
        return self._open("mqtt", "mqtt", now, hangup=in_call)

    def call_ended(self) -> None:
        """Forget the digits of this call; attempts and lockouts outlive it."""
        self._digits = ""
        self._last_digit = -math.inf
        self._told.clear()

    def _open(self, how: How, who: str, now: float, *, hangup: bool = True) -> list[DoorAction]:
        self.last_opened = now
        actions: list[DoorAction] = [OpenDoor(how, who)]
        if hangup and self.hangup_after_open is not None:
            actions.append(ScheduleHangup(self.hangup_after_open))
        return actions

    def _refuse_once(self, reason: Reason, caller: str) -> list[DoorAction]:
        if reason in self._told:
            return []
        self._told.add(reason)
        return [Refused(reason, caller)]
