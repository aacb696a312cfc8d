"""Door-opening rules with virtual time, and the ``door`` section of the configuration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from intercom.config import DoorConfig, parse_config
from intercom.door import (
    MAX_CALLERS,
    MQTT_OPENS,
    MQTT_WINDOW,
    REASONS,
    DoorAction,
    DoorRules,
    LockedOut,
    OpenDoor,
    Refused,
    ScheduleHangup,
)
from intercom.errors import ConfigError

CODE = "4711"
ALICE = "sip:620@fritz.box"
EVE = "sip:666@evil.example"


def rules(**overrides: Any) -> DoorRules:
    settings: dict[str, Any] = {
        "dtmf_code": CODE,
        "digit_timeout": 5.0,
        "max_attempts": 3,
        "lockout": 300.0,
        "mqtt_open": False,
        "hangup_after_open": None,
    }
    settings.update(overrides)
    return DoorRules(**settings)


def key(
    r: DoorRules, digits: str, start: float = 0.0, *, allowed: bool = True, who: str = ALICE
) -> list[DoorAction]:
    """Key in ``digits`` 0.5 s apart from ``start``; all actions, in order."""
    actions: list[DoorAction] = []
    for i, digit in enumerate(digits):
        actions += r.dtmf(digit, start + 0.5 * i, call_allowed=allowed, caller=who)
    return actions


# --- the code -----------------------------------------------------------------------------------


def test_right_code_opens_once_it_is_complete() -> None:
    r = rules()
    assert [r.dtmf(d, i, call_allowed=True, caller=ALICE) for i, d in enumerate("471")] == [
        [],
        [],
        [],
    ]
    assert r.dtmf("1", 3.0, call_allowed=True, caller=ALICE) == [OpenDoor("dtmf", ALICE)]
    assert r.last_opened == 3.0
    # The digits are used up: the same code opens again, a trailing '#' is no attempt.
    assert key(r, "#") == []
    assert key(r, CODE, 10) == [OpenDoor("dtmf", ALICE)]


def test_letters_and_star_in_the_code_and_lower_case_digits() -> None:
    r = rules(dtmf_code="*1aB")
    assert key(r, "*1Ab") == [OpenDoor("dtmf", ALICE)]


def test_wrong_code_is_refused_without_saying_what_it_was() -> None:
    r = rules()
    actions = key(r, "4712")
    assert actions == [Refused("wrong_code", ALICE)]
    assert "4712" not in repr(actions) and CODE not in repr(actions)
    # A wrong attempt does not spoil the next one.
    assert key(r, CODE, 5) == [OpenDoor("dtmf", ALICE)]


def test_a_complete_code_is_compared_at_once() -> None:
    """A wrong first digit is not slid over: '94711' is '9471' (wrong), then a new entry."""
    r = rules()
    assert key(r, "94711") == [Refused("wrong_code", ALICE)]
    assert key(r, "471", 2.5) == [Refused("wrong_code", ALICE)]  # '1' + '471'
    assert key(r, CODE, 5.0) == [OpenDoor("dtmf", ALICE)]


def test_hash_ends_a_code_early() -> None:
    r = rules()
    assert key(r, "47#") == [Refused("wrong_code", ALICE)]  # compared at '#', not later
    assert key(r, "#", 5) == []  # a lone '#' is no attempt
    assert key(r, CODE, 6) == [OpenDoor("dtmf", ALICE)]


def test_hash_ends_a_short_entry_of_a_long_code() -> None:
    r = rules(dtmf_code="12345678")
    assert key(r, "1234#") == [Refused("wrong_code", ALICE)]
    assert key(r, "12345678", 10) == [OpenDoor("dtmf", ALICE)]


def test_digit_timeout_forgets_the_digits() -> None:
    r = rules()
    assert key(r, "47") == []
    # 5 s after the last digit: "47" is forgotten, so "4711" here is a fresh, complete code.
    assert r.dtmf("4", 0.5 + 5.0, call_allowed=True, caller=ALICE) == []
    assert key(r, "711", 6.0) == [OpenDoor("dtmf", ALICE)]
    # Just under the timeout the digits are kept.
    assert key(r, "47", 20.0) == []
    assert r.dtmf("1", 20.5 + 4.99, call_allowed=True, caller=ALICE) == []
    assert r.dtmf("1", 20.5 + 9.98, call_allowed=True, caller=ALICE) == [OpenDoor("dtmf", ALICE)]


def test_a_timed_out_entry_is_no_attempt() -> None:
    r = rules(max_attempts=1)
    assert key(r, "47") == []
    assert key(r, CODE, 100.0) == [OpenDoor("dtmf", ALICE)]


def test_call_ended_forgets_the_digits() -> None:
    r = rules()
    assert key(r, "47") == []
    r.call_ended()
    assert key(r, "11", 1.0) == []  # not "4711"
    assert key(r, "47", 2.0) == [Refused("wrong_code", ALICE)]  # "1147"


# --- attempts and lockout -------------------------------------------------------------------------


def test_lockout_after_max_attempts_and_its_end() -> None:
    r = rules()
    assert key(r, "0000", 0) == [Refused("wrong_code", ALICE)]
    assert key(r, "1111", 10) == [Refused("wrong_code", ALICE)]
    assert key(r, "2222", 20) == [
        Refused("wrong_code", ALICE),
        LockedOut(until=21.5 + 300, who=ALICE),
    ]
    assert r.locked_until(22.0, ALICE) == 321.5
    # While locked out even the right code is refused, once per call; digits are not collected.
    assert key(r, CODE, 30) == []  # already told by LockedOut in this call
    r.call_ended()
    assert key(r, CODE, 40) == [Refused("locked_out", ALICE)]
    assert key(r, "47", 321.0) == []
    # The lockout ends by time; digits keyed during it did not count.
    assert r.locked_until(321.5, ALICE) is None
    assert key(r, "11", 321.5) == []
    assert key(r, "47", 322.5) == [Refused("wrong_code", ALICE)]  # "1147", a fresh attempt
    assert key(r, CODE, 330) == [OpenDoor("dtmf", ALICE)]


def test_attempts_survive_hanging_up_and_calling_again() -> None:
    r = rules()
    for call in range(3):
        actions = key(r, "9999", call * 20.0)
        r.call_ended()
    assert actions[-1] == LockedOut(until=40 + 1.5 + 300, who=ALICE)


def test_wrong_codes_older_than_the_lockout_are_forgotten() -> None:
    r = rules()
    assert key(r, "0000", 0) == [Refused("wrong_code", ALICE)]
    assert key(r, "0000", 200) == [Refused("wrong_code", ALICE)]
    assert key(r, "0000", 400) == [Refused("wrong_code", ALICE)]  # the one at 0 has expired
    assert key(r, "0000", 450) == [Refused("wrong_code", ALICE), LockedOut(451.5 + 300, ALICE)]


def test_right_code_resets_the_attempts() -> None:
    r = rules()
    key(r, "0000", 0)
    key(r, "0000", 5)
    assert key(r, CODE, 10) == [OpenDoor("dtmf", ALICE)]
    assert key(r, "0000", 15) == [Refused("wrong_code", ALICE)]
    assert key(r, "0000", 20) == [Refused("wrong_code", ALICE)]


def test_max_attempts_one_locks_at_once() -> None:
    r = rules(max_attempts=1, lockout=60.0)
    assert key(r, "0000") == [Refused("wrong_code", ALICE), LockedOut(61.5, ALICE)]


# --- per caller ---------------------------------------------------------------------------------

BOB = "sip:621@fritz.box"


def test_a_strangers_wrong_codes_do_not_lock_out_another_caller() -> None:
    """Eve, admitted by a forged allowed caller ID, keys wrong codes each time her lockout
    ends; Alice, calling in between, still opens the door. (One shared lockout refused her.)"""
    r = rules()
    for round_start in (0.0, 400.0, 800.0):
        for i in range(3):
            actions = key(r, "0000", round_start + 10 * i, who=EVE)
            r.call_ended()
        assert actions[-1] == LockedOut(round_start + 21.5 + 300, EVE)
        assert r.locked_until(round_start + 30, EVE) is not None
        assert r.locked_until(round_start + 30, ALICE) is None
        assert key(r, CODE, round_start + 30) == [OpenDoor("dtmf", ALICE)]
        r.call_ended()
        assert key(r, CODE, round_start + 40, who=EVE) == [Refused("locked_out", EVE)]
        r.call_ended()


def test_a_strangers_wrong_codes_do_not_lock_out_the_doors_own_calls() -> None:
    """Incoming wrong codes under Bob's (forged) caller ID leave the call the door places to
    Bob alone: placed calls are counted apart."""
    r = rules(max_attempts=1)
    assert key(r, "0000", who=BOB) == [Refused("wrong_code", BOB), LockedOut(301.5, BOB)]
    r.call_ended()
    assert r.locked_until(10.0, BOB) == 301.5
    assert r.locked_until(10.0, BOB, placed=True) is None
    placed = [
        r.dtmf(d, 10.0 + i, call_allowed=True, caller=BOB, placed=True) for i, d in enumerate(CODE)
    ]
    assert placed[-1] == [OpenDoor("dtmf", BOB)]
    r.call_ended()
    # And the other way round: wrong codes in a placed call lock only placed calls to Bob.
    wrong = [
        r.dtmf(d, 20.0 + i, call_allowed=True, caller=ALICE, placed=True)
        for i, d in enumerate("9999")
    ]
    assert wrong[-1] == [Refused("wrong_code", ALICE), LockedOut(323.0, ALICE)]
    r.call_ended()
    assert key(r, CODE, 30.0) == [OpenDoor("dtmf", ALICE)]


def test_attempts_count_against_the_identity_not_the_spelling() -> None:
    """The app counts an incoming call against the incoming.allow entry that admitted it, so
    changing the host of a forged From buys no fresh tries."""
    r = rules()
    for i, host in enumerate(("a.example", "b.example", "c.example")):
        who = f"sip:620@{host}"
        actions = [
            r.dtmf(d, 10.0 * i + j, call_allowed=True, caller=who, identity="620")
            for j, d in enumerate("0000")
        ]
        r.call_ended()
    assert actions[-1] == [
        Refused("wrong_code", "sip:620@c.example"),
        LockedOut(323.0, "sip:620@c.example"),
    ]
    assert r.locked_until(30.0, "620") == 323.0


def test_the_right_code_clears_only_that_callers_attempts() -> None:
    r = rules()
    key(r, "0000", 0, who=EVE)
    key(r, "0000", 5, who=EVE)
    assert key(r, CODE, 10) == [OpenDoor("dtmf", ALICE)]
    assert key(r, "0000", 15, who=EVE)[-1] == LockedOut(16.5 + 300, EVE)


def test_the_caller_table_is_bounded_by_its_cap() -> None:
    """Ten thousand callers with a wrong code each, within one lockout window."""
    r = rules(lockout=86400.0)
    for n in range(10_000):
        key(r, "9#", n * 0.01, who=f"sip:{n}@x")
        r.call_ended()
        assert r.callers(n * 0.01) <= MAX_CALLERS
    assert r.callers(100.0) == MAX_CALLERS


def test_the_caller_table_forgets_a_caller_lockout_seconds_after_the_last_wrong_code() -> None:
    """A year of uptime: a new caller keys a wrong code every ten minutes, and every hour one
    of them locks itself out. The table holds only who acted in the last ``lockout`` seconds."""
    r = rules(lockout=300.0, max_attempts=2)
    year = 365 * 86400
    for n, t in enumerate(range(0, year, 600)):
        who = f"sip:{n}@x"
        key(r, "9#", float(t), who=who)
        if n % 6 == 0:
            key(r, "9#", t + 2.0, who=who)  # the second wrong code: locked out
        r.call_ended()
        assert r.callers(t + 3.0) == 1
    assert r.callers(year + 300.0) == 0


def test_a_table_full_of_lockouts_fails_closed() -> None:
    """Evicting a locked-out caller would give them fresh tries; a new caller waits instead."""
    r = rules(max_attempts=1)
    for n in range(MAX_CALLERS):
        key(r, "9#", n * 0.01, who=f"sip:{n}@x")
        r.call_ended()
    assert key(r, CODE, 1.0, who=ALICE) == [Refused("locked_out", ALICE)]
    r.call_ended()
    assert r.locked_until(301.0, ALICE) is None  # the first lockout ended: room again
    assert key(r, CODE, 301.0, who=ALICE) == [OpenDoor("dtmf", ALICE)]


def test_a_full_table_makes_room_from_the_oldest_unlocked_caller() -> None:
    r = rules(max_attempts=3)
    key(r, "9#", 0.0, who=EVE)  # the oldest, one wrong code
    for n in range(MAX_CALLERS - 1):
        key(r, "9#", 1.0 + n * 0.01, who=f"sip:{n}@x")
        r.call_ended()
    key(r, "9#", 5.0, who=ALICE)  # the table is full: Eve's entry makes room
    assert r.callers(5.0) == MAX_CALLERS
    key(r, "9#", 6.0, who=EVE)
    key(r, "9#", 7.0, who=EVE)
    assert r.locked_until(8.0, EVE) is None  # she restarted from zero: 2 of 3


# --- who may ------------------------------------------------------------------------------------


def test_a_call_that_is_not_allowed_is_refused_once_and_collects_nothing() -> None:
    r = rules()
    assert key(r, CODE, allowed=False, who=EVE) == [Refused("not_allowed", EVE)]
    assert key(r, CODE * 5, 5, allowed=False, who=EVE) == []
    # Eve's digits counted no attempts: no lockout for Alice.
    r.call_ended()
    assert key(r, CODE, 100) == [OpenDoor("dtmf", ALICE)]


def test_disabled_without_a_code() -> None:
    r = rules(dtmf_code="")
    assert not r.dtmf_enabled and not r.can_open
    assert key(r, "4711#") == [Refused("disabled", ALICE)]
    assert key(r, "4711#", 10) == []  # once per call
    r.call_ended()
    assert key(r, "1", 20, allowed=False, who=EVE) == [Refused("disabled", EVE)]
    assert r.mqtt_open(30.0) == [Refused("disabled", "mqtt")]
    assert r.last_opened is None


def test_from_config_without_a_door_section_opens_nothing() -> None:
    r = DoorRules.from_config(None)
    assert not r.can_open
    assert r.mqtt_open(0.0) == [Refused("disabled", "mqtt")]
    assert key(r, "0000#") == [Refused("disabled", ALICE)]


def test_from_config() -> None:
    cfg = DoorConfig.model_validate({"dtmf_code": "*12", "mqtt_open": True, "max_attempts": 1})
    r = DoorRules.from_config(cfg)
    assert r.can_open and r.dtmf_enabled and r.mqtt_open_allowed and r.max_attempts == 1
    assert key(r, "*12") == [OpenDoor("dtmf", ALICE)]


# --- MQTT ---------------------------------------------------------------------------------------


def test_mqtt_open_needs_permission() -> None:
    assert rules(mqtt_open=False).mqtt_open(1.0) == [Refused("disabled", "mqtt")]
    r = rules(mqtt_open=True, dtmf_code="")
    assert r.can_open and not r.dtmf_enabled
    assert r.mqtt_open(1.0) == [OpenDoor("mqtt", "mqtt")]
    assert r.last_opened == 1.0


def test_mqtt_open_ignores_the_dtmf_lockout() -> None:
    """The broker authenticates the sender; a stranger's wrong codes must not lock it out."""
    r = rules(mqtt_open=True, max_attempts=1)
    assert LockedOut(301.5, ALICE) in key(r, "0000")
    assert r.mqtt_open(2.0) == [OpenDoor("mqtt", "mqtt")]


def test_mqtt_open_is_rate_limited() -> None:
    """At most MQTT_OPENS in any MQTT_WINDOW; refused commands do not count, so the first
    one after a flood's window is obeyed."""
    r = rules(mqtt_open=True)
    obeyed = [r.mqtt_open(t * 0.1) for t in range(1000)]  # 100 s of 10 commands a second
    opened = [i for i, a in enumerate(obeyed) if a == [OpenDoor("mqtt", "mqtt")]]
    assert opened == [0, 1, 2, 3, 4, 600, 601, 602, 603, 604]
    assert all(
        a == [Refused("rate_limited", "mqtt")] for i, a in enumerate(obeyed) if i not in opened
    )
    assert MQTT_OPENS == 5 and MQTT_WINDOW == 60.0


def test_mqtt_open_while_the_relay_is_busy_uses_no_budget() -> None:
    r = rules(mqtt_open=True)
    for i in range(100):  # taps during a pulse and its rest
        busy = "already_open" if i % 2 else "relay_resting"
        assert r.mqtt_open(i * 0.01, relay_busy=busy) == [Refused(busy, "mqtt")]
    assert [r.mqtt_open(2.0 + i) for i in range(MQTT_OPENS)] == [[OpenDoor("mqtt", "mqtt")]] * 5
    assert r.mqtt_open(10.0) == [Refused("rate_limited", "mqtt")]
    assert rules(mqtt_open=False).mqtt_open(0, relay_busy="already_open") == [
        Refused("disabled", "mqtt")
    ]


def test_every_refusal_reason_is_a_valid_refused() -> None:
    assert set(REASONS) >= {"rate_limited", "no_relay", "already_open", "relay_resting"}
    for reason in REASONS:
        assert Refused(reason, "x").reason == reason


# --- hanging up after opening -----------------------------------------------------------------


def test_hangup_is_scheduled_after_a_dtmf_opening() -> None:
    r = rules(hangup_after_open=2.5, mqtt_open=True)
    assert key(r, CODE) == [OpenDoor("dtmf", ALICE), ScheduleHangup(after=2.5)]
    # An MQTT opening hangs up only if there is a call to hang up.
    assert r.mqtt_open(10.0) == [OpenDoor("mqtt", "mqtt")]
    assert r.mqtt_open(11.0, in_call=True) == [OpenDoor("mqtt", "mqtt"), ScheduleHangup(2.5)]


def test_no_hangup_without_hangup_after_open() -> None:
    assert key(rules(), CODE) == [OpenDoor("dtmf", ALICE)]
    assert key(rules(hangup_after_open=0), CODE) == [OpenDoor("dtmf", ALICE), ScheduleHangup(0)]


# --- secrecy and validation -----------------------------------------------------------------------


def test_the_code_and_the_digits_are_in_no_repr() -> None:
    r = rules(dtmf_code="97531")
    key(r, "975")
    text = repr(r)
    assert "97531" not in text and "975" not in text
    assert text == "DoorRules(dtmf=on, mqtt_open=False, callers=0+0)"
    key(r, "97#", 10.0)  # a wrong code: a caller is remembered, still no digits shown
    assert repr(r) == "DoorRules(dtmf=on, mqtt_open=False, callers=0+1)"
    assert repr(rules(dtmf_code="")).startswith("DoorRules(dtmf=off,")


def test_invalid_digits_are_refused_loudly() -> None:
    r = rules()
    for bad in ("", "12", "E", "x", "\x00"):
        with pytest.raises(ValueError, match="not a DTMF digit"):
            r.dtmf(bad, 0.0, call_allowed=True, caller=ALICE)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dtmf_code": "12#4"},
        {"dtmf_code": "123456789"},
        {"dtmf_code": "12E"},
        {"digit_timeout": 0},
        {"digit_timeout": math.inf},
        {"max_attempts": 0},
        {"lockout": 0},
        {"hangup_after_open": -1},
    ],
)
def test_invalid_rules(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        rules(**overrides)
    code = overrides.get("dtmf_code")
    if code:
        assert code not in str(info.value)


@pytest.mark.parametrize("action", [lambda: OpenDoor("ssh", "x"), lambda: Refused("bad", "x")])
def test_actions_validate_themselves(action: Any) -> None:
    with pytest.raises(ValueError):
        action()


def test_actions_are_frozen() -> None:
    with pytest.raises(AttributeError):
        OpenDoor("dtmf", ALICE).who = EVE  # type: ignore[misc]


# --- the door section of the configuration ------------------------------------------------------

BASE = {"sip": {"server": "fritz.box", "username": "620", "password": "p"}}


def door(**values: Any) -> DoorConfig:
    config = parse_config({**BASE, "door": values}, base_dir=Path("/"), env={})
    assert config.door is not None
    return config.door


def door_errors(**values: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "door": values}, base_dir=Path("/"), env={})
    return info.value.errors


def test_door_defaults_open_nothing() -> None:
    cfg = door()
    assert (cfg.pin, cfg.active_high, cfg.pulse, cfg.secret()) == (23, True, 3.0, "")
    assert (cfg.digit_timeout, cfg.max_attempts, cfg.lockout) == (5.0, 3, 300.0)
    assert cfg.hangup_after_open is None and cfg.mqtt_open is False
    assert not cfg.can_open
    assert parse_config(BASE, base_dir=Path("/"), env={}).door is None


@pytest.mark.parametrize(
    ("given", "stored"),
    [("4711", "4711"), (4711, "4711"), ("0042", "0042"), ("*12ab", "*12AB"), ("D" * 8, "D" * 8)],
)
def test_dtmf_code_accepted(given: object, stored: str) -> None:
    cfg = door(dtmf_code=given)
    assert cfg.secret() == stored and cfg.can_open


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (
            "12#4",
            "door.dtmf_code: must not contain '#'; got <hidden>; "
            "'#' ends a code early, so it cannot be part of one",
        ),
        (
            "123456789",
            "door.dtmf_code: must be 1 to 8 of the keys 0-9, *, A, B, C and D; got <hidden>; "
            'or "" for no opening by DTMF',
        ),
        (
            "12 34",
            "door.dtmf_code: must be 1 to 8 of the keys 0-9, *, A, B, C and D; got <hidden>; "
            'or "" for no opening by DTMF',
        ),
    ],
)
def test_dtmf_code_refused_without_showing_it(code: str, line: str) -> None:
    assert door_errors(dtmf_code=code) == [line]


def test_dtmf_code_is_in_no_repr_dump_or_description() -> None:
    from intercom.config import describe

    config = parse_config({**BASE, "door": {"dtmf_code": "97531"}}, base_dir=Path("/"), env={})
    assert config.redacted_dict()["door"]["dtmf_code"] == "***"
    for text in (repr(config), str(config), describe(config), str(config.model_dump())):
        assert "97531" not in text
    empty = parse_config({**BASE, "door": {}}, base_dir=Path("/"), env={})
    assert empty.redacted_dict()["door"]["dtmf_code"] == ""


def test_yaml_error_on_the_code_line_does_not_quote_it(tmp_path: Path) -> None:
    """An unquoted code starting with '*' is a YAML alias, and PyYAML's message names it."""
    from intercom.config import load_config

    for text in ("door:\n  dtmf_code: *97531\n", "door: {dtmf_code: *97531}\n"):
        path = tmp_path / "intercom.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        [error] = info.value.errors
        assert "97531" not in error
        assert "cannot parse the dtmf_code line" in error
        assert error.endswith('put the code in quotes, e.g. dtmf_code: "*1234"')


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("pulse", 30, "door.pulse: must be between 0.1 and 10 seconds; got 30"),
        ("pulse", 0, "door.pulse: must be between 0.1 and 10 seconds; got 0"),
        ("pulse", "long", "door.pulse: must be a number between 0.1 and 10 seconds; got 'long'"),
        ("pulse", True, "door.pulse: must be a number between 0.1 and 10 seconds; got True"),
        ("digit_timeout", 0, "door.digit_timeout: must be between 1 and 60 seconds; got 0"),
        ("max_attempts", 0, "door.max_attempts: must be between 1 and 20; got 0"),
        (
            "max_attempts",
            2.5,
            "door.max_attempts: must be a whole number between 1 and 20; got 2.5",
        ),
        ("lockout", 0, "door.lockout: must be between 1 and 86400 seconds; got 0"),
        (
            "hangup_after_open",
            301,
            "door.hangup_after_open: must be between 0 and 300 seconds; got 301",
        ),
        ("pin", 28, "door.pin: must be between 2 and 27 (BCM numbering); got 28"),
        ("active_high", "low", "door.active_high: must be true or false; got 'low'"),
        ("mqtt_open", "yes please", "door.mqtt_open: must be true or false; got 'yes please'"),
    ],
)
def test_door_values_refused(key: str, value: object, line: str) -> None:
    assert door_errors(**{key: value}) == [line]


def test_door_pulse_at_the_cap_and_unknown_keys() -> None:
    assert door(pulse=10).pulse == 10.0
    assert door(pulse=0.1, hangup_after_open=0).hangup_after_open == 0.0
    [error] = door_errors(code="4711")
    assert error.startswith("door.code: unknown key; allowed keys here: pin, active_high, pulse,")
    assert error.endswith("did you mean 'dtmf_code'?")
