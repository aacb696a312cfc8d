"""The configuration loader: schema, bounds, error wording, password sources and secrecy.

Error lines are compared in full on purpose: their wording is the intercom's user interface,
and a change to it should be a deliberate one that shows up here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from intercom import __version__
from intercom.config import (
    PASSWORD_ENV,
    CallConfig,
    ChimeConfig,
    Config,
    DoorbellConfig,
    DoorConfig,
    IncomingConfig,
    LedConfig,
    LogConfig,
    SipConfig,
    describe,
    load_config,
    parse_config,
)
from intercom.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "intercom.example.yaml"
SECRET = "s3cret-Pa55word"
NO_PASSWORD = (
    "sip.password: no password given; set sip.password, sip.password_file "
    "or the environment variable INTERCOM_SIP_PASSWORD"
)


def minimal(**sections: dict[str, Any]) -> dict[str, Any]:
    """The smallest valid configuration, with sections merged over it."""
    data: dict[str, Any] = {"sip": {"server": "fritz.box", "username": "620", "password": SECRET}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def parse(data: Any, env: dict[str, str] | None = None, base_dir: Path = Path("/")) -> Config:
    return parse_config(data, base_dir=base_dir, env={} if env is None else env)


def errors_of(
    data: Any, env: dict[str, str] | None = None, base_dir: Path = Path("/")
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, env, base_dir)
    return info.value.errors


def write(tmp_path: Path, text: str, name: str = "intercom.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the example file ------------------------------------------------------------------------


def test_example_config_loads_with_the_documented_defaults() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.device_id == "frontdoor"
    assert config.sip.server == "192.168.1.1"
    assert config.sip.username == "620"
    assert config.sip.secret() == "change-me"
    assert config.sip.user_agent == f"pi-intercom/{__version__}"
    assert config.call.targets == ("**9",)
    # Everything the example states as a value equals the model's default.
    defaults = parse(minimal())
    assert config.call == defaults.call
    assert config.incoming == defaults.incoming
    assert config.log == defaults.log
    assert config.doorbell == DoorbellConfig()
    for key in ("port", "transport", "local_port", "register", "expires", "domain"):
        assert getattr(config.sip, key) == getattr(defaults.sip, key), key


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    models: dict[str, type[pydantic.BaseModel]] = {"": Config, "sip": SipConfig}
    models |= {"call": CallConfig, "incoming": IncomingConfig, "log": LogConfig}
    models |= {"doorbell": DoorbellConfig, "chime": ChimeConfig, "led": LedConfig}
    models |= {"door": DoorConfig}
    for section, model in models.items():
        indent = "  " if section else ""
        for key in model.model_fields:
            # Keys of a commented-out section are documented as "#   key:".
            pattern = rf"^(# )?{indent}# ?{key}:|^(# )?{indent}{key}:"
            assert re.search(pattern, text, re.MULTILINE), f"{section}.{key} is not in the example"


def test_example_password_file_alternative_is_shown_commented_out() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "  # password_file: /etc/pi-intercom/sip-password\n" in text
    assert '  password: "change-me"\n' in text


# --- defaults and derived values -------------------------------------------------------------


def test_defaults() -> None:
    config = parse({"sip": {"server": "pbx.example.org", "username": "door", "register": False}})
    assert config.device_id == "frontdoor"
    sip = config.sip
    assert (sip.port, sip.transport, sip.local_port, sip.register, sip.expires) == (
        5060,
        "udp",
        5060,
        False,
        300,
    )
    assert sip.password is None and sip.secret() is None and sip.password_source is None
    assert config.call == CallConfig(targets=("**9",), strategy="parallel", ring_timeout=30)
    assert config.call.max_duration == 300
    assert config.incoming.allow == () and config.incoming.answer_after == 2
    assert (config.log.level, config.log.sip_trace) == ("info", False)


def test_domain_defaults_to_server() -> None:
    assert parse(minimal()).sip.effective_domain == "fritz.box"
    assert parse(minimal()).sip.domain is None
    assert parse(minimal(sip={"domain": "example.org"})).sip.effective_domain == "example.org"


def test_auth_username_defaults_to_username() -> None:
    assert parse(minimal()).sip.effective_auth_username == "620"
    assert parse(minimal(sip={"auth_username": "x"})).sip.effective_auth_username == "x"


def test_config_is_frozen() -> None:
    config = parse(minimal())
    with pytest.raises(pydantic.ValidationError):
        config.sip.port = 5070
    assert hash(config) == hash(parse(minimal()))


@pytest.mark.parametrize(
    ("key", "given", "expected"),
    [
        ("server", "192.168.178.1", "192.168.178.1"),
        ("server", "[fd00::1]", "fd00::1"),
        ("server", "fritz.box.", "fritz.box."),
        ("transport", "TCP", "tcp"),
        ("local_port", 0, 0),
        ("port", "5070", 5070),
    ],
)
def test_accepted_sip_values(key: str, given: object, expected: object) -> None:
    assert getattr(parse(minimal(sip={key: given})).sip, key) == expected


def test_level_and_strategy_ignore_case() -> None:
    config = parse(minimal(log={"level": "DEBUG"}, call={"strategy": "Sequential"}))
    assert (config.log.level, config.call.strategy) == ("debug", "sequential")


def test_answer_after_null_means_never() -> None:
    assert parse(minimal(incoming={"answer_after": None})).incoming.answer_after is None


# --- bounds ----------------------------------------------------------------------------------

BOUNDS = [
    ("sip", "port", 1, 65535, ""),
    ("sip", "local_port", 0, 65535, ""),
    ("sip", "expires", 60, 86400, " seconds"),
    ("call", "ring_timeout", 1, 600, " seconds"),
    ("call", "max_duration", 10, 86400, " seconds"),
    ("incoming", "answer_after", 0, 60, " seconds"),
]


@pytest.mark.parametrize(("section", "key", "low", "high", "unit"), BOUNDS)
def test_bounds_are_inclusive(section: str, key: str, low: int, high: int, unit: str) -> None:
    for value in (low, high):
        config = parse(minimal(**{section: {key: value}}))
        assert getattr(getattr(config, section), key) == value


@pytest.mark.parametrize(("section", "key", "low", "high", "unit"), BOUNDS)
def test_values_outside_the_bounds_are_refused(
    section: str, key: str, low: int, high: int, unit: str
) -> None:
    for value in (low - 1, high + 1):
        assert errors_of(minimal(**{section: {key: value}})) == [
            f"{section}.{key}: must be between {low} and {high}{unit}; got {value}"
        ]


@pytest.mark.parametrize("value", ["abc", 30.5, True, "1:30", [30]])
def test_non_numbers_are_refused_with_the_range(value: object) -> None:
    assert errors_of(minimal(call={"ring_timeout": value})) == [
        f"call.ring_timeout: must be a whole number between 1 and 600 seconds; got {value!r}"
    ]


@pytest.mark.parametrize(
    ("section", "key", "value", "allowed"),
    [
        ("sip", "transport", "tls", "udp, tcp"),
        ("call", "strategy", "random", "parallel, sequential"),
        ("log", "level", "verbose", "debug, info, warning, error"),
    ],
)
def test_choices(section: str, key: str, value: str, allowed: str) -> None:
    assert errors_of(minimal(**{section: {key: value}})) == [
        f"{section}.{key}: must be one of {allowed}; got {value!r}"
    ]


@pytest.mark.parametrize("key", ["register", "sip_trace"])
def test_booleans(key: str) -> None:
    section = "sip" if key == "register" else "log"
    assert errors_of(minimal(**{section: {key: "maybe"}})) == [
        f"{section}.{key}: must be true or false; got 'maybe'"
    ]


@pytest.mark.parametrize("device_id", ["a", "door_1-b", "x" * 32, "0"])
def test_device_id_accepted(device_id: str) -> None:
    assert parse(minimal() | {"device_id": device_id}).device_id == device_id


@pytest.mark.parametrize("device_id", ["", "x" * 33, "Front", "front door", "tür"])
def test_device_id_refused(device_id: str) -> None:
    assert errors_of(minimal() | {"device_id": device_id}) == [
        "device_id: must be 1 to 32 characters of a-z, 0-9, '_' and '-'; "
        f"got {device_id!r}; e.g. frontdoor"
    ]


@pytest.mark.parametrize(
    ("server", "line"),
    [
        ("fritz.box:5060", "must not include a port; got 'fritz.box:5060'; put the port number"),
        ("sip:fritz.box", "must be a bare host name or IP address, without a scheme"),
        ("192.168.1.300", "is not a valid IPv4 address; got '192.168.1.300'"),
        ("fritz box", "must not contain spaces"),
        ("", "must not be empty"),
        ("-bad-.lan", "is not a valid host name or IP address"),
    ],
)
def test_server_refused(server: str, line: str) -> None:
    [error] = errors_of(minimal(sip={"server": server}))
    assert error.startswith(f"sip.server: {line}")


def test_targets_need_at_least_one() -> None:
    assert errors_of(minimal(call={"targets": []})) == [
        'call.targets: must list at least one target; got []; e.g. targets: ["**9"]'
    ]


def test_target_and_caller_formats() -> None:
    config = parse(
        minimal(
            call={"targets": ["**9", "sip:620@fritz.box", "SIPS:door@example.org", "0301234"]},
            incoming={"allow": ["**610", "sip:621@fritz.box"]},
        )
    )
    assert config.call.targets[1] == "sip:620@fritz.box"
    assert config.incoming.allow == ("**610", "sip:621@fritz.box")
    assert errors_of(minimal(call={"targets": ["620@fritz.box", "tel:+49301234", "6 20"]})) == [
        "call.targets[0]: looks like a SIP address without 'sip:'; got '620@fritz.box'; "
        "write it as 'sip:620@fritz.box'",
        "call.targets[1]: has the unsupported URI scheme 'tel'; got 'tel:+49301234'; "
        "give an extension like **9 or a SIP URI like sip:620@fritz.box",
        "call.targets[2]: must not contain spaces, '<', '>' or '\"'; got '6 20'; "
        "give an extension like **9 or a SIP URI like sip:620@fritz.box",
    ]
    assert errors_of(minimal(call={"targets": ["620", 620]})) == [
        "call.targets: lists '620' twice; got ['620', 620]; remove the duplicate"
    ]


def test_targets_and_callers_must_be_one_line_without_control_characters() -> None:
    """A target is written into the INVITE's request line and To header: CR/LF would add SIP
    headers of its own. One check, check_address, for the config and MQTT's call/ring."""
    from intercom.config import check_address

    fix = "give an extension like **9 or a SIP URI like sip:620@fritz.box"
    assert errors_of(
        minimal(call={"targets": ["621\r\nX-Evil: 1"]}, incoming={"allow": ["62\x000"]})
    ) == [
        f"call.targets[0]: must be one line without control characters; "
        f"got '621\\r\\nX-Evil: 1'; {fix}",
        f"incoming.allow[0]: must be one line without control characters; got '62\\x000'; {fix}",
    ]
    for bad in ("sip:621@x\r\nVia: y", "6\t21", "621\x7f", "\u2028621"):
        with pytest.raises(ValueError, match="control characters"):
            check_address(bad)
    assert check_address("sip:620@fritz.box") == "sip:620@fritz.box"


def test_a_single_target_may_be_written_without_a_list() -> None:
    assert parse(minimal(call={"targets": "**9"})).call.targets == ("**9",)


def test_user_agent_must_be_one_line() -> None:
    assert errors_of(minimal(sip={"user_agent": "x\r\nX-Evil: 1"})) == [
        "sip.user_agent: must be non-empty printable text on one line; got 'x\\r\\nX-Evil: 1'"
    ]


# --- numbers that are really text --------------------------------------------------------------


def test_numbers_are_accepted_as_text() -> None:
    config = parse(
        minimal(
            sip={"username": 620, "auth_username": 9620, "password": 1234},
            call={"targets": [620, "**9"]},
            incoming={"allow": [621]},
        )
        | {"device_id": 7}
    )
    assert config.sip.username == "620" and config.sip.auth_username == "9620"
    assert config.sip.secret() == "1234"
    assert config.call.targets == ("620", "**9")
    assert config.incoming.allow == ("621",)
    assert config.device_id == "7"


def test_unquoted_numbers_in_yaml_keep_their_digits(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sip:\n  server: fritz.box\n  username: 0620\n  password: x\n  port: 05060\n"
        "call:\n  targets: [620, 0301234567]\n",
    )
    config = load_config(path, env={})
    assert config.sip.username == "0620"  # YAML 1.1 would make this octal 400
    assert config.sip.port == 5060
    assert config.call.targets == ("620", "0301234567")


def test_booleans_are_not_numbers() -> None:
    assert errors_of(minimal(sip={"username": True})) == ["sip.username: must be text; got True"]


# --- unknown keys -------------------------------------------------------------------------------


def test_unknown_top_level_key_with_suggestion() -> None:
    assert errors_of(minimal() | {"incomming": {}}) == [
        "incomming: unknown key; allowed keys here: device_id, sip, call, incoming, audio, "
        "media, mqtt, doorbell, chime, led, door, log; did you mean 'incoming'?"
    ]


def test_unknown_nested_key_with_suggestion() -> None:
    assert errors_of(minimal(call={"ring_timout": 10})) == [
        "call.ring_timout: unknown key; allowed keys here: targets, strategy, ring_timeout, "
        "max_duration; did you mean 'ring_timeout'?"
    ]


def test_unknown_key_that_belongs_to_another_section() -> None:
    [error] = errors_of(minimal(sip={"ring_timeout": 10}))
    assert error.startswith("sip.ring_timeout: unknown key; allowed keys here: server, port,")
    assert error.endswith("; did you mean 'call.ring_timeout'?")


def test_unknown_key_without_a_close_match() -> None:
    assert errors_of(minimal(log={"colour": "red"})) == [
        "log.colour: unknown key; allowed keys here: level, sip_trace"
    ]


# --- several errors at once ----------------------------------------------------------------------


def test_all_errors_are_reported_together_in_schema_order() -> None:
    data = {
        "device_id": "Front Door",
        "sip": {"server": "fritz.box", "transport": "tls", "port": 0, "colour": "red"},
        "call": {"targets": [], "ring_timeout": 0},
        "log": {"level": "loud"},
    }
    with pytest.raises(ConfigError) as info:
        parse(data)
    expected = [
        "device_id: must be 1 to 32 characters of a-z, 0-9, '_' and '-'; got 'Front Door'; "
        "e.g. frontdoor",
        "sip.port: must be between 1 and 65535; got 0",
        "sip.transport: must be one of udp, tcp; got 'tls'",
        "sip.username: required key is missing; the SIP user name the door registers as "
        '(often its extension), e.g. username: "620"',
        NO_PASSWORD,
        "sip.colour: unknown key; allowed keys here: server, port, transport, username, "
        "password, password_file, auth_username, domain, local_port, register, expires, "
        "trusted_sources, user_agent",
        'call.targets: must list at least one target; got []; e.g. targets: ["**9"]',
        "call.ring_timeout: must be between 1 and 600 seconds; got 0",
        "log.level: must be one of debug, info, warning, error; got 'loud'",
    ]
    assert info.value.errors == expected
    assert str(info.value) == "\n".join(expected)
    assert all("\n" not in line for line in info.value.errors)


def test_missing_sections_and_keys() -> None:
    assert errors_of({"device_id": "door"}) == [
        "sip: required key is missing; the connection to the PBX; "
        "it needs at least sip.server, sip.username"
    ]
    assert errors_of({"sip": {"username": "620", "password": "x"}}) == [
        "sip.server: required key is missing; the registrar and outbound proxy, a host name or "
        "IP address, e.g. server: 192.168.1.1"
    ]
    [error] = errors_of({"sip": None})
    assert error.startswith("sip: must be a section of keys; got None; indent its keys below")


def test_empty_and_non_mapping_data() -> None:
    assert errors_of(None) == [
        "configuration: the file is empty; it needs at least sip.server, sip.username; "
        "see config/intercom.example.yaml"
    ]
    assert errors_of(["sip"]) == [
        "configuration: the top level must be a mapping of keys; got a list; "
        "allowed keys: device_id, sip, call, incoming, audio, media, mqtt, doorbell, chime, led, "
        "door, log"
    ]


# --- password sources ----------------------------------------------------------------------------


def test_password_in_the_file_wins_over_the_environment() -> None:
    config = parse(minimal(), env={PASSWORD_ENV: "from-env"})
    assert config.sip.secret() == SECRET
    assert config.sip.password_source == "sip.password"


def test_password_file_relative_to_the_config_and_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "sip-password").write_text(SECRET + "\n", encoding="utf-8")
    data = {"sip": {"server": "fritz.box", "username": "620", "password_file": "sip-password"}}
    config = parse(data, env={PASSWORD_ENV: "from-env"}, base_dir=tmp_path)
    assert config.sip.secret() == SECRET
    assert config.sip.password_file == tmp_path / "sip-password"
    assert config.sip.password_source == "sip.password_file"


def test_password_file_via_load_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET + "\r\n", encoding="utf-8")
    path = write(tmp_path, "sip:\n  server: fritz.box\n  username: 620\n  password_file: pw\n")
    assert load_config(path, env={}).sip.secret() == SECRET


def test_password_file_missing_names_the_path(tmp_path: Path) -> None:
    data = {"sip": {"server": "fritz.box", "username": "620", "password_file": "nope"}}
    assert errors_of(data, env={PASSWORD_ENV: "x"}, base_dir=tmp_path) == [
        f"sip.password_file: cannot read {tmp_path / 'nope'}: no such file; got 'nope'; "
        "create it or fix the path"
    ]


def test_password_file_empty(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n", encoding="utf-8")
    data = {"sip": {"server": "fritz.box", "username": "620", "password_file": str(tmp_path)}}
    [error] = errors_of(data, base_dir=tmp_path)
    assert error.startswith(f"sip.password_file: cannot read {tmp_path}: ")
    data["sip"]["password_file"] = "pw"
    assert errors_of(data, base_dir=tmp_path) == [
        f"sip.password_file: the file {tmp_path / 'pw'} is empty; got 'pw'; "
        "write the password into it"
    ]


def test_password_from_the_environment() -> None:
    data = {"sip": {"server": "fritz.box", "username": "620"}}
    config = parse(data, env={PASSWORD_ENV: SECRET})
    assert config.sip.secret() == SECRET
    assert config.sip.password_source == PASSWORD_ENV


def test_password_and_password_file_together_is_an_error() -> None:
    assert errors_of(minimal(sip={"password_file": "/etc/pi-intercom/sip-password"})) == [
        "sip.password_file: cannot be used together with sip.password; "
        "got '/etc/pi-intercom/sip-password'; keep only one of the two"
    ]


def test_no_password_is_an_error_only_when_registering() -> None:
    data: dict[str, Any] = {"sip": {"server": "fritz.box", "username": "620"}}
    assert errors_of(data) == [NO_PASSWORD]
    assert errors_of(data, env={PASSWORD_ENV: ""}) == [NO_PASSWORD]
    data["sip"]["register"] = False
    assert parse(data).sip.secret() is None


def test_empty_password_is_an_error() -> None:
    assert errors_of(minimal(sip={"password": ""})) == [
        "sip.password: must not be empty; got <hidden>; remove the key to use "
        "sip.password_file or $INTERCOM_SIP_PASSWORD instead"
    ]


def test_default_environment_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    data = {"sip": {"server": "fritz.box", "username": "620"}}
    assert parse_config(data, base_dir=Path("/")).sip.secret() == SECRET


# --- secrets stay secret -------------------------------------------------------------------------


def test_password_never_in_repr_str_or_redacted_output() -> None:
    config = parse(minimal())
    for text in (repr(config), str(config), repr(config.sip), describe(config)):
        assert SECRET not in text
    assert SECRET not in str(config.model_dump(mode="json"))
    redacted = config.redacted_dict()
    assert redacted["sip"]["password"] == "***"
    assert SECRET not in str(redacted)
    assert "# SIP password: from sip.password" in describe(config)


def test_redacted_dict_without_password() -> None:
    config = parse({"sip": {"server": "fritz.box", "username": "620", "register": False}})
    assert config.redacted_dict()["sip"]["password"] is None


@pytest.mark.parametrize("bad", [[SECRET], {"value": SECRET}, True])
def test_wrong_password_type_is_hidden(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse(minimal(sip={"password": bad}))
    assert info.value.errors == ["sip.password: must be text; got <hidden>"]
    assert SECRET not in str(info.value)


def test_password_is_hidden_wherever_an_error_would_quote_it(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET, encoding="utf-8")
    data = {
        "sip": {
            "server": "fritz.box",
            "username": "620",
            "password_file": "pw",
            "auth_username": f"oops {SECRET}",
            "passwort": SECRET,
        },
        "call": {"targets": [f"x {SECRET}"]},
    }
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=tmp_path)
    assert len(info.value.errors) == 3
    assert SECRET not in str(info.value)
    assert "sip.auth_username: must not contain spaces; got <hidden>" in info.value.errors


def test_environment_password_is_hidden_too() -> None:
    data = {"sip": {"server": "fritz.box", "username": f"{SECRET} x"}}
    with pytest.raises(ConfigError) as info:
        parse(data, env={PASSWORD_ENV: SECRET})
    assert info.value.errors == ["sip.username: must not contain spaces; got <hidden>"]


# --- the file and its YAML -----------------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "sip:\n  server: fritz.box\n  username: [620\nlog: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [error] = info.value.errors
    assert re.match(rf"{re.escape(str(path))}:4:\d+: ", error), error


def test_unquoted_star_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "sip: {server: a, username: b, password: c}\ncall:\n  targets: [**9]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [error] = info.value.errors
    assert error.startswith(f"{path}:3:14: ")
    assert error.endswith('; quote values that start with * or &, e.g. "**9"')


def test_yaml_error_on_the_password_line_does_not_quote_it(tmp_path: Path) -> None:
    path = write(tmp_path, f"sip:\n  server: a\n  username: b\n  password: *{SECRET}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.errors == [
        f"{path}:4:13: cannot parse the password line; put the password in quotes"
    ]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "sip:\n  server: a\n  server: b\ncall: {}\ncall: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.errors == [
        f"{path}:3:3: duplicate key 'server'; it is already set at line 2; keep only one of them",
        f"{path}:5:1: duplicate key 'call'; it is already set at line 4; keep only one of them",
    ]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.errors == [
        f"{path}: the file is empty; it needs at least sip.server, sip.username; "
        "see config/intercom.example.yaml"
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "just a string\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.errors == [
        f"{path}: the top level must be a mapping of keys; got a single value of type str; "
        "allowed keys: device_id, sip, call, incoming, audio, media, mqtt, doorbell, chime, led, "
        "door, log"
    ]


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert info.value.errors == [
        f"{tmp_path / 'absent.yaml'}: no such file; copy config/intercom.example.yaml there "
        "and edit it"
    ]


def test_schema_errors_from_a_file_are_collected(tmp_path: Path) -> None:
    path = write(tmp_path, "sip:\n  server: fritz.box\n  username: 620\n  expires: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.errors == [
        NO_PASSWORD,
        "sip.expires: must be between 60 and 86400 seconds; got 10",
    ]


def test_audio_and_media_sections() -> None:
    config = parse_config(
        {
            "sip": {"server": "pbx", "username": "door", "password": "p"},
            "audio": {"input": 2, "output": "file:/tmp/heard.wav", "codecs": ["pcmu", "G722"]},
            "media": {"rtp_port_min": 20000, "rtp_port_max": 20100, "rtp_timeout": 10},
        },
        base_dir=Path("."),
        env={},
    )
    assert config.audio.input == "2" and config.audio.output == "file:/tmp/heard.wav"
    assert config.audio.codecs == ("PCMU", "G722")
    assert (config.media.rtp_port_min, config.media.rtp_timeout) == (20000, 10)
    assert config.media.jitter_ms == 60 and config.audio.input_gain_db == 0


def test_audio_and_media_errors_all_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "sip": {"server": "pbx", "username": "door", "password": "p"},
                "audio": {"codecs": ["opus"], "input": "", "output_gain_db": 99},
                "media": {"rtp_port_min": 20000, "rtp_port_max": 19000, "rtp_timeout": 1},
            },
            base_dir=Path("."),
            env={},
        )
    text = "\n".join(info.value.errors)
    assert "audio.codecs: unknown codec 'OPUS'" in text and "allowed: G722, PCMA, PCMU" in text
    assert "audio.input: must not be empty" in text
    assert "audio.output_gain_db" in text
    assert "media.rtp_port_max: must be above rtp_port_min (20000)" in text
    assert "media.rtp_timeout" in text
    assert len(info.value.errors) == 5


def test_mqtt_section(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text("brokerpw\n")
    config = parse_config(
        {
            "device_id": "gate",
            "sip": {"server": "pbx", "username": "door", "password": "p"},
            "mqtt": {
                "host": "broker",
                "username": "intercom",
                "password_file": "mqtt-password",
                "tls": {"ca_file": "ca.crt"},
                "discovery": "Device",
            },
        },
        base_dir=tmp_path,
        env={},
    )
    assert config.mqtt is not None
    assert (
        config.mqtt.secret() == "brokerpw" and config.mqtt.password_source == "mqtt.password_file"
    )
    assert config.mqtt.tls is not None and config.mqtt.tls.ca_file == tmp_path / "ca.crt"
    assert config.mqtt.discovery == "device" and config.mqtt.port == 1883
    assert config.mqtt_base_topic == "intercom/gate"
    assert "brokerpw" not in repr(config) and config.redacted_dict()["mqtt"]["password"] == "***"


def test_mqtt_password_from_env_and_no_section() -> None:
    base = {"sip": {"server": "pbx", "username": "door", "password": "p"}}
    config = parse_config(
        {**base, "mqtt": {"host": "broker"}}, base_dir=Path("."), env={MQTT_ENV: "fromenv"}
    )
    assert config.mqtt is not None and config.mqtt.secret() == "fromenv"
    assert parse_config(base, base_dir=Path("."), env={}).mqtt is None


def test_mqtt_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "sip": {"server": "pbx", "username": "door", "password": "p"},
                "mqtt": {"port": 0, "base_topic": "intercom/#", "discovery": "maybe"},
            },
            base_dir=Path("."),
            env={},
        )
    text = "\n".join(info.value.errors)
    assert "mqtt.host: required key is missing" in text
    assert "mqtt.port" in text and "mqtt.base_topic" in text and "mqtt.discovery" in text


MQTT_ENV = "INTERCOM_MQTT_PASSWORD"
