"""check-config's warnings: weak door settings and secrets others can read.

The lines are compared in full, as the config errors are (tests/unit/test_config.py): their
wording is the user interface. The pure functions get the modes as data; the command and the
daemon are run on real files with real modes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from intercom import cli
from intercom.config import Config, load_config, parse_config
from intercom.config_warnings import (
    MAX_DAILY_FRACTION,
    code_space,
    door_warnings,
    secret_files,
    secret_paths,
    secret_warnings,
    tries_per_day,
    warnings,
)

CODE = "4711"
SIP_SECRET = "sip-Secret-9"
MQTT_SECRET = "mqtt-Secret-7"


def config(door: dict[str, Any] | None = None, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "sip": {"server": "127.0.0.1", "username": "door", "password": SIP_SECRET},
        **sections,
    }
    if door is not None:
        data["door"] = door
    return parse_config(data, base_dir=Path("/etc/pi-intercom"), env={})


# -- the door code: the arithmetic --------------------------------------------------------------
def test_tries_per_day_are_per_caller_per_lockout() -> None:
    assert tries_per_day(3, 300) == 3 * 288
    assert tries_per_day(20, 1) == 20 * 86400
    assert tries_per_day(1, 86400) == 1
    assert tries_per_day(3, 7) == 3 * 12343  # a partial lockout at the end of the day counts


@pytest.mark.parametrize(
    ("code", "space"),
    [("7", 10), ("4711", 10**4), ("*12", 11**3), ("A1", 14**2), ("*A", 15**2), ("12345678", 10**8)],
)
def test_code_space_by_the_kinds_of_keys_used(code: str, space: int) -> None:
    assert code_space(code) == space


def test_the_issue_s_one_key_code_with_20_attempts_and_a_1_s_lockout() -> None:
    door = config({"dtmf_code": "7", "max_attempts": 20, "lockout": 1}).door
    assert door_warnings(door) == [
        "door.dtmf_code: too short for 20 attempts per 1 s lockout: one caller could try all 10 "
        "possible codes a day (1,728,000 tries); got a code of 1 key; lower door.max_attempts "
        "or raise door.lockout",
        "door.lockout: too short to slow down a caller guessing the code; got 1; use 60 seconds "
        "or more (default 300)",
    ]


def test_four_digits_with_the_default_lockout_are_too_few() -> None:
    door = config({"dtmf_code": CODE}).door
    assert door_warnings(door) == [
        "door.dtmf_code: too short for 3 attempts per 300 s lockout: one caller could try 8.6% "
        "of the 10,000 possible codes a day (864 tries); got a code of 4 keys; use a code of 5 "
        "keys or more, or lower door.max_attempts or raise door.lockout"
    ]


@pytest.mark.parametrize(
    "door",
    [
        {"dtmf_code": "47110"},  # five digits, the defaults: 0.86% a day
        {"dtmf_code": CODE, "max_attempts": 3, "lockout": 3600},  # 72 tries: 0.72%
        {"dtmf_code": "", "max_attempts": 20, "lockout": 1},  # no code: nothing to guess
        {"mqtt_open": True, "lockout": 1},
    ],
)
def test_settings_that_are_fine(door: dict[str, Any]) -> None:
    assert door_warnings(config(door).door) == []
    assert door_warnings(None) == []


def test_the_threshold_is_the_daily_share() -> None:
    # 10^5 codes; max_attempts 20 at 1200 s: 1440 tries, 1.44% -> weak; at 3600 s: 0.48%.
    weak = config({"dtmf_code": "47110", "max_attempts": 20, "lockout": 1200}).door
    fine = config({"dtmf_code": "47110", "max_attempts": 20, "lockout": 3600}).door
    assert tries_per_day(20, 1200) / 10**5 >= MAX_DAILY_FRACTION
    assert door_warnings(weak) and not door_warnings(fine)


def test_a_long_code_with_a_short_lockout_is_named_for_the_lockout_only() -> None:
    door = config({"dtmf_code": "12345678", "lockout": 10}).door
    assert [line.split(":")[0] for line in door_warnings(door)] == ["door.lockout"]


def test_no_warning_quotes_the_code() -> None:
    door = config({"dtmf_code": "*A7", "max_attempts": 20, "lockout": 1}).door
    lines = door_warnings(door)
    assert lines and not any("*A7" in line for line in lines)
    assert "all 3,375 possible codes" in lines[0]


# -- secrets others can read --------------------------------------------------------------------
CONFIG_PATH = Path("/etc/pi-intercom/intercom.yaml")


def files_config() -> Config:
    return Config.model_validate(
        {
            "sip": {"server": "pbx", "username": "door", "password_file": "/etc/p/sip"},
            "mqtt": {
                "host": "broker",
                "password_file": "/etc/p/mqtt",
                "tls": {"key_file": "/etc/p/client.key", "cert_file": "/etc/p/client.crt"},
            },
        }
    )


def test_secret_files_are_the_password_files_and_the_tls_key() -> None:
    assert secret_files(files_config()) == [
        ("sip.password_file", Path("/etc/p/sip")),
        ("mqtt.password_file", Path("/etc/p/mqtt")),
        ("mqtt.tls.key_file", Path("/etc/p/client.key")),
    ]
    # Nothing inline: the config file's own mode does not matter.
    assert secret_paths(files_config(), CONFIG_PATH) == [
        Path("/etc/p/sip"),
        Path("/etc/p/mqtt"),
        Path("/etc/p/client.key"),
    ]


def test_other_readable_secret_files_are_named() -> None:
    modes = {
        Path("/etc/p/sip"): 0o100644,
        Path("/etc/p/mqtt"): 0o100640,  # group only: what the installer sets
        Path("/etc/p/client.key"): 0o100606,
    }
    assert secret_warnings(files_config(), CONFIG_PATH, modes) == [
        "sip.password_file: the file is readable by every user on this machine; got /etc/p/sip "
        "(mode 0644); chmod o-rwx /etc/p/sip (scripts/install-pi makes it 0640 root:pi-intercom)",
        "mqtt.tls.key_file: the file is readable and writable by every user on this machine; "
        "got /etc/p/client.key (mode 0606); chmod o-rwx /etc/p/client.key (scripts/install-pi "
        "makes it 0640 root:pi-intercom)",
    ]


def test_missing_files_are_left_to_the_config_errors() -> None:
    assert secret_warnings(files_config(), CONFIG_PATH, {}) == []


def test_a_config_file_holding_secrets_inline() -> None:
    cfg = config(
        {"dtmf_code": "47110815"},
        mqtt={"host": "broker", "username": "door", "password": MQTT_SECRET},
    )
    assert secret_paths(cfg, CONFIG_PATH) == [CONFIG_PATH]
    lines = secret_warnings(cfg, CONFIG_PATH, {CONFIG_PATH: 0o100644})
    assert lines == [
        "sip.password: the configuration file holds sip.password and mqtt.password and "
        "door.dtmf_code and is readable by every user on this machine; got "
        "/etc/pi-intercom/intercom.yaml (mode 0644); chmod o-rwx /etc/pi-intercom/intercom.yaml "
        "(scripts/install-pi makes it 0640 root:pi-intercom), or move the password to "
        "sip.password_file"
    ]
    assert secret_warnings(cfg, CONFIG_PATH, {CONFIG_PATH: 0o100640}) == []
    for line in lines:
        assert SIP_SECRET not in line and MQTT_SECRET not in line and "47110815" not in line


# -- the command and the daemon, on real files --------------------------------------------------
def write(tmp_path: Path, door: str = "") -> Path:
    (tmp_path / "sip-password").write_text(SIP_SECRET + "\n")
    os.chmod(tmp_path / "sip-password", 0o644)
    path = tmp_path / "intercom.yaml"
    path.write_text(
        "sip:\n  server: 127.0.0.1\n  port: 9\n  username: door\n  password_file: sip-password\n"
        "  register: false\n  local_port: 0\n"
        "audio: {input: silence, output: 'null'}\n" + door
    )
    os.chmod(path, 0o644)
    return path


WEAK_DOOR = "door: {dtmf_code: '7', max_attempts: 20, lockout: 1}\n"


def test_check_config_shows_every_warning_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, WEAK_DOOR)
    assert cli.main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.endswith(f"{path}: OK, with 4 warning(s)\n")
    lines = err.splitlines()
    assert lines[0] == f"{path}: 4 warning(s); the door runs, but:"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  - door.dtmf_code",
        "  - door.lockout",
        "  - door.dtmf_code",  # the code is in the file, which everyone may read
        "  - sip.password_file",
    ]
    assert SIP_SECRET not in out + err
    # Fixed: no warning left.
    os.chmod(path, 0o640)
    os.chmod(tmp_path / "sip-password", 0o600)
    path.write_text(path.read_text().replace(WEAK_DOOR, "door: {dtmf_code: '4711081'}\n"))
    assert cli.main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.endswith(f"{path}: OK\n") and err == ""


def test_secret_files_lists_absolute_paths_for_the_installer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path)
    assert cli.main(["check-config", "-c", str(path), "--secret-files"]) == 0
    assert capsys.readouterr().out == f"sip.password_file\t{tmp_path}/sip-password\n"


def test_the_daemon_logs_the_warnings_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intercom.daemon import Daemon

    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")  # the door section claims a pin
    path = write(tmp_path, WEAK_DOOR)
    cfg = load_config(path)

    async def scenario() -> int:
        daemon = asyncio.create_task(Daemon(cfg, str(path), trace=False, mqtt_debug=False).run())
        await asyncio.sleep(0)  # one turn: the daemon's handlers are in place, start is under way
        os.kill(os.getpid(), signal.SIGTERM)
        return await daemon

    with caplog.at_level(logging.WARNING, logger="intercom"):
        assert asyncio.run(scenario()) == 0
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("config: ")]
    assert logged == [f"config: {line}" for line in warnings(cfg, path)]
    assert len(logged) == 4
    assert SIP_SECRET not in caplog.text
