"""Resampler: tones streamed in 20 ms chunks between sound-card and codec rates keep their
frequency, level and cleanliness; the stream is continuous across chunks and complete at flush."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from intercom.media.resample import Resampler

PAIRS = [(48000, 8000), (8000, 48000), (44100, 16000), (16000, 44100)]
AMPLITUDE = 16384  # -6 dBFS


def tone(freq: float, rate: int, seconds: float = 1.0) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def stream(
    resampler: Resampler, signal: npt.NDArray[np.int16], chunk: int
) -> list[npt.NDArray[np.int16]]:
    """Every output of ``resampler`` for ``signal`` fed in ``chunk``-sample pieces, then flushed."""
    outs = [resampler.process(signal[i : i + chunk]) for i in range(0, len(signal), chunk)]
    return [*outs, resampler.flush()]


def fit_sine(y: npt.NDArray[np.float64], freq: float, rate: int) -> tuple[float, float, float]:
    """Fit an ideal sine of ``freq`` (free amplitude and phase, which absorbs the filter delay)
    and return its amplitude, the SNR in dB of ``y`` against it, and the largest deviation."""
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    ideal = basis @ coef
    error = y - ideal
    snr = 10 * np.log10(np.sum(ideal**2) / np.sum(error**2))
    return float(np.hypot(*coef)), float(snr), float(np.abs(error).max())


@pytest.mark.parametrize("low_latency", [True, False], ids=["vr", "fixed"])
@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_tone_in_20ms_chunks_keeps_frequency_level_and_snr(
    in_rate: int, out_rate: int, low_latency: bool
) -> None:
    resampler = Resampler(in_rate, out_rate, low_latency=low_latency)
    out = np.concatenate(stream(resampler, tone(1000, in_rate), in_rate // 50))
    assert out.dtype == np.int16
    skip = out_rate // 20  # 50 ms at each end: the filter's start-up and its flushed tail
    steady = out[skip:-skip].astype(np.float64)

    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    bin_hz = out_rate / len(steady)
    assert abs(int(np.argmax(spectrum)) - 1000 / bin_hz) <= 1

    amplitude, snr, worst = fit_sine(steady, 1000, out_rate)
    assert snr >= 40  # ~87 dB measured: 16-bit rounding and dither, nothing else
    assert abs(20 * np.log10(amplitude / AMPLITUDE)) < 0.1
    assert worst < 0.01 * AMPLITUDE  # no click anywhere, not even one too short to move the SNR


@pytest.mark.parametrize("low_latency", [True, False], ids=["vr", "fixed"])
@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_output_length_tracks_the_input(in_rate: int, out_rate: int, low_latency: bool) -> None:
    resampler = Resampler(in_rate, out_rate, low_latency=low_latency)
    chunk = in_rate // 50
    signal = tone(1000, in_rate, 2.0)
    outs = stream(resampler, signal, chunk)
    # While streaming, output lags the input by the filter's hold-back and never runs ahead.
    # Measured worst lag: 14-30 ms with the variable-rate engine, 40-175 ms without.
    max_lag = (2 if resampler.low_latency else 10) * out_rate // 50
    produced = 0
    for n, out in enumerate(outs[:-1], start=1):
        produced += len(out)
        due = n * chunk * out_rate / in_rate
        assert due - max_lag <= produced <= due + 1
    assert produced + len(outs[-1]) == round(len(signal) * out_rate / in_rate)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_low_latency_returns_one_chunk_per_chunk(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    assert resampler.low_latency  # the installed soxr has the variable-rate engine
    outs = stream(resampler, tone(1000, in_rate), in_rate // 50)
    assert {len(out) for out in outs[2:-1]} == {out_rate // 50}


@pytest.mark.parametrize("low_latency", [True, False], ids=["vr", "fixed"])
@pytest.mark.parametrize("chunk", [1, 160, 441, 1000])
def test_chunk_borders_leave_no_trace(chunk: int, low_latency: bool) -> None:
    signal = tone(1000, 44100, 0.5)
    whole = Resampler(44100, 16000, low_latency=low_latency)
    expected = np.concatenate([whole.process(signal), whole.flush()])
    chunks = Resampler(44100, 16000, low_latency=low_latency)
    chunked = np.concatenate(stream(chunks, signal, chunk))
    assert len(chunked) == len(expected) == 8000
    # soxr dithers its int16 output, so the two runs differ in the last bit or two, no more.
    assert np.abs(chunked.astype(np.int32) - expected).max() <= 4


@pytest.mark.parametrize("low_latency", [True, False], ids=["vr", "fixed"])
@pytest.mark.parametrize(("codec_rate", "card_rate"), [(8000, 48000), (16000, 44100)])
def test_there_and_back_gives_the_tone_back(
    codec_rate: int, card_rate: int, low_latency: bool
) -> None:
    signal = tone(1000, codec_rate)
    up = Resampler(codec_rate, card_rate, low_latency=low_latency)
    down = Resampler(card_rate, codec_rate, low_latency=low_latency)
    at_card = np.concatenate(stream(up, signal, codec_rate // 50))
    back = np.concatenate(stream(down, at_card, card_rate // 50))
    assert len(back) == len(signal)
    skip = codec_rate // 20
    amplitude, snr, _ = fit_sine(back[skip:-skip].astype(np.float64), 1000, codec_rate)
    assert snr >= 40
    assert abs(20 * np.log10(amplitude / AMPLITUDE)) < 0.1


def test_downsampling_filters_out_what_would_alias() -> None:
    # 5 kHz is above the 4 kHz Nyquist frequency of 8000 Hz: keeping one sample in six folds it
    # to a full-level 3 kHz whistle; the resampler's low-pass filter removes it instead.
    signal = tone(5000, 48000)
    dropped = signal[::6].astype(np.float64)
    assert np.sqrt(np.mean(dropped**2)) > 0.5 * AMPLITUDE
    out = np.concatenate(stream(Resampler(48000, 8000), signal, 960))[400:-400]
    level = np.sqrt(np.mean(out.astype(np.float64) ** 2)) / (AMPLITUDE / np.sqrt(2))
    assert 20 * np.log10(level) < -60  # ~-87 dB measured


def test_equal_rates_pass_the_input_through() -> None:
    resampler = Resampler(16000, 16000)
    assert resampler.passthrough
    chunk = tone(1000, 16000, 0.02)
    out = resampler.process(chunk)
    assert out.dtype == np.int16
    assert np.array_equal(out, chunk)
    assert len(resampler.flush()) == 0
    with pytest.raises(TypeError):
        resampler.process(np.zeros(320, dtype=np.float32))


def test_flush_starts_a_fresh_stream() -> None:
    resampler = Resampler(48000, 8000)
    signal = tone(1000, 48000, 0.2)
    first = np.concatenate(stream(resampler, signal, 960))
    second = np.concatenate(stream(resampler, signal, 960))
    assert len(first) == len(second) == 1600
    assert np.abs(first.astype(np.int32) - second).max() <= 4


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)
    with pytest.raises(ValueError, match="positive"):
        Resampler(48000, -8000)
    with pytest.raises(ValueError, match="quality"):
        Resampler(48000, 8000, quality="LQ")  # type: ignore[arg-type]
    resampler = Resampler(48000, 8000)
    with pytest.raises(TypeError, match="int16"):
        resampler.process(np.zeros(960, dtype=np.float64))
    with pytest.raises(ValueError, match="mono"):
        resampler.process(np.zeros((960, 2), dtype=np.int16))
