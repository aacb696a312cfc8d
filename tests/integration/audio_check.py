"""Measuring what crossed a call: the frequency and SNR of a tone in a recording."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data, rate


def tone_snr(samples: np.ndarray, rate: int, freq: float, skip: float = 0.3) -> tuple[float, float]:
    """(peak frequency in Hz, SNR in dB of the tone against everything else), after trimming
    ``skip`` seconds at each end (the jitter buffer filling, the hang-up)."""
    cut = int(skip * rate)
    x = samples[cut : len(samples) - cut].astype(np.float64)
    if x.size < rate // 4:
        raise AssertionError(f"only {x.size} samples to analyse")
    x -= x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    bin_hz = rate / x.size
    peak = float(np.argmax(spectrum[3:]) + 3) * bin_hz
    centre = round(freq / bin_hz)
    width = max(3, round(15 / bin_hz))
    tone = spectrum[max(0, centre - width) : centre + width + 1].sum()
    noise = spectrum[3:].sum() - tone
    return peak, 10 * np.log10(tone / max(noise, 1e-12))
