"""Is what was heard the audio that was sent? One number for a whole path: codec, RTP, jitter.

A level alone cannot tell a voice from loud garbage (a codec decoded as the wrong one, a byte
order swapped, frames out of order all come out loud). The peak normalized cross-correlation
between the recording and the source, at whatever delay the path added, can: about 0.9 and above
through G.722 or G.711 on a clean path, near 0 for unrelated sound.
"""

from __future__ import annotations

import numpy as np
import soxr

from intercom.media.audio import Pcm


def similarity(heard: Pcm, heard_rate: int, source: Pcm, source_rate: int) -> float:
    """Peak normalized cross-correlation of ``heard`` with ``source`` played in a loop.

    ``source`` loops because the door and the demo loop their WAV files, so the recording may
    start anywhere in it and wrap around. 1.0 is a perfect copy at some delay; a level change does
    not lower it. An empty or silent recording gives 0.0.
    """
    h = np.asarray(heard, dtype=np.float64)
    s = np.asarray(source, dtype=np.float64)
    if source_rate != heard_rate and s.size:
        s = soxr.resample(s, source_rate, heard_rate)
    if h.size == 0 or s.size == 0:
        return 0.0
    h = h - h.mean()
    h_energy = float(np.dot(h, h))
    if h_energy == 0.0:
        return 0.0
    looped = np.tile(s, int(np.ceil(h.size / s.size)) + 2)
    size = 1 << (looped.size + h.size - 1).bit_length()
    # corr[k] = sum_n looped[n + k] * h[n], for every delay k at which h fits inside looped.
    lags = looped.size - h.size + 1
    corr = np.fft.irfft(np.fft.rfft(looped, size) * np.conj(np.fft.rfft(h, size)), size)[:lags]
    energy = np.concatenate(([0.0], np.cumsum(looped * looped)))
    window = energy[h.size : h.size + lags] - energy[:lags]
    ratio = corr / np.sqrt(np.maximum(window, 1e-9) * h_energy)
    return float(np.clip(ratio.max(), 0.0, 1.0))
