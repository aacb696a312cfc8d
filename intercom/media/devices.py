"""Sound cards as PortAudio sees them: listing, choosing by name, and one shared PortAudio session.

PyAudio is imported only here and only when a function needs it, so that the rest of the
intercom, the demo and the unit tests run on a machine without PortAudio.

PortAudio scans the devices once, when it is initialised, and keeps that list until it is
terminated. A USB sound card that was unplugged and plugged back in is therefore seen again only
by a new session; :class:`PortAudioSession` shares one session between the streams that are open
at the same time (the capture and the playback of one call scan once, not twice) and ends it when
the last one closes, so the next call scans afresh.

ALSA and JACK print their probing noise ("Unknown PCM cards.pcm.rear", "jack server is not
running") straight to file descriptor 2, below Python. That noise is hidden while PortAudio scans,
unless this module's logger is at DEBUG, where it is what you want to see.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from intercom.errors import IntercomError

log = logging.getLogger(__name__)

Direction = Literal["input", "output"]

INSTALL_HINT = (
    "PyAudio is not installed: install the audio extra (pip install 'pi-intercom[audio]'), "
    "which builds against PortAudio (Debian/Raspberry Pi OS: apt-get install portaudio19-dev)"
)


class AudioDeviceError(IntercomError):
    """A sound card could not be found or opened; the message says what is there instead."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One PortAudio device; ``index`` is only valid within the session that listed it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate: int
    is_default_input: bool = False
    is_default_output: bool = False
    host_api: str = ""

    def channels(self, direction: Direction) -> int:
        return self.max_input_channels if direction == "input" else self.max_output_channels

    def is_default(self, direction: Direction) -> bool:
        return self.is_default_input if direction == "input" else self.is_default_output


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send fd 2 to /dev/null for the duration: ALSA and JACK write there from C, not via Python.

    Everything written to stderr meanwhile is lost, from any thread, so keep the block short.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (a daemon without stderr): nothing to hide
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_pyaudio() -> Any:
    """The ``pyaudio`` module, or an :class:`AudioDeviceError` that says how to install it."""
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioDeviceError(INSTALL_HINT) from exc
    return pyaudio


class PortAudioSession:
    """One ``pyaudio.PyAudio`` shared by every stream open at the same time, reference-counted.

    Opens run from whichever thread the caller likes (``asyncio.to_thread`` keeps the scan off the
    event loop), hence the lock.
    """

    _lock = threading.Lock()
    _pa: Any = None
    _users = 0

    @classmethod
    def acquire(cls) -> Any:
        with cls._lock:
            if cls._pa is None:
                pyaudio = import_pyaudio()
                with quiet_stderr():
                    cls._pa = pyaudio.PyAudio()
            cls._users += 1
            return cls._pa

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                return
            cls._users -= 1
            if cls._users == 0 and cls._pa is not None:
                pa, cls._pa = cls._pa, None
                with quiet_stderr():
                    pa.terminate()

    @classmethod
    @contextlib.contextmanager
    def use(cls) -> Iterator[Any]:
        pa = cls.acquire()
        try:
            yield pa
        finally:
            cls.release()


def devices_of(pa: Any) -> list[DeviceInfo]:
    """Every device of an open PortAudio session."""
    default_in = _default_index(pa.get_default_input_device_info)
    default_out = _default_index(pa.get_default_output_device_info)
    apis: dict[int, str] = {}
    out: list[DeviceInfo] = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        api = int(info.get("hostApi", -1))
        if api not in apis:
            try:
                apis[api] = str(pa.get_host_api_info_by_index(api)["name"])
            except (OSError, ValueError, KeyError):
                apis[api] = ""
        out.append(
            DeviceInfo(
                index=index,
                name=str(info["name"]),
                max_input_channels=int(info["maxInputChannels"]),
                max_output_channels=int(info["maxOutputChannels"]),
                default_sample_rate=round(float(info["defaultSampleRate"])),
                is_default_input=index == default_in,
                is_default_output=index == default_out,
                host_api=apis[api],
            )
        )
    return out


def _default_index(getter: Callable[[], dict[str, Any]]) -> int:
    try:
        return int(getter()["index"])
    except (OSError, ValueError, KeyError):  # PortAudio raises IOError when there is none
        return -1


def list_devices() -> list[DeviceInfo]:
    """The sound cards PortAudio can open now; raises :class:`AudioDeviceError` without PyAudio."""
    with PortAudioSession.use() as pa:
        return devices_of(pa)


def _line(device: DeviceInfo, direction: Direction) -> str:
    channels = device.channels(direction)
    default = "  (default)" if device.is_default(direction) else ""
    api = f"  [{device.host_api}]" if device.host_api and device.host_api != "ALSA" else ""
    return (
        f"  {device.index:>3}: {device.name}  "
        f"({channels} ch, {device.default_sample_rate} Hz){default}{api}"
    )


def format_inputs_outputs(devices: list[DeviceInfo], direction: Direction) -> str:
    """The devices that can capture (``input``) or play (``output``), one line each."""
    lines = [_line(d, direction) for d in devices if d.channels(direction) > 0]
    return "\n".join(lines) if lines else "  (none)"


def format_devices(devices: list[DeviceInfo]) -> str:
    """What ``intercom devices`` prints: inputs and outputs apart, each with its default rate.

    The index, or any part of the name, is what ``audio.input`` and ``audio.output`` take.
    """
    return (
        "Inputs (audio.input):\n"
        + format_inputs_outputs(devices, "input")
        + "\nOutputs (audio.output):\n"
        + format_inputs_outputs(devices, "output")
    )


def find_device(devices: list[DeviceInfo], spec: str | int, direction: Direction) -> DeviceInfo:
    """The device that ``spec`` names for capture or playback.

    ``spec`` is ``"default"``, an index (int or digits), or a name: an exact name (ignoring case)
    wins over a part of a name, so ``intercom`` picks the ALSA device ``intercom`` even when
    ``intercom_test`` exists too; among several partial matches the first in PortAudio's order
    (hardware before ALSA plugins) is taken.
    """
    usable = [d for d in devices if d.channels(direction) > 0]
    key = spec.strip() if isinstance(spec, str) else spec
    found: DeviceInfo | None = None
    if isinstance(key, int) or key.isdigit():
        index = int(key)
        found = next((d for d in usable if d.index == index), None)
    elif key.lower() == "default":
        found = next((d for d in usable if d.is_default(direction)), None)
        if found is None:
            found = next((d for d in usable if d.name.lower() == "default"), None)
    else:
        name = key.lower()
        found = next((d for d in usable if d.name.lower() == name), None)
        if found is None:
            found = next((d for d in usable if name in d.name.lower()), None)
    if found is None:
        raise AudioDeviceError(missing_message(devices, spec, direction))
    return found


def missing_message(devices: list[DeviceInfo], spec: str | int, direction: Direction) -> str:
    """Names the device asked for and lists what could be used instead."""
    kind = "input" if direction == "input" else "output"
    setting = f"audio.{kind}"
    return (
        f"no audio {kind} device {spec!r} ({setting}); available {kind}s:\n"
        + format_inputs_outputs(devices, direction)
        + "\n(run 'intercom devices'; a USB card missing here is unplugged or not recognised:"
        " check 'aplay -l' and 'arecord -l', see hardware/AUDIO.md)"
    )
