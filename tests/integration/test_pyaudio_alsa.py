"""The sound-card path for real: PyAudio, PortAudio and ALSA, with no sound card.

ALSA's ``file`` plugin stands in for the card: played audio is written to a raw file, and
captured audio is read from one (``infile``). Under it, a JACK server with its dummy driver is
the card's clock, so the streams run in real time as a USB card's would (ALSA's ``null`` PCM has
no clock: PortAudio would spin through it as fast as the CPU goes). The test writes its own ALSA
configuration and points ``ALSA_CONFIG_PATH`` at it; since ALSA and PortAudio read their
configuration once per process, everything that touches PyAudio runs in a child process: this
file run as ``python -m tests.integration.test_pyaudio_alsa SCENARIO ...``.

Needs PyAudio in the venv and the Debian packages jackd2 (the server and ``jack_wait``) and
libasound2-plugins (ALSA's ``jack`` plugin). Without them the tests are skipped, or fail under CI.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.peers.fixtures import in_ci

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
RATE = 16000
JACK_RATE = 48000
FRAME = 0.020

ASOUND_CONF = """\
<{system}>

# The card's clock: a JACK server with the dummy driver (mono, float, {jack_rate} Hz only).
pcm.intercom_test_clock {{
    type jack
    playback_ports {{ 0 system:playback_1 }}
    capture_ports {{ 0 system:capture_1 }}
}}
# 16-bit at {jack_rate} Hz only: a card that does not take the call's rate.
pcm.intercom_test_s16 {{
    type lfloat
    slave {{ pcm "intercom_test_clock"; format FLOAT_LE }}
}}
# Any rate (through plug): played audio lands in out.raw, captured audio comes from in.raw,
# both 16-bit mono at the rate the stream was opened with.
pcm.intercom_test_out {{
    type file
    slave.pcm {{ type plug; slave.pcm "intercom_test_clock" }}
    file "{root}/out.raw"
    format "raw"
}}
pcm.intercom_test_in {{
    type file
    slave.pcm {{ type plug; slave.pcm "intercom_test_clock" }}
    file "/dev/null"
    infile "{root}/in.raw"
    format "raw"
}}
pcm.intercom_test_out48 {{
    type file
    slave.pcm "intercom_test_s16"
    file "{root}/out48.raw"
    format "raw"
}}
pcm.intercom_test_in48 {{
    type file
    slave.pcm "intercom_test_s16"
    file "/dev/null"
    infile "{root}/in48.raw"
    format "raw"
}}
pcm.!default {{
    type asym
    playback.pcm "intercom_test_out"
    capture.pcm "intercom_test_in"
}}
"""


def _missing() -> list[str]:
    missing = []
    if importlib.util.find_spec("pyaudio") is None:
        missing.append("PyAudio (pip install 'pi-intercom[audio]'; builds on portaudio19-dev)")
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        missing.append("jackd2")
    if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_jack.so") and not glob.glob(
        "/usr/lib/alsa-lib/libasound_module_pcm_jack.so"
    ):
        missing.append("libasound2-plugins")
    if not SYSTEM_ALSA_CONF.exists():
        missing.append(f"ALSA's {SYSTEM_ALSA_CONF} (libasound2-data)")
    return missing


def require_audio_stack() -> None:
    """Skip without PyAudio, JACK or ALSA's jack plugin, but fail under CI, where
    scripts/test installs them and their absence means the setup broke."""
    missing = _missing()
    if not missing:
        return
    message = "audio stack not installed: " + ", ".join(missing)
    if in_ci():
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


# -- test signals ----------------------------------------------------------------------------------


def tone(freq: float, dbfs: float, rate: int, seconds: float, noise_dbfs: float = -200) -> Any:
    """A sine plus, optionally, quiet seeded noise (so that a slice of it occurs only once)."""
    t = np.arange(int(rate * seconds)) / rate
    x = 32767 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)
    x += 32767 * 10 ** (noise_dbfs / 20) * np.random.default_rng(7).standard_normal(len(t))
    return np.clip(np.rint(x), -32768, 32767).astype("<i2")


def dominant_hz(samples: Any, rate: int) -> float:
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(samples))


def peak_dbfs(samples: Any) -> float:
    return float(20 * np.log10(np.max(np.abs(samples.astype(np.float64))) / 32767))


def sounding(samples: Any) -> Any:
    """From the first to the last non-zero sample (the streams start and end with silence)."""
    nonzero = np.flatnonzero(samples)
    assert len(nonzero), "only silence"
    return samples[nonzero[0] : nonzero[-1] + 1]


# -- the bench: JACK server, ALSA configuration, child processes -----------------------------------


class AlsaBench:
    def __init__(self, root: Path, server: str) -> None:
        self.root = root
        # A fixed name: JACK keeps at most 8 servers in its registry in /dev/shm and frees the
        # entry of a server that died without unregistering only when one of the same name starts.
        self.server = server
        self.conf = root / "asound.conf"
        self.conf.write_text(
            ASOUND_CONF.format(system=SYSTEM_ALSA_CONF, root=root, jack_rate=JACK_RATE)
        )
        self.in_audio = tone(700, -10.0, RATE, 4.0, noise_dbfs=-45)
        self.in_audio.tofile(root / "in.raw")
        tone(700, -10.0, JACK_RATE, 4.0).tofile(root / "in48.raw")
        self.jack_log = root / "jackd.log"
        self.jackd: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Periods of 256 frames: with 960 (20 ms) PortAudio found no buffer size that the ALSA
        # jack plugin accepts, and left the devices out.
        args = ["jackd", "-n", self.server, "--no-realtime"]
        args += ["-d", "dummy", "-r", str(JACK_RATE), "-p", "256"]
        with self.jack_log.open("wb") as log_file:
            self.jackd = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"},
            )
        ready = subprocess.run(
            ["jack_wait", "-s", self.server, "-w", "-t", "10"],
            capture_output=True,
            timeout=20,
            env=self.env(),
        )
        if ready.returncode != 0 or self.jackd.poll() is not None:
            self.stop()
            pytest.fail(f"jackd did not start:\n{self.jack_log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.jackd is not None and self.jackd.poll() is None:
            self.jackd.send_signal(signal.SIGCONT)  # in case a test froze it
            self.jackd.terminate()
            try:
                self.jackd.wait(5)
            except subprocess.TimeoutExpired:
                self.jackd.kill()
                self.jackd.wait(5)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ALSA_CONFIG_PATH": str(self.conf),
            "JACK_DEFAULT_SERVER": self.server,
            "JACK_NO_START_SERVER": "1",  # never start a server of the user's configuration
            "PYTHONPATH": str(REPO),
        }

    def run(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.integration.test_pyaudio_alsa", *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            pytest.fail(
                f"child {args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                f"stderr:\n{proc.stderr[-3000:]}",
                pytrace=False,
            )
        result: dict[str, Any] = json.loads(lines[-1])
        result["stderr"] = proc.stderr
        return result

    def raw(self, name: str) -> Any:
        return np.fromfile(self.root / name, dtype="<i2")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlsaBench]:
    require_audio_stack()
    bench = AlsaBench(tmp_path_factory.mktemp("alsa"), "intercom-test")
    bench.start()
    yield bench
    bench.stop()


@pytest.fixture
def own_bench(tmp_path: Path) -> Iterator[AlsaBench]:
    """A JACK server of its own, for a test that freezes it."""
    require_audio_stack()
    bench = AlsaBench(tmp_path, "intercom-test-freeze")
    bench.start()
    yield bench
    bench.stop()


# -- the tests -------------------------------------------------------------------------------------


def test_devices_are_listed(bench: AlsaBench) -> None:
    result = bench.run("list")
    devices = {d["name"]: d for d in result["devices"]}

    for name in ("intercom_test_in", "intercom_test_out", "intercom_test_in48", "default"):
        assert name in devices, f"{name} not in {sorted(devices)}"
        assert devices[name]["max_input_channels"] >= 1
        assert devices[name]["max_output_channels"] >= 1
    assert devices["intercom_test_out48"]["default_sample_rate"] == JACK_RATE
    assert devices["default"]["is_default_input"] and devices["default"]["is_default_output"]
    inputs, outputs = result["text"].split("Outputs")
    assert "intercom_test_in48  (1 ch, 48000 Hz)" in inputs
    assert "intercom_test_out48  (1 ch, 48000 Hz)" in outputs
    assert "ALSA lib" not in result["stderr"]  # the probing noise is hidden


def test_missing_device_names_it_and_lists_the_test_devices(bench: AlsaBench) -> None:
    result = bench.run("missing", "Jabra Speak 410")

    for direction in ("input", "output"):
        message = result[direction]
        assert message.startswith(f"no audio {direction} device 'Jabra Speak 410'"), message
        assert "intercom_test_in48  (1 ch, 48000 Hz)" in message
        assert "intercom_test_out" in message


def test_tone_played_through_pyaudio_sink_reaches_the_device(bench: AlsaBench) -> None:
    result = bench.run("play", "intercom_test_out", "1000", "1.0")
    out = bench.raw("out.raw")

    stats = result["stats"]
    assert stats["device_rate"] == RATE and stats["failed"] == 0 and stats["frames"] == 50
    assert stats["callbacks"] >= 40  # the card's clock, not the CPU, paced the callback
    audio = sounding(out)
    assert len(audio) >= 0.8 * RATE
    assert dominant_hz(audio, RATE) == pytest.approx(1000, abs=3)
    assert peak_dbfs(audio) == pytest.approx(-20.0, abs=0.2)
    if stats["underruns"] == 0 and stats["overruns"] == 0:
        # Nothing lost or repeated: what reached the card is the tone, sample for sample.
        expected = tone_source_samples(1000, RATE, len(audio) + 1)[1:]
        np.testing.assert_array_equal(audio[: RATE // 2], expected[: RATE // 2])


def test_pyaudio_source_captures_what_the_device_delivers(bench: AlsaBench) -> None:
    result = bench.run("record", "intercom_test_in", "1.5", str(bench.root / "heard.raw"))
    heard = bench.raw("heard.raw")

    stats = result["stats"]
    assert stats["device_rate"] == RATE and stats["failed"] == 0 and stats["frames"] == 75
    audio = sounding(heard)
    assert len(audio) >= 1.2 * RATE
    assert dominant_hz(audio, RATE) == pytest.approx(700, abs=3)
    assert peak_dbfs(audio) == pytest.approx(peak_dbfs(bench.in_audio), abs=0.3)
    if stats["underruns"] == 0 and stats["overruns"] == 0:
        # A contiguous stretch of the device's input: no frame dropped, doubled or reordered.
        window = np.lib.stride_tricks.sliding_window_view(bench.in_audio, 64)
        starts = np.flatnonzero((window == audio[:64]).all(axis=1))
        assert len(starts) == 1
        start = int(starts[0])
        np.testing.assert_array_equal(audio, bench.in_audio[start : start + len(audio)])


def test_card_without_the_call_rate_is_resampled_both_ways(bench: AlsaBench) -> None:
    if importlib.util.find_spec("soxr") is None:
        pytest.skip("soxr (the resampler) is not installed")
    played = bench.run("play", "intercom_test_out48", "1000", "1.0")
    heard = bench.run("record", "intercom_test_in48", "1.0", str(bench.root / "heard48.raw"))

    assert played["stats"]["device_rate"] == JACK_RATE == heard["stats"]["device_rate"]
    assert "opening at 48000 Hz and resampling" in played["log"]
    out = sounding(bench.raw("out48.raw"))
    assert dominant_hz(out, JACK_RATE) == pytest.approx(1000, abs=3)
    assert peak_dbfs(out[JACK_RATE // 10 :]) == pytest.approx(-20.0, abs=0.3)
    audio = sounding(bench.raw("heard48.raw"))
    assert len(audio) >= 0.7 * RATE
    assert dominant_hz(audio, RATE) == pytest.approx(700, abs=3)
    assert peak_dbfs(audio[RATE // 10 :]) == pytest.approx(-10.0, abs=0.3)


def test_card_that_stops_mid_call_fails_once_and_the_call_goes_on(
    own_bench: AlsaBench,
) -> None:
    assert own_bench.jackd is not None
    result = own_bench.run("call", "default", str(own_bench.jackd.pid))

    assert not result["failed_before"]
    assert dominant_hz(np.array(result["heard_before"], dtype=np.int16), RATE) == pytest.approx(
        700, abs=10
    )
    assert result["source_failed"] and result["sink_failed"]
    assert result["detected_after"] < 2.0
    assert result["silent_after"]  # reads after the failure are silence, of full length
    assert result["errors_logged"] == 2, result["log"]  # once per stream, not once per frame
    assert result["ticks_after"] == 125  # the loop kept its 20 ms ticks


def tone_source_samples(freq: float, rate: int, n: int) -> Any:
    from intercom.media.audio import ToneSource

    return ToneSource(freq, -20.0, rate).read(n)


# -- the child process -----------------------------------------------------------------------------


def _ticks(seconds: float) -> Iterator[int]:
    """The media loop's schedule: one tick every 20 ms on the monotonic clock."""
    start = time.monotonic()
    for n in range(round(seconds / FRAME)):
        yield n
        delay = start + (n + 1) * FRAME - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.errors += record.levelno >= logging.ERROR


def _child(argv: list[str]) -> dict[str, Any]:
    from intercom.media import audio
    from intercom.media.devices import AudioDeviceError, format_devices
    from intercom.media.devices import list_devices as list_all

    records = _Records()
    logging.getLogger("intercom").addHandler(records)
    logging.getLogger("intercom").setLevel(logging.INFO)
    scenario, *args = argv
    out: dict[str, Any] = {}
    if scenario == "list":
        devices = list_all()
        out = {"devices": [dataclasses.asdict(d) for d in devices], "text": format_devices(devices)}
    elif scenario == "missing":
        for direction, opener in (("input", audio.open_source), ("output", audio.open_sink)):
            try:
                opener(args[0], RATE).close()
                out[direction] = "opened"
            except AudioDeviceError as exc:
                out[direction] = str(exc)
    elif scenario == "play":
        device, freq, seconds = args[0], float(args[1]), float(args[2])
        sink = audio.open_sink(device, RATE)
        assert isinstance(sink, audio.PyAudioSink)
        tone_in = audio.ToneSource(freq, -20.0, RATE)
        for _ in _ticks(seconds):
            sink.write(tone_in.read(RATE // 50))
        stats = sink.stats()
        for _ in _ticks(0.2):  # the queue plays out, as the call's last words would
            sink.write(audio.silence(RATE // 50))
        out = {"stats": stats}
        sink.close()
    elif scenario == "record":
        device, seconds, path = args[0], float(args[1]), args[2]
        mic = audio.open_source(device, RATE)
        assert isinstance(mic, audio.PyAudioSource)
        heard = [mic.read(RATE // 50) for _ in _ticks(seconds)]
        out = {"stats": mic.stats()}
        mic.close()
        np.concatenate(heard).astype("<i2").tofile(path)
    elif scenario == "call":
        device, jack_pid = args[0], int(args[1])
        source = audio.open_source(device, RATE)
        sink = audio.open_sink(device, RATE)
        assert isinstance(source, audio.PyAudioSource) and isinstance(sink, audio.PyAudioSink)
        tone_out = audio.ToneSource(1000, -20.0, RATE)
        heard = []
        for _ in _ticks(1.0):
            heard.append(source.read(RATE // 50))
            sink.write(tone_out.read(RATE // 50))
        out["failed_before"] = source.failed or sink.failed
        out["heard_before"] = np.concatenate(heard[-25:]).tolist()
        # The card's clock stops dead, as a USB card's does when it is pulled. (Killing jackd
        # would do too, but leaks its shared memory and makes PortAudio's own JACK host API
        # assert in Pa_Terminate.)
        os.kill(jack_pid, signal.SIGSTOP)
        killed = time.monotonic()
        detected = None
        after = []
        ticks = 0
        for _ in _ticks(2.5):
            ticks += 1
            frame = source.read(RATE // 50)
            sink.write(tone_out.read(RATE // 50))
            if detected is None and source.failed and sink.failed:
                detected = time.monotonic() - killed
            if source.failed:
                after.append(frame)
        out.update(
            source_failed=source.failed,
            sink_failed=sink.failed,
            detected_after=detected if detected is not None else 99.0,
            silent_after=bool(after) and all(len(f) == 320 and not f.any() for f in after),
            ticks_after=ticks,
        )
        os.kill(jack_pid, signal.SIGCONT)  # closing the streams needs the server's answer
        sink.close()
        source.close()
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    out["log"] = "\n".join(records.lines)
    out["errors_logged"] = records.errors
    return out


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1:]), default=int), flush=True)
