"""Settings that are valid but unsafe: ``intercom check-config`` shows them, the daemon logs them.

A configuration error stops the door; these do not, because each may be what the owner wants
on a bench. But a door that opens for a one-key code, or a password any user of the Pi can read,
is a door that opens for the wrong person, so every such setting is named, all at once, in the
form of the configuration errors: ``<key>: <problem>; got <value>; <fix>``. No line quotes a
secret: a code is described by its length, a password file by its path and mode.

The checks are pure functions of the :class:`~intercom.config.Config` and of the files' modes
(:func:`warnings`); :func:`file_modes` is the one place that asks the file system.

**The door code.** The lockout is counted per caller: ``door.max_attempts`` wrong codes and that
caller waits ``door.lockout`` seconds. So one caller, calling without pause all day, can try at
most ``max_attempts * ceil(86400 / lockout)`` codes a day (:func:`tries_per_day`; keying takes
time too, so the real figure is lower). The code is weak when those tries cover
:data:`MAX_DAILY_FRACTION` or more of the possible codes of its length: with the defaults
(3 attempts, 300 s) that is 864 tries a day, so all 10,000 codes of 4 digits are tried within
12 days, those of 5 digits within 116. A lockout shorter than :data:`MIN_LOCKOUT` is named on
its own: a household that mistypes barely notices a minute, a script does.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from intercom.config import Config, DoorConfig

__all__ = [
    "DAY",
    "MAX_DAILY_FRACTION",
    "MIN_LOCKOUT",
    "code_space",
    "door_warnings",
    "file_modes",
    "secret_files",
    "secret_paths",
    "secret_warnings",
    "tries_per_day",
    "warnings",
]

DAY = 86400.0
#: The share of all codes one caller may try per day before the code counts as too short.
MAX_DAILY_FRACTION = 0.01
#: Seconds; a shorter door.lockout is named as too short whatever the code.
MIN_LOCKOUT = 60.0

# What an attacker must try: digits only, unless the code uses '*' or the keys A to D, which few
# phones have. Reckoned by the kinds of keys the code uses, the weakest plausible guess.
_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("ABCD")


def tries_per_day(max_attempts: int, lockout: float) -> int:
    """The most codes one caller can try in a day: ``max_attempts`` per lockout."""
    return max_attempts * math.ceil(DAY / lockout)


def _keys(code: str) -> int:
    keys = len(_DIGITS)
    if "*" in code:
        keys += 1
    if _LETTERS & set(code.upper()):
        keys += len(_LETTERS)
    return keys


def code_space(code: str) -> int:
    """How many codes of this one's length and kinds of keys there are."""
    return _keys(code) ** len(code)


def _shortest_safe_length(keys: int, tries: int) -> int | None:
    """The shortest code length of which a day's ``tries`` cover less than the allowed share;
    None when even the longest code allowed (8 keys) is too short."""
    for length in range(1, 9):
        if tries < MAX_DAILY_FRACTION * keys**length:
            return length
    return None


def _share(fraction: float, space: int) -> str:
    """How much of the code space a day's tries cover: "all 10", "8.6% of the 10,000"."""
    if fraction >= 1:
        return f"all {space:,}"
    percent = f"{fraction:.0%}" if fraction >= 0.1 else f"{fraction:.1%}"
    return f"{percent} of the {space:,}"


def door_warnings(door: DoorConfig | None) -> list[str]:
    """A code too short for the attempts allowed, and a lockout too short."""
    if door is None or not door.secret():
        return []
    out = []
    code = door.secret()
    tries = tries_per_day(door.max_attempts, door.lockout)
    space = code_space(code)
    fraction = tries / space
    if fraction >= MAX_DAILY_FRACTION:
        share = _share(fraction, space)
        longer = _shortest_safe_length(_keys(code), tries)
        fix = (
            f"use a code of {longer} keys or more, or lower door.max_attempts or raise door.lockout"
            if longer is not None and longer > len(code)
            else "lower door.max_attempts or raise door.lockout"
        )
        out.append(
            f"door.dtmf_code: too short for {door.max_attempts} attempts per "
            f"{door.lockout:g} s lockout: one caller could try {share} possible codes "
            f"a day ({tries:,} tries); got a code of {len(code)} "
            f"key{'s' if len(code) != 1 else ''}; {fix}"
        )
    if door.lockout < MIN_LOCKOUT:
        out.append(
            f"door.lockout: too short to slow down a caller guessing the code; "
            f"got {door.lockout:g}; use {MIN_LOCKOUT:g} seconds or more (default 300)"
        )
    return out


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """The files the config names that hold a secret, as (key, absolute path).

    The config resolves relative paths against its own directory, so these are absolute.
    """
    out: list[tuple[str, Path]] = []
    if config.sip.password_file is not None:
        out.append(("sip.password_file", config.sip.password_file))
    if config.mqtt is not None:
        if config.mqtt.password_file is not None:
            out.append(("mqtt.password_file", config.mqtt.password_file))
        if config.mqtt.tls is not None and config.mqtt.tls.key_file is not None:
            out.append(("mqtt.tls.key_file", config.mqtt.tls.key_file))
    return out


def _inline_secrets(config: Config) -> list[str]:
    """The keys whose secret is written in the configuration file itself."""
    keys = []
    if config.sip.password_source == "sip.password":
        keys.append("sip.password")
    if config.mqtt is not None and config.mqtt.password_source == "mqtt.password":
        keys.append("mqtt.password")
    if config.door is not None and config.door.secret():
        keys.append("door.dtmf_code")
    return keys


def _exposure(mode: int) -> str | None:
    """What others may do with a file of this mode: a secret must allow them nothing."""
    words = [
        word for bit, word in ((stat.S_IROTH, "readable"), (stat.S_IWOTH, "writable")) if mode & bit
    ]
    return f"{' and '.join(words)} by every user" if words else None


def secret_warnings(
    config: Config, config_path: Path | None, modes: Mapping[Path, int | None]
) -> list[str]:
    """Each file holding a secret that other users of the machine can read (or change).

    ``modes`` maps each path of :func:`secret_paths` to its ``st_mode``, None for a file that
    cannot be looked at (a missing password file is a configuration error already).
    """
    files: list[tuple[str, str, Path]] = []
    inline = _inline_secrets(config)
    if config_path is not None and inline:
        held = " and ".join(inline)
        files.append((inline[0], f"the configuration file holds {held} and is", config_path))
    files += [(key, "the file is", path) for key, path in secret_files(config)]
    out = []
    for key, subject, path in files:
        mode = modes.get(path)
        exposure = _exposure(mode) if mode is not None else None
        if exposure is None:
            continue
        fix = f"chmod o-rwx {path} (scripts/install-pi makes it 0640 root:pi-intercom)"
        if path == config_path and "password" in key:
            fix += f", or move the password to {key.split('.')[0]}.password_file"
        out.append(
            f"{key}: {subject} {exposure} on this machine; "
            f"got {path} (mode {stat.S_IMODE(mode or 0):04o}); {fix}"
        )
    return out


def secret_paths(config: Config, config_path: Path | None) -> list[Path]:
    """Every file whose mode :func:`secret_warnings` looks at."""
    paths = [path for _, path in secret_files(config)]
    if config_path is not None and _inline_secrets(config):
        paths.insert(0, config_path)
    return paths


def file_modes(paths: Iterable[Path]) -> dict[Path, int | None]:
    """``st_mode`` of each path (following links, as reading it does), None when unreadable."""
    modes: dict[Path, int | None] = {}
    for path in paths:
        try:
            modes[path] = os.stat(path).st_mode
        except OSError:
            modes[path] = None
    return modes


def warnings(
    config: Config, config_path: Path | None, modes: Mapping[Path, int | None] | None = None
) -> list[str]:
    """Every warning for ``config``, loaded from ``config_path`` (None: not from a file).

    ``modes`` as :func:`secret_warnings` takes them; by default read from the file system.
    """
    if config_path is not None:
        config_path = Path(config_path).absolute()
    if modes is None:
        modes = file_modes(secret_paths(config, config_path))
    return door_warnings(config.door) + secret_warnings(config, config_path, modes)
