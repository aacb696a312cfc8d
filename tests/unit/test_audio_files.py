"""Audio sources and sinks without a sound card: WAV files, tones, gain, the audio.input/output
settings, and the PortAudio adapters' queues driven through a fake ``pyaudio`` module."""

from __future__ import annotations

import logging
import struct
import sys
import time
import types
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from intercom.media import audio
from intercom.media.audio import (
    AudioDeviceError,
    GainStage,
    NullSink,
    PyAudioSink,
    PyAudioSource,
    SilenceSource,
    ToneSource,
    WavFileSink,
    WavFileSource,
    open_sink,
    open_source,
    parse_spec,
    read_wav,
)
from intercom.media.devices import (
    DeviceInfo,
    PortAudioSession,
    find_device,
    format_devices,
    import_pyaudio,
)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency of the strongest FFT bin (Hann window, so a partial period does not smear)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(samples))


def peak_dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.max(np.abs(samples.astype(np.float64))) / 32767))


def write_wav(
    path: Path, frames: np.ndarray, rate: int, *, width: int, fmt: int = 1, ext: bool = False
) -> None:
    """A WAV of (n, channels) ``frames`` already in the target encoding, written by hand so that
    8/24/32-bit, float and WAVE_FORMAT_EXTENSIBLE files can be made without sox."""
    channels = frames.shape[1]
    if width == 3:
        ints = frames.astype("<i4").reshape(-1)
        body = b"".join(struct.pack("<i", int(v))[:3] for v in ints)
    else:
        body = np.ascontiguousarray(frames).tobytes()
    align = channels * width
    if ext:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt_chunk = (
            struct.pack(
                "<HHIIHHHHI",
                0xFFFE,
                channels,
                rate,
                rate * align,
                align,
                width * 8,
                22,
                width * 8,
                0,
            )
            + struct.pack("<H", fmt)
            + guid_tail
        )
    else:
        fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * align, align, width * 8)
    chunks = b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk, padded
    chunks += b"data" + struct.pack("<I", len(body)) + body
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)


# -- tone, silence, gain ---------------------------------------------------------------------------


@pytest.mark.parametrize(("freq", "rate"), [(1000, 8000), (440, 16000), (3000, 16000)])
def test_tone_frequency_and_level(freq: int, rate: int) -> None:
    tone = ToneSource(freq, -20.0, rate)
    samples = np.concatenate([tone.read(rate // 50) for _ in range(50)])

    assert samples.dtype == np.int16 and len(samples) == rate
    assert dominant_hz(samples, rate) == pytest.approx(freq, abs=2)
    assert peak_dbfs(samples) == pytest.approx(-20.0, abs=0.1)
    rms = np.sqrt(np.mean(samples.astype(np.float64) ** 2)) / 32767
    assert 20 * np.log10(rms) == pytest.approx(-23.0, abs=0.1)  # a sine's RMS is 3 dB below peak


def test_tone_phase_continues_across_reads_of_any_size() -> None:
    whole = ToneSource(1000, -6.0, 16000).read(1000)
    tone = ToneSource(1000, -6.0, 16000)
    pieces = np.concatenate([tone.read(n) for n in (1, 159, 320, 7, 513)])

    np.testing.assert_array_equal(pieces, whole)


def test_tone_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="cannot be sampled"):
        ToneSource(5000, -20.0, 8000)
    with pytest.raises(ValueError, match="above full scale"):
        ToneSource(1000, 3.0, 8000)


def test_silence_and_null() -> None:
    source = SilenceSource(16000)
    frame = source.read(320)
    sink = NullSink(16000)
    sink.write(frame)
    sink.write(frame)

    assert frame.dtype == np.int16 and len(frame) == 320 and not frame.any()
    assert sink.frames == 2


def test_gain_scales_and_clips_without_wrapping() -> None:
    frame = np.array([0, 1000, -1000, 20000, -20000, 32767, -32768], dtype=np.int16)
    up = GainStage(6.0)

    out = up.apply(frame)

    assert out.dtype == np.int16
    assert out[1] == round(1000 * 10 ** (6 / 20)) and out[2] == -out[1]
    assert list(out[3:]) == [32767, -32768, 32767, -32768]  # clipped at the rails, never wrapped
    assert up.clipped == 4
    assert GainStage(-6.0)(frame)[3] == round(20000 * 10 ** (-6 / 20))


def test_zero_gain_passes_the_frame_through() -> None:
    frame = np.arange(10, dtype=np.int16)
    assert GainStage(0.0).apply(frame) is frame


# -- WAV files -------------------------------------------------------------------------------------


def test_wav_sink_and_source_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    tone = ToneSource(700, -10.0, 16000)
    frames = [tone.read(320) for _ in range(25)]
    sink = WavFileSink(path, 16000)
    for frame in frames:
        sink.write(frame)
    sink.close()
    sink.close()  # twice is harmless

    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.getnframes() == 25 * 320
    source = WavFileSource(path, 16000, loop=False)
    np.testing.assert_array_equal(source.read(25 * 320), np.concatenate(frames))
    assert source.finished


def test_wav_sink_writes_as_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    sink = WavFileSink(path, 8000)
    sink.write(np.full(160, 1234, dtype=np.int16))
    sink.write(np.full(160, -1234, dtype=np.int16))
    size_before_close = path.stat().st_size
    sink.close()

    assert size_before_close >= 44 + 2 * 320  # the audio is on disk before the header is final
    samples, rate = read_wav(path)
    assert rate == 8000 and len(samples) == 320


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left = np.full(100, 1000, dtype="<i2")
    right = np.full(100, 3000, dtype="<i2")
    right[50:] = -32768
    left[50:] = -32768
    write_wav(path, np.stack([left, right], axis=1), 8000, width=2)

    samples, rate = read_wav(path)

    assert rate == 8000 and samples.dtype == np.int16 and len(samples) == 100
    assert (samples[:50] == 2000).all()
    assert (samples[50:] == -32768).all()  # averaged, so two full-scale channels cannot clip


@pytest.mark.parametrize(
    ("width", "fmt", "ext", "encode"),
    [
        (1, 1, False, lambda v: (v // 256 + 128).astype(np.uint8)),
        (2, 1, True, lambda v: v.astype("<i2")),
        (3, 1, False, lambda v: v.astype(np.int32) * 256),
        (3, 1, True, lambda v: v.astype(np.int32) * 256 + 255),
        (4, 1, False, lambda v: v.astype("<i4") * 65536),
        (4, 3, False, lambda v: (v / 32768.0).astype("<f4")),
        (8, 3, True, lambda v: (v / 32768.0).astype("<f8")),
    ],
    ids=["u8", "s16-ext", "s24", "s24-ext", "s32", "f32", "f64-ext"],
)
def test_reads_other_encodings(
    tmp_path: Path, width: int, fmt: int, ext: bool, encode: Any
) -> None:
    path = tmp_path / "enc.wav"
    values = np.array([0, 256, -256, 12800, -12800, 32512, -32768, 0, 512, -512], dtype=np.int64)
    write_wav(path, encode(values).reshape(-1, 1), 22050, width=width, fmt=fmt, ext=ext)

    samples, rate = read_wav(path)

    assert rate == 22050
    np.testing.assert_allclose(samples, values, atol=1)


def test_unsupported_or_broken_wav_says_so(tmp_path: Path) -> None:
    adpcm = tmp_path / "adpcm.wav"
    write_wav(adpcm, np.zeros((10, 1), dtype="<i2"), 8000, width=2, fmt=2)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"ID3 this is an mp3")

    with pytest.raises(ValueError, match=r"unsupported WAV encoding.*sox"):
        read_wav(adpcm)
    with pytest.raises(ValueError, match="not a RIFF/WAVE file"):
        read_wav(junk)


def test_streamed_wav_with_unknown_length_is_read_to_the_end(tmp_path: Path) -> None:
    path = tmp_path / "piped.wav"
    values = np.arange(-50, 50, dtype="<i2")
    write_wav(path, values.reshape(-1, 1), 8000, width=2)
    data = bytearray(path.read_bytes())
    pos = data.index(b"data")
    data[pos + 4 : pos + 8] = b"\xff\xff\xff\xff"  # what arecord writes to a pipe
    path.write_bytes(bytes(data))

    samples, _ = read_wav(path)

    np.testing.assert_array_equal(samples, values)


def test_looping_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    values = np.arange(500, dtype="<i2")
    write_wav(path, values.reshape(-1, 1), 8000, width=2)
    source = WavFileSource(path, 8000)

    out = np.concatenate([source.read(320) for _ in range(4)])

    np.testing.assert_array_equal(out, np.tile(values, 3)[: 4 * 320])
    assert not source.finished
    assert source.duration == pytest.approx(500 / 8000)


def test_without_loop_silence_follows_and_finished_is_set(tmp_path: Path) -> None:
    path = tmp_path / "once.wav"
    values = np.arange(1, 501, dtype="<i2")
    write_wav(path, values.reshape(-1, 1), 8000, width=2)
    source = WavFileSource(path, 8000, loop=False)

    first = source.read(320)
    assert not source.finished
    second = source.read(320)
    assert source.finished
    third = source.read(320)

    np.testing.assert_array_equal(first, values[:320])
    np.testing.assert_array_equal(second[:180], values[320:])
    assert not second[180:].any() and not third.any() and len(third) == 320


def test_empty_wav_is_silence(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    write_wav(path, np.zeros((0, 1), dtype="<i2"), 8000, width=2)

    looped = WavFileSource(path, 8000)
    once = WavFileSource(path, 8000, loop=False)

    assert not looped.read(160).any()
    assert not once.read(160).any() and once.finished


def test_file_at_another_rate_is_resampled(tmp_path: Path) -> None:
    pytest.importorskip("soxr")
    path = tmp_path / "cd.wav"
    tone = ToneSource(1000, -6.0, 44100).read(44100)
    write_wav(path, np.stack([tone, tone], axis=1).astype("<i2"), 44100, width=2)

    source = WavFileSource(path, 16000, loop=False)
    out = np.concatenate([source.read(320) for _ in range(50)])

    assert source.file_rate == 44100 and source.duration == pytest.approx(1.0)
    assert source.finished
    assert dominant_hz(out, 16000) == pytest.approx(1000, abs=2)
    assert peak_dbfs(out[800:-800]) == pytest.approx(-6.0, abs=0.3)


# -- the audio.input / audio.output settings -------------------------------------------------------


def test_spec_parsing() -> None:
    assert parse_spec("null").kind == "null"
    assert parse_spec(" Silence ").kind == "null"
    assert parse_spec("file:/var/lib/intercom/chime.wav").path == "/var/lib/intercom/chime.wav"
    tone = parse_spec("tone:1000")
    assert (tone.kind, tone.freq_hz, tone.level_dbfs) == ("tone", 1000.0, -20.0)
    assert parse_spec("tone:425:-6").level_dbfs == -6.0
    assert parse_spec("default") == audio.Spec("device", device="default")
    assert parse_spec("3").device == 3
    assert parse_spec(2).device == 2
    assert parse_spec("USB Audio").device == "USB Audio"
    for bad in ["", "tone:", "tone:abc", "tone:1000:+3", "tone:1:2:3", "file:"]:
        with pytest.raises(AudioDeviceError):
            parse_spec(bad)


def test_open_by_spec_without_a_sound_card(tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    write_wav(wav, np.arange(100, dtype="<i2").reshape(-1, 1), 16000, width=2)

    tone = open_source("tone:1000", 16000)
    assert isinstance(tone, ToneSource) and tone.rate == 16000 and tone.level_dbfs == -20.0
    assert isinstance(open_source("null", 8000), SilenceSource)
    assert isinstance(open_sink("silence", 8000), NullSink)
    clip = open_source(f"file:{wav}", 16000)
    assert isinstance(clip, WavFileSource) and clip.loop
    recording = open_sink(f"file:{tmp_path / 'rec.wav'}", 8000)
    assert isinstance(recording, WavFileSink)
    recording.close()

    with pytest.raises(AudioDeviceError, match="tone is a source"):
        open_sink("tone:1000", 8000)
    with pytest.raises(AudioDeviceError, match=r"missing\.wav"):
        open_source(f"file:{tmp_path / 'missing.wav'}", 8000)
    with pytest.raises(AudioDeviceError, match="cannot be sampled"):
        open_source("tone:6000", 8000)


# -- choosing a device -----------------------------------------------------------------------------

DEVICES = [
    DeviceInfo(0, "bcm2835 Headphones: - (hw:0,0)", 0, 8, 44100, host_api="ALSA"),
    DeviceInfo(1, "USB Audio Device: - (hw:1,0)", 1, 2, 48000, host_api="ALSA"),
    DeviceInfo(2, "intercom", 128, 128, 44100, host_api="ALSA"),
    DeviceInfo(3, "intercom_raw", 1, 2, 48000, host_api="ALSA"),
    DeviceInfo(4, "default", 128, 128, 44100, True, True, host_api="ALSA"),
]


def fake_list_devices() -> list[DeviceInfo]:
    return list(DEVICES)


def test_find_device_by_index_name_and_default() -> None:
    devices = fake_list_devices()

    assert find_device(devices, 3, "input").name == "intercom_raw"
    assert find_device(devices, "1", "output").index == 1
    assert find_device(devices, "usb audio", "input").index == 1
    assert find_device(devices, "INTERCOM", "input").index == 2  # exact name beats a prefix
    assert find_device(devices, "Headphones", "output").index == 0
    assert find_device(devices, "default", "input").index == 4
    no_flags = [DeviceInfo(7, "default", 2, 2, 48000), DeviceInfo(8, "x", 2, 2, 48000)]
    assert find_device(no_flags, "default", "output").index == 7


def test_missing_device_lists_what_there_is() -> None:
    with pytest.raises(AudioDeviceError) as caught:
        find_device(fake_list_devices(), "Jabra", "input")
    message = str(caught.value)

    assert "'Jabra'" in message and "audio.input" in message
    assert "1: USB Audio Device: - (hw:1,0)  (1 ch, 48000 Hz)" in message
    assert "4: default  (128 ch, 44100 Hz)  (default)" in message
    assert "Headphones" not in message  # it cannot capture, so it is no alternative


def test_output_only_device_is_not_an_input() -> None:
    with pytest.raises(AudioDeviceError, match="available inputs"):
        find_device(fake_list_devices(), "Headphones", "input")
    with pytest.raises(AudioDeviceError, match=r"available outputs:\n  \(none\)"):
        find_device([], "default", "output")


def test_format_devices_lists_inputs_and_outputs_apart() -> None:
    text = format_devices(fake_list_devices())
    inputs, outputs = text.split("Outputs")

    assert inputs.startswith("Inputs (audio.input):")
    assert "Headphones" not in inputs and "Headphones" in outputs
    assert "USB Audio Device: - (hw:1,0)  (1 ch, 48000 Hz)" in inputs
    assert "USB Audio Device: - (hw:1,0)  (2 ch, 48000 Hz)" in outputs
    assert "default  (128 ch, 44100 Hz)  (default)" in outputs


def test_without_pyaudio_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)

    with pytest.raises(AudioDeviceError, match=r"pi-intercom\[audio\].*portaudio19-dev"):
        import_pyaudio()
    with pytest.raises(AudioDeviceError, match="audio extra"):
        open_source("default", 8000)
    assert isinstance(open_source("tone:440", 8000), ToneSource)  # the rest works without it


# -- the PortAudio adapters, with a fake pyaudio ---------------------------------------------------


class FakeStream:
    def __init__(self, callback: Any, start: bool, kwargs: dict[str, Any]) -> None:
        self.callback = callback
        self.active = start
        self.closed = False
        self.kwargs = kwargs

    def is_active(self) -> bool:
        return self.active

    def start_stream(self) -> None:
        self.active = True

    def close(self) -> None:
        self.closed = True
        self.active = False

    def play(self, frames: int) -> bytes:
        data, flag = self.callback(None, frames, {}, 0)
        assert flag == 0 and isinstance(data, bytes)
        return data

    def capture(self, samples: np.ndarray, status: int = 0) -> None:
        self.callback(samples.astype("<i2").tobytes(), len(samples), {}, status)


class FakePyAudio:
    instances: list[FakePyAudio] = []

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.terminated = False
        # index 0 takes any rate (an ALSA plug device), index 1 only 48000 Hz (a raw hw device)
        self.devices = [
            {"name": "default", "hostApi": 0, "maxInputChannels": 128, "maxOutputChannels": 128,
             "defaultSampleRate": 44100.0, "rates": None},
            {"name": "USB Audio Device: - (hw:1,0)", "hostApi": 0, "maxInputChannels": 1,
             "maxOutputChannels": 2, "defaultSampleRate": 48000.0, "rates": {48000}},
        ]  # fmt: skip
        FakePyAudio.instances.append(self)

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        return {"index": index, **self.devices[index]}

    def get_default_input_device_info(self) -> dict[str, Any]:
        return self.get_device_info_by_index(0)

    def get_default_output_device_info(self) -> dict[str, Any]:
        return self.get_device_info_by_index(0)

    def get_host_api_info_by_index(self, index: int) -> dict[str, Any]:
        return {"name": "ALSA"}

    def is_format_supported(self, rate: float, **kwargs: Any) -> bool:
        device = int(kwargs.get("input_device", kwargs.get("output_device", 0)))
        rates: set[int] | None = self.devices[device]["rates"]  # type: ignore[assignment]
        if rates is not None and rate not in rates:
            raise ValueError("Invalid sample rate")
        return True

    def open(self, **kwargs: Any) -> FakeStream:
        stream = FakeStream(kwargs.pop("stream_callback"), kwargs.pop("start", True), kwargs)
        self.streams.append(stream)
        return stream

    def terminate(self) -> None:
        self.terminated = True


@pytest.fixture
def fake_pyaudio(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = types.SimpleNamespace(PyAudio=FakePyAudio, paInt16=8, paContinue=0)
    monkeypatch.setitem(sys.modules, "pyaudio", module)
    FakePyAudio.instances = []
    yield module
    assert PortAudioSession._users == 0, "a test left a PortAudio stream open"
    PortAudioSession._pa = None


def frame_of(value: int, n: int = 320) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def as_pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def test_sink_starts_with_a_cushion_and_counts_underruns(fake_pyaudio: Any) -> None:
    sink = open_sink("default", 16000)
    assert isinstance(sink, PyAudioSink)
    stream = FakePyAudio.instances[0].streams[0]
    assert stream.kwargs["rate"] == 16000 and stream.kwargs["frames_per_buffer"] == 320
    assert stream.kwargs["output"] and stream.kwargs["channels"] == 1

    sink.write(frame_of(1))
    assert not stream.active  # one frame is no cushion yet
    sink.write(frame_of(2))
    assert stream.active
    played = [as_pcm(stream.play(320)) for _ in range(3)]

    assert (played[0] == 1).all() and (played[1] == 2).all() and not played[2].any()
    assert sink.stats()["underruns"] == 1 and sink.stats()["overruns"] == 0
    sink.close()
    assert stream.closed and FakePyAudio.instances[0].terminated


def test_sink_drops_the_oldest_when_full(fake_pyaudio: Any) -> None:
    sink = PyAudioSink("default", 8000, buffer_frames=5)
    stream = FakePyAudio.instances[0].streams[0]
    for value in range(1, 8):
        sink.write(frame_of(value, 160))

    played = [int(as_pcm(stream.play(160))[0]) for _ in range(5)]

    assert played == [3, 4, 5, 6, 7]
    assert sink.stats()["overruns"] == 2
    sink.close()


def test_sink_copes_with_odd_callback_sizes(fake_pyaudio: Any) -> None:
    sink = PyAudioSink("default", 8000)
    stream = FakePyAudio.instances[0].streams[0]
    sink.write(np.arange(160, dtype=np.int16))
    sink.write(np.arange(160, 320, dtype=np.int16))

    out = np.concatenate([as_pcm(stream.play(n)) for n in (100, 100, 120)])

    np.testing.assert_array_equal(out, np.arange(320))
    sink.close()


def test_source_primes_then_delivers_frames_in_order(fake_pyaudio: Any) -> None:
    source = open_source("default", 16000)
    assert isinstance(source, PyAudioSource)
    stream = FakePyAudio.instances[0].streams[0]
    assert stream.kwargs["input"] and stream.active

    assert not source.read(320).any()  # nothing captured yet: silence, not an underrun
    stream.capture(frame_of(1))
    assert not source.read(320).any()  # one frame is not yet a cushion
    stream.capture(frame_of(2))
    first = source.read(320)
    stream.capture(frame_of(3))
    second = source.read(320)

    assert (first == 1).all() and (second == 2).all()
    assert source.stats()["underruns"] == 0
    source.close()


def test_source_underrun_pads_with_silence(fake_pyaudio: Any) -> None:
    source = PyAudioSource("default", 8000)
    stream = FakePyAudio.instances[0].streams[0]
    stream.capture(frame_of(1, 160))
    stream.capture(frame_of(2, 160))
    assert (source.read(160) == 1).all()
    assert (source.read(160) == 2).all()

    starved = source.read(160)  # the card is late

    assert not starved.any()
    assert source.stats()["underruns"] == 1
    source.close()


def test_source_overrun_drops_the_oldest_audio(fake_pyaudio: Any) -> None:
    source = PyAudioSource("default", 8000, buffer_frames=5)
    stream = FakePyAudio.instances[0].streams[0]
    stream.capture(frame_of(1, 160))
    stream.capture(frame_of(2, 160))
    assert (source.read(160) == 1).all()
    for value in range(3, 11):  # the loop stalls for eight frames
        stream.capture(frame_of(value, 160))

    after = [int(source.read(160)[0]) for _ in range(2)]

    assert source.stats()["overruns"] >= 1
    assert after[0] >= 7 and after[1] == after[0] + 1  # old audio dropped, then in order again
    source.close()


def test_device_that_stops_fails_once_and_the_call_goes_on(
    fake_pyaudio: Any, caplog: pytest.LogCaptureFixture
) -> None:
    source = PyAudioSource("default", 8000)
    sink = PyAudioSink("default", 8000)
    pa = FakePyAudio.instances[0]
    assert len(FakePyAudio.instances) == 1  # capture and playback share one PortAudio session
    capture, playback = pa.streams
    capture.capture(frame_of(5, 160))
    capture.capture(frame_of(5, 160))
    sink.write(frame_of(1, 160))
    sink.write(frame_of(1, 160))
    capture.active = playback.active = False  # the USB card was pulled

    with caplog.at_level(logging.ERROR, logger="intercom.media.audio"):
        reads = [source.read(160) for _ in range(3)]
        for _ in range(3):
            sink.write(frame_of(9, 160))

    assert source.failed and sink.failed
    assert not any(r.any() for r in reads) and all(len(r) == 160 for r in reads)
    assert len(caplog.records) == 2 and "failed" in caplog.records[0].getMessage()
    assert source.stats()["failed"] == 1
    sink.close()
    source.close()
    assert pa.terminated


def test_device_whose_callback_stops_is_failed_after_the_timeout(fake_pyaudio: Any) -> None:
    source = PyAudioSource("default", 8000, stall_timeout=0.05)
    stream = FakePyAudio.instances[0].streams[0]
    stream.capture(frame_of(1, 160))
    source.read(160)
    assert not source.failed

    time.sleep(0.1)  # still "active", but no callback any more

    assert not source.read(160).any()
    assert source.failed
    source.close()


def test_card_without_the_call_rate_is_opened_at_its_own(fake_pyaudio: Any) -> None:
    pytest.importorskip("soxr")
    source = PyAudioSource("USB", 16000)
    sink = PyAudioSink("USB", 16000)
    capture, playback = FakePyAudio.instances[0].streams
    assert source.device_rate == sink.device_rate == 48000
    assert capture.kwargs["rate"] == 48000 and capture.kwargs["frames_per_buffer"] == 960

    card_tone = ToneSource(1000, -10.0, 48000)
    heard = []
    for _ in range(50):
        capture.capture(card_tone.read(960))
        heard.append(source.read(320))
    played = []
    call_tone = ToneSource(700, -10.0, 16000)
    for _ in range(50):
        sink.write(call_tone.read(320))
        played.append(as_pcm(playback.play(960)))

    heard_audio = np.concatenate(heard)[3200:]
    played_audio = np.concatenate(played)[9600:]
    assert dominant_hz(heard_audio, 16000) == pytest.approx(1000, abs=3)
    assert peak_dbfs(heard_audio) == pytest.approx(-10.0, abs=0.5)
    assert dominant_hz(played_audio, 48000) == pytest.approx(700, abs=3)
    assert peak_dbfs(played_audio) == pytest.approx(-10.0, abs=0.5)
    sink.close()
    source.close()


def test_missing_card_through_open_source_lists_the_inputs(fake_pyaudio: Any) -> None:
    with pytest.raises(AudioDeviceError) as caught:
        open_source("Jabra Speak", 16000)

    message = str(caught.value)
    assert "'Jabra Speak'" in message
    assert "1: USB Audio Device: - (hw:1,0)  (1 ch, 48000 Hz)" in message
    assert FakePyAudio.instances[0].terminated  # the failed open let go of PortAudio
