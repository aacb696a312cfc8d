"""Where a call's audio comes from and goes to: the sound card, WAV files, a test tone, or nothing.

Audio is 16-bit linear mono as numpy int16 arrays. The media loop ticks every 20 ms on a
monotonic schedule and, on each tick, reads exactly one frame from its :class:`AudioSource` and
writes exactly one frame to its :class:`AudioSink`, both at the call's rate. A source therefore
never blocks and never returns short (it pads with silence), and a sink never refuses a frame:
the echo canceller that sits between them needs both streams on the one loop clock, frame for
frame, whatever the hardware does.

The sound card has a clock of its own. :class:`PyAudioSource` and :class:`PyAudioSink` bridge the
two with a short queue of frames between PortAudio's callback thread and the loop: the callback
only appends to or pops from that queue (a ``collections.deque`` with a ``maxlen``, which is
thread-safe) and counts into a counters object that nothing else writes. Everything else, the
resampling between the card's native rate and the call rate included, happens in the loop's
thread when it reads or writes. A card that dies during a call (unplugged, stream error, callback
no longer called) is logged once and flagged ``failed``; from then on the source gives silence
and the sink drops frames, so the call goes on.

:func:`open_source` and :func:`open_sink` turn the ``audio.input`` / ``audio.output`` settings into
one of these; see their docstrings for the accepted forms.
"""

from __future__ import annotations

import logging
import math
import struct
import time
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
import numpy.typing as npt

from intercom.media.devices import (
    AudioDeviceError,
    DeviceInfo,
    Direction,
    PortAudioSession,
    devices_of,
    find_device,
    import_pyaudio,
    quiet_stderr,
)

__all__ = [
    "TONE_LEVEL_DBFS",
    "AudioDeviceError",
    "AudioSink",
    "AudioSource",
    "GainStage",
    "NullSink",
    "Pcm",
    "PyAudioSink",
    "PyAudioSource",
    "RateConverter",
    "SilenceSource",
    "Spec",
    "ToneSource",
    "WavFileSink",
    "WavFileSource",
    "open_sink",
    "open_source",
    "parse_spec",
    "read_wav",
]

log = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]

#: Level of ``tone:FREQ``: loud enough to hear and to measure, far enough below full scale that
#: an input or output gain of a few dB does not clip it.
TONE_LEVEL_DBFS = -20.0


class AudioSource(Protocol):
    """Gives ``samples`` int16 samples at ``rate`` on every ``read``, padding with silence."""

    rate: int

    def read(self, samples: int) -> Pcm: ...

    def close(self) -> None: ...


class AudioSink(Protocol):
    """Takes one int16 frame at ``rate`` per ``write``; never blocks the loop."""

    rate: int

    def write(self, frame: Pcm) -> None: ...

    def close(self) -> None: ...


def silence(samples: int) -> Pcm:
    return np.zeros(samples, dtype=np.int16)


def _to_pcm(audio: npt.ArrayLike) -> Pcm:
    """int16, rounding and clipping anything else (a resampler may hand back floats)."""
    arr: npt.NDArray[Any] = np.asarray(audio)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(arr)
    elif arr.dtype == np.int16:
        return arr
    out: Pcm = np.clip(arr, -32768, 32767).astype(np.int16)
    return out


class RateConverter:
    """A streaming int16 converter from ``in_rate`` to ``out_rate`` Hz (one per stream direction).

    A thin guard around :class:`intercom.media.resample.Resampler`, imported here and not at the
    top so that files and tones at the call's own rate need no resampler at all. ``steady`` says
    whether it returns one chunk's worth for every chunk (libsoxr's variable-rate engine) or holds
    audio back and returns it in bursts (older soxr), for which the queues are made deeper.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        try:
            from intercom.media.resample import Resampler
        except ImportError as exc:
            raise AudioDeviceError(
                f"cannot convert audio from {in_rate} Hz to {out_rate} Hz: "
                f"intercom.media.resample is not available ({exc})"
            ) from exc
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler = Resampler(in_rate, out_rate)
        self.steady = bool(getattr(self._resampler, "low_latency", True))

    def process(self, chunk: Pcm) -> Pcm:
        return _to_pcm(self._resampler.process(chunk))

    def flush(self) -> Pcm:
        """What the filter still holds, at the end of the stream."""
        flush = getattr(self._resampler, "flush", None)
        if flush is not None:
            return _to_pcm(flush())
        # Without a flush, silence pushes the held-back samples out (the caller trims).
        return self.process(silence(self.in_rate // 10))


def make_resampler(in_rate: int, out_rate: int) -> RateConverter | None:
    """None when the rates are equal: the audio passes untouched."""
    return None if in_rate == out_rate else RateConverter(in_rate, out_rate)


def resample_all(samples: Pcm, in_rate: int, out_rate: int) -> Pcm:
    """A whole recording converted, its tail included, cut to the exact converted length."""
    converter = make_resampler(in_rate, out_rate)
    if converter is None or len(samples) == 0:
        return samples
    want = round(len(samples) * out_rate / in_rate)
    out = np.concatenate([converter.process(samples), converter.flush()])
    if len(out) < want:
        out = np.concatenate([out, silence(want - len(out))])
    return out[:want]


# -- simple sources and sinks ----------------------------------------------------------------------


class SilenceSource:
    """Nothing to say: a door station without a microphone still has to send RTP."""

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate

    def read(self, samples: int) -> Pcm:
        return silence(samples)

    def close(self) -> None:
        pass


class ToneSource:
    """A sine at ``level_dbfs`` peak (0 dBFS = full-scale sine), for tests and ``tone:FREQ``.

    The phase carries over from one read to the next, so frames join without a click and an FFT
    over many frames shows one clean line.
    """

    def __init__(self, freq_hz: float, level_dbfs: float = TONE_LEVEL_DBFS, rate: int = 8000):
        if not 0 < freq_hz < rate / 2:
            raise ValueError(f"a {freq_hz} Hz tone cannot be sampled at {rate} Hz")
        if level_dbfs > 0:
            raise ValueError(f"tone level {level_dbfs} dBFS is above full scale")
        self.rate = rate
        self.freq_hz = freq_hz
        self.level_dbfs = level_dbfs
        self.amplitude = 32767.0 * 10.0 ** (level_dbfs / 20.0)
        self._step = 2.0 * math.pi * freq_hz / rate
        self._phase = 0.0
        # A whole number of hertz repeats exactly every second: compute that second once and
        # read it as a ring (a tone costs a slice, not a sine per sample, every 20 ms).
        self._table: Pcm | None = None
        self._pos = 0
        if float(freq_hz).is_integer():
            table = np.rint(self.amplitude * np.sin(self._step * np.arange(rate)))
            self._table = np.concatenate([table, table]).astype(np.int16)

    def read(self, samples: int) -> Pcm:
        if self._table is not None and samples <= self.rate:
            out_t: Pcm = self._table[self._pos : self._pos + samples].copy()
            self._pos = (self._pos + samples) % self.rate
            return out_t
        phases = self._phase + self._step * np.arange(samples)
        self._phase = math.fmod(self._phase + self._step * samples, 2.0 * math.pi)
        out: Pcm = np.rint(self.amplitude * np.sin(phases)).astype(np.int16)
        return out

    def close(self) -> None:
        pass


class NullSink:
    """Nowhere to play: a door station without a speaker, or a test that only sends."""

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        self.frames = 0

    def write(self, frame: Pcm) -> None:
        self.frames += 1

    def close(self) -> None:
        pass


class GainStage:
    """``audio.input_gain_db`` / ``output_gain_db``: a fixed gain that clips instead of wrapping.

    int16 arithmetic would wrap a loud sample round to the opposite sign (a crack far worse than
    clipping), so the gain is applied in float and clipped; ``clipped`` counts the samples that
    hit the rails, the sign that the gain is set too high.
    """

    def __init__(self, db: float = 0.0) -> None:
        self.db = float(db)
        self.factor = 10.0 ** (self.db / 20.0)
        self.clipped = 0

    def apply(self, frame: Pcm) -> Pcm:
        if self.db == 0.0:
            return frame
        scaled: npt.NDArray[np.float32] = np.rint(frame.astype(np.float32) * self.factor)
        over = np.count_nonzero((scaled > 32767) | (scaled < -32768))
        if over:
            self.clipped += int(over)
            scaled = np.clip(scaled, -32768, 32767)
        out: Pcm = scaled.astype(np.int16)
        return out

    __call__ = apply


# -- WAV files -------------------------------------------------------------------------------------

_WAVE_PCM = 0x0001
_WAVE_FLOAT = 0x0003
_WAVE_EXTENSIBLE = 0xFFFE


def read_wav(path: str | Path) -> tuple[Pcm, int]:
    """A WAV file as mono int16 and its sample rate.

    Reads integer PCM of 8, 16, 24 and 32 bits and 32/64-bit float, plain or
    WAVE_FORMAT_EXTENSIBLE (what Audacity and sox write for 24-bit and float), any number of
    channels, mixed down by averaging so that a stereo file cannot clip. Python's ``wave`` module
    reads only plain 8/16/24/32-bit PCM on 3.11, hence the few lines of RIFF here.
    """
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    fmt: bytes | None = None
    body: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
        if chunk_id == b"data":
            # A WAV streamed to a pipe (arecord, sox -) has size 0 or 0xFFFFFFFF: take the rest.
            end = len(data) if size in (0, 0xFFFFFFFF) else min(start + size, len(data))
            body = data[start:end]
            if fmt is not None:
                break
        elif chunk_id == b"fmt ":
            fmt = data[start : start + size]
        pos = start + size + (size & 1)
    if fmt is None or len(fmt) < 16 or body is None:
        raise ValueError(f"{path}: WAV file without fmt or data chunk")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _WAVE_EXTENSIBLE and len(fmt) >= 40:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the first two bytes of the SubFormat GUID
    if channels < 1 or rate < 1 or block_align < channels or block_align % channels:
        raise ValueError(f"{path}: inconsistent WAV header ({channels} ch, {rate} Hz)")
    width = block_align // channels
    frames = len(body) // block_align
    raw = body[: frames * block_align]
    unsupported = ValueError(
        f"{path}: unsupported WAV encoding (format {tag:#06x}, {bits} bits); "
        "convert it with: sox IN.wav -b 16 OUT.wav"
    )
    scaled: npt.NDArray[np.float64]
    if tag == _WAVE_PCM:
        if width == 1:
            scaled = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) * 256.0
        elif width == 2:
            scaled = np.frombuffer(raw, "<i2").astype(np.float64)
        elif width == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            value = np.where(value >= 1 << 23, value - (1 << 24), value)
            scaled = value.astype(np.float64) / 256.0
        elif width == 4:
            scaled = np.frombuffer(raw, "<i4").astype(np.float64) / 65536.0
        else:
            raise unsupported
    elif tag == _WAVE_FLOAT and width in (4, 8):
        scaled = np.frombuffer(raw, "<f4" if width == 4 else "<f8").astype(np.float64) * 32768.0
    else:
        raise unsupported
    mono = scaled.reshape(-1, channels).mean(axis=1)
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16), rate


class WavFileSource:
    """A WAV file played as if spoken into the microphone: announcements, tests, the demo.

    The file is read, mixed to mono and converted to ``rate`` once, up front (door-station clips
    are seconds long), so a read is a slice. With ``loop`` it starts over at the end; without,
    it gives silence after the end and sets ``finished``.
    """

    def __init__(self, path: str | Path, rate: int, loop: bool = True) -> None:
        self.path = Path(path)
        self.rate = rate
        self.loop = loop
        samples, file_rate = read_wav(self.path)
        self.file_rate = file_rate
        self._samples = resample_all(samples, file_rate, rate)
        self._pos = 0
        self.finished = False

    @property
    def duration(self) -> float:
        """Length of one pass, in seconds."""
        return len(self._samples) / self.rate

    def read(self, samples: int) -> Pcm:
        out = silence(samples)
        total = len(self._samples)
        filled = 0
        while filled < samples and total:
            if self._pos >= total:
                if not self.loop:
                    break
                self._pos = 0
            n = min(samples - filled, total - self._pos)
            out[filled : filled + n] = self._samples[self._pos : self._pos + n]
            filled += n
            self._pos += n
        if not self.loop and self._pos >= total:
            self.finished = True
        return out

    def close(self) -> None:
        pass


class WavFileSink:
    """Records what would be played into a 16-bit mono WAV, frame by frame as it comes.

    The file is unbuffered so that each frame is on disk when ``write`` returns (one small write
    per 20 ms): a recording of a call that crashed keeps its audio. The header's lengths are
    written on ``close``; before that they say 0, and sox and most players still read the data.
    """

    def __init__(self, path: str | Path, rate: int) -> None:
        self.path = Path(path)
        self.rate = rate
        self.frames = 0
        self._file: BinaryIO | None = open(self.path, "wb", buffering=0)  # noqa: SIM115
        try:
            self._wav: wave.Wave_write = wave.open(self._file, "wb")  # noqa: SIM115
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(rate)
        except BaseException:
            self._file.close()
            raise

    def write(self, frame: Pcm) -> None:
        if self._file is None:
            return
        self._wav.writeframesraw(np.ascontiguousarray(frame, dtype="<i2").tobytes())
        self.frames += 1

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                self._wav.close()  # patches the lengths into the header
            finally:
                file.close()


# -- the sound card through PortAudio --------------------------------------------------------------


class _CallbackCounters:
    """Written only by the PortAudio callback thread, read by the loop for ``stats``."""

    __slots__ = ("calls", "status_flags", "underruns")

    def __init__(self) -> None:
        self.calls = 0
        self.underruns = 0
        self.status_flags = 0


def _capture_callback(
    ring: deque[tuple[int, bytes]], counters: _CallbackCounters, keep_going: int
) -> Callable[..., tuple[None, int]]:
    """PortAudio's capture callback: number the chunk and queue it; nothing else.

    The number lets the loop see how many chunks the full ring pushed out at the front.
    """

    def callback(in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> Any:
        ring.append((counters.calls, in_data or b""))
        counters.calls += 1
        if status:
            counters.status_flags += 1
        return None, keep_going

    return callback


def _playback_callback(
    ring: deque[bytes], counters: _CallbackCounters, keep_going: int
) -> Callable[..., tuple[bytes, int]]:
    """PortAudio's playback callback: the next queued chunk, or silence when there is none.

    It copes with a request of any size (PortAudio asks for exactly the buffer size we set, but
    nothing breaks if a host API does not), keeping the rest of a chunk for the next call.
    """
    carry = b""

    def callback(in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> Any:
        nonlocal carry
        need = 2 * frame_count
        out = carry
        while len(out) < need:
            try:
                out += ring.popleft()
            except IndexError:
                counters.underruns += 1
                out += bytes(need - len(out))
                break
        carry = out[need:]
        counters.calls += 1
        if status:
            counters.status_flags += 1
        return out[:need], keep_going

    return callback


class _PortAudioStream:
    """What capture and playback share: choosing the device and rate, and noticing its death."""

    direction: Direction

    def __init__(
        self,
        device: str | int,
        rate: int,
        frame_ms: int = 20,
        *,
        buffer_frames: int = 5,
        stall_timeout: float = 1.0,
    ) -> None:
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_samples = rate * frame_ms // 1000
        self.stall_timeout = stall_timeout
        self.failed = False
        self.counters = _CallbackCounters()
        self._frames = 0
        self._underruns = 0  # counted by the loop (capture); playback's by the callback
        self._overruns = 0
        self._stream: Any = None
        self._running = False
        self._closed = False
        self._seen_calls = 0
        self._last_progress = 0.0
        self._buffer_frames = max(2, buffer_frames)
        self._pyaudio = import_pyaudio()
        self._pa = PortAudioSession.acquire()
        try:
            self.device: DeviceInfo = find_device(devices_of(self._pa), device, self.direction)
            self.device_rate = self._choose_rate()
            self.device_frame = self.device_rate * frame_ms // 1000
        except BaseException:
            PortAudioSession.release()
            raise

    def _supports(self, rate: int) -> bool:
        d = self.direction
        args = {f"{d}_device": self.device.index, f"{d}_channels": 1}
        args[f"{d}_format"] = self._pyaudio.paInt16
        try:
            with quiet_stderr():  # PortAudio prints "Expression ... failed" for each refusal
                return bool(self._pa.is_format_supported(rate, **args))
        except ValueError:
            return False

    def _choose_rate(self) -> int:
        """The call rate when the card takes it, else its native rate (resampled in the loop)."""
        candidates = [self.rate, self.device.default_sample_rate, 48000, 44100, 16000]
        for rate in dict.fromkeys(candidates):
            if rate > 0 and self._supports(rate):
                if rate != self.rate:
                    log.info(
                        "audio %s %r: %d Hz not supported, opening at %d Hz and resampling",
                        self.direction,
                        self.device.name,
                        self.rate,
                        rate,
                    )
                return rate
        raise AudioDeviceError(
            f"audio {self.direction} {self.device.name!r} takes none of the rates "
            f"{sorted(set(candidates))} for 16-bit mono"
        )

    def _open(self, callback: Callable[..., Any], start: bool) -> Any:
        d = self.direction
        try:
            return self._pa.open(
                format=self._pyaudio.paInt16,
                channels=1,
                rate=self.device_rate,
                frames_per_buffer=self.device_frame,
                stream_callback=callback,
                start=start,
                **{d: True, f"{d}_device_index": self.device.index},
            )
        except (OSError, ValueError) as exc:
            raise AudioDeviceError(
                f"cannot open audio {d} {self.device.name!r} (index {self.device.index}) at "
                f"{self.device_rate} Hz: {exc}. Another program may hold the card: see "
                "hardware/AUDIO.md for sharing it through dsnoop/dmix"
            ) from exc

    def _started(self) -> None:
        self._running = True
        self._last_progress = time.monotonic()

    def _check_alive(self) -> None:
        """Flag the device failed when its stream stopped or its callback stopped coming.

        PortAudio does not always stop a stream whose device vanished: its callback may simply
        never be called again while ``is_active`` still says yes. Both signs count.
        """
        if self.failed or not self._running:
            return
        now = time.monotonic()
        calls = self.counters.calls
        if calls != self._seen_calls:
            self._seen_calls = calls
            self._last_progress = now
        elif now - self._last_progress > self.stall_timeout:
            self._fail(f"no callback for {now - self._last_progress:.1f} s")
            return
        try:
            active = bool(self._stream.is_active())
        except (OSError, ValueError) as exc:
            self._fail(f"stream error: {exc}")
            return
        if not active:
            self._fail("stream stopped")

    def _fail(self, reason: str) -> None:
        if self.failed:
            return
        self.failed = True
        log.error(
            "audio %s %r failed (%s); the call goes on without it",
            self.direction,
            self.device.name,
            reason,
        )

    def stats(self) -> dict[str, int]:
        """Counters for logs and diagnostics; ``device_status`` counts callbacks PortAudio
        flagged with an over- or underflow of the card's own buffer."""
        return {
            "frames": self._frames,
            "underruns": self._underruns + self.counters.underruns,
            "overruns": self._overruns,
            "device_status": self.counters.status_flags,
            "callbacks": self.counters.calls,
            "device_rate": self.device_rate,
            "failed": int(self.failed),
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        try:
            if stream is not None:
                stream.close()  # aborts: the last buffered milliseconds are not worth waiting for
        except (OSError, ValueError) as exc:
            log.debug("closing audio %s: %s", self.direction, exc)
        finally:
            PortAudioSession.release()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.device.name!r} {self.rate} Hz"
            f" (device {self.device_rate} Hz){' failed' if self.failed else ''}>"
        )


def _burst_frames(converter: RateConverter | None) -> int:
    """Extra frames of queue for a resampler that returns audio in bursts (old soxr: ~175 ms)."""
    return 0 if converter is None or converter.steady else 10


class PyAudioSource(_PortAudioStream):
    """The microphone: PortAudio capture, handed to the loop one frame per read.

    Between the card's clock and the loop's, a cushion of one frame absorbs the jitter of both;
    it is built up at the start and again after each underrun (silence is given meanwhile). Audio
    beyond the cushion plus two frames is old news, dropped from the front and counted as an
    overrun, so a stall of the loop or a drift of the clocks never turns into lasting delay.
    """

    direction: Direction = "input"

    def __init__(
        self,
        device: str | int,
        rate: int,
        frame_ms: int = 20,
        *,
        buffer_frames: int = 5,
        stall_timeout: float = 1.0,
    ) -> None:
        super().__init__(
            device, rate, frame_ms, buffer_frames=buffer_frames, stall_timeout=stall_timeout
        )
        try:
            self._resample = make_resampler(self.device_rate, rate)
            self._ring: deque[tuple[int, bytes]] = deque(maxlen=self._buffer_frames)
            self._pending = silence(0)
            self._next_seq = 0
            self._priming = True
            self._cushion = self.frame_samples * (1 + _burst_frames(self._resample))
            self._slack = 2 * self.frame_samples
            callback = _capture_callback(self._ring, self.counters, self._pyaudio.paContinue)
            self._stream = self._open(callback, start=True)
            self._started()
        except BaseException:
            self.close()
            raise

    def _drain(self) -> bool:
        """Move what the callback queued into ``_pending``; True when the full ring lost some."""
        chunks: list[Pcm] = []
        lost = False
        while True:
            try:
                seq, data = self._ring.popleft()
            except IndexError:
                break
            lost = lost or seq != self._next_seq
            self._next_seq = seq + 1
            chunk: Pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
            if self._resample is not None:
                chunk = self._resample.process(chunk)
            chunks.append(chunk)
        if chunks:
            self._pending = np.concatenate([self._pending, *chunks])
        return lost

    def read(self, samples: int) -> Pcm:
        first = self._frames == 0
        self._frames += 1
        if self.failed or self._stream is None:
            return silence(samples)
        dropped = self._drain()
        self._check_alive()
        if self.failed:
            self._pending = silence(0)
            return silence(samples)
        keep = samples + self._cushion
        # Audio captured before the first read is not late, only old: no overrun then.
        if len(self._pending) > keep + (0 if first else self._slack):
            self._pending = self._pending[-keep:]
            dropped = True
        if dropped and not first:
            self._overruns += 1
        if self._priming:
            if len(self._pending) < keep:
                return silence(samples)
            self._priming = False
        if len(self._pending) < samples:
            self._underruns += 1
            out = silence(samples)
            out[: len(self._pending)] = self._pending
            self._pending = silence(0)
            self._priming = True
            return out
        out = self._pending[:samples]
        self._pending = self._pending[samples:]
        return out


class PyAudioSink(_PortAudioStream):
    """The loudspeaker: frames from the loop queued for PortAudio's playback callback.

    The stream starts once two frames are queued, so that playback begins with a cushion rather
    than with an underrun. When the queue is full (the loop's clock runs ahead of the card's)
    the oldest frame is dropped and counted as an overrun; when it is empty the callback plays
    silence and counts an underrun.
    """

    direction: Direction = "output"

    def __init__(
        self,
        device: str | int,
        rate: int,
        frame_ms: int = 20,
        *,
        buffer_frames: int = 5,
        stall_timeout: float = 1.0,
    ) -> None:
        super().__init__(
            device, rate, frame_ms, buffer_frames=buffer_frames, stall_timeout=stall_timeout
        )
        try:
            self._resample = make_resampler(rate, self.device_rate)
            burst = _burst_frames(self._resample)
            self._ring: deque[bytes] = deque(maxlen=self._buffer_frames + burst)
            self._pending = silence(0)
            self._prebuffer = 2 + burst
            callback = _playback_callback(self._ring, self.counters, self._pyaudio.paContinue)
            self._stream = self._open(callback, start=False)
        except BaseException:
            self.close()
            raise

    def write(self, frame: Pcm) -> None:
        self._frames += 1
        if self.failed or self._stream is None:
            return
        self._check_alive()
        if self.failed:
            return
        chunk = np.asarray(frame, dtype=np.int16)
        if self._resample is not None:
            chunk = self._resample.process(chunk)
        pending = np.concatenate([self._pending, chunk]) if len(self._pending) else chunk
        n = self.device_frame
        whole = len(pending) // n * n
        for start in range(0, whole, n):
            if len(self._ring) == self._ring.maxlen:
                self._overruns += 1  # the deque drops the oldest frame on append
            self._ring.append(pending[start : start + n].astype("<i2").tobytes())
        self._pending = pending[whole:]
        if not self._running and len(self._ring) >= self._prebuffer:
            try:
                self._stream.start_stream()
            except (OSError, ValueError) as exc:
                self._fail(f"cannot start: {exc}")
                return
            self._started()


# -- the audio.input / audio.output settings -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed ``audio.input`` / ``audio.output`` value."""

    kind: Literal["device", "file", "tone", "null"]
    device: str | int = "default"
    path: str = ""
    freq_hz: float = 0.0
    level_dbfs: float = TONE_LEVEL_DBFS


def parse_spec(spec: str | int) -> Spec:
    """Raises :class:`AudioDeviceError` for a value that cannot name anything."""
    if isinstance(spec, bool):
        raise AudioDeviceError(f"audio device {spec!r}: expected a name, an index or a prefix")
    if isinstance(spec, int):
        return Spec("device", device=spec)
    text = spec.strip()
    low = text.lower()
    if not text:
        raise AudioDeviceError("empty audio device: use 'default', a name, an index or 'null'")
    if low in ("null", "silence"):
        return Spec("null")
    if low.startswith("file:"):
        path = text[5:].strip()
        if not path:
            raise AudioDeviceError(f"audio device {spec!r}: file: needs a path")
        return Spec("file", path=str(Path(path).expanduser()))
    if low.startswith("tone:"):
        parts = text[5:].split(":")
        try:
            freq = float(parts[0])
            level = float(parts[1]) if len(parts) > 1 else TONE_LEVEL_DBFS
        except (ValueError, IndexError):
            raise AudioDeviceError(
                f"audio device {spec!r}: expected tone:FREQ_HZ or tone:FREQ_HZ:LEVEL_DBFS"
            ) from None
        if len(parts) > 2 or freq <= 0 or level > 0:
            raise AudioDeviceError(
                f"audio device {spec!r}: expected tone:FREQ_HZ or tone:FREQ_HZ:LEVEL_DBFS"
            )
        return Spec("tone", freq_hz=freq, level_dbfs=level)
    return Spec("device", device=int(text) if text.isdigit() else text)


def open_source(spec: str | int, rate: int, *, frame_ms: int = 20) -> AudioSource:
    """The source ``audio.input`` names, giving ``rate`` Hz.

    - ``"default"``, an index (``2`` or ``"2"``) or part of a device name, ignoring case
      (``"USB"``, ``"intercom"``): the sound card, through PortAudio (``intercom devices`` lists
      them);
    - ``"file:/path/clip.wav"``: a WAV file, looped;
    - ``"tone:1000"``: a 1000 Hz sine at -20 dBFS (``"tone:1000:-6"`` sets the level);
    - ``"null"`` or ``"silence"``: silence.

    Opening a sound card scans the devices first, which takes a fraction of a second; a caller on
    the event loop may want ``asyncio.to_thread``. Raises :class:`AudioDeviceError` (listing the
    inputs there are) when the device is missing or cannot be opened.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "null":
        return SilenceSource(rate)
    if parsed.kind == "tone":
        try:
            return ToneSource(parsed.freq_hz, parsed.level_dbfs, rate)
        except ValueError as exc:
            raise AudioDeviceError(f"audio input {spec!r}: {exc}") from exc
    if parsed.kind == "file":
        try:
            return WavFileSource(parsed.path, rate, loop=True)
        except (OSError, ValueError) as exc:
            raise AudioDeviceError(f"audio input {spec!r}: {exc}") from exc
    return PyAudioSource(parsed.device, rate, frame_ms)


def open_sink(spec: str | int, rate: int, *, frame_ms: int = 20) -> AudioSink:
    """The sink ``audio.output`` names, taking ``rate`` Hz: as :func:`open_source`, except that
    ``"file:/path.wav"`` records into a new 16-bit mono WAV and a tone is no place to play to.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "null":
        return NullSink(rate)
    if parsed.kind == "tone":
        raise AudioDeviceError(f"audio output {spec!r}: a tone is a source, not an output")
    if parsed.kind == "file":
        try:
            return WavFileSink(parsed.path, rate)
        except OSError as exc:
            raise AudioDeviceError(f"audio output {spec!r}: {exc}") from exc
    return PyAudioSink(parsed.device, rate, frame_ms)
