"""Sample-rate conversion between the sound card and the codec, in a stream of 20 ms chunks.

The sound card runs at its own rate (often 48000 or 44100 Hz), the codec at 8000 or 16000 Hz.
Converting by dropping or repeating samples would be cheap and wrong:

- Dropping samples (48000 -> 8000: keep one in six) folds everything above the new Nyquist
  frequency back into the band: a 5 kHz hiss becomes a 3 kHz whistle. It must be low-pass
  filtered away first.
- Repeating samples (8000 -> 48000) leaves mirror images of the voice up to 24 kHz, heard as a
  metallic buzz.
- 44100 <-> 16000 (160/441) has no whole-sample step at all: picking the nearest sample jitters
  the timing by up to half a sample, which is distortion.

So this wraps libsoxr (``soxr.ResampleStream``, quality HQ: 20-bit accuracy, the filter's
passband flat to well above the telephone band). It is a stream, not ``soxr.resample`` per chunk:
the filter needs the history of the samples before each chunk, and restarting it every 20 ms
would put a small discontinuity at each chunk border, a 50 Hz click train.

Latency: libsoxr's fixed-rate engine filters in large blocks, so fed 20 ms at a time it holds
back up to 175 ms (8000 -> 48000) and then returns several frames at once. Its variable-rate
engine (``vr``, run here at a fixed ratio) holds back 14-30 ms and then returns one chunk's worth
for every chunk, with the same measured quality (~87 dB SNR on a -6 dBFS tone, the int16 limit).
It is used when the installed soxr has it: soxr 1.1 and later, where it is marked experimental.
Either way the output is continuous; the caller buffers it into frames.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

from intercom.media.codecs import Pcm, as_pcm

log = logging.getLogger(__name__)


class Resampler:
    """Stream mono int16 audio from ``in_rate`` to ``out_rate`` Hz, one chunk at a time.

    One object is one continuous stream (one direction of one call): it keeps the filter state
    between chunks. Equal rates pass audio through untouched.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        quality: Literal["HQ", "VHQ"] = "HQ",
        low_latency: bool = True,
    ) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        if quality not in ("HQ", "VHQ"):
            raise ValueError(f"quality must be 'HQ' or 'VHQ', got {quality!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        #: True when the stream returns audio steadily, chunk for chunk (see the module doc).
        self.low_latency = False
        self._stream: soxr.ResampleStream | None = None
        if in_rate == out_rate:
            return
        if low_latency:
            try:
                self._stream = soxr.ResampleStream(
                    in_rate, out_rate, 1, dtype="int16", quality=quality, vr=True
                )
                self.low_latency = True
            except TypeError:  # soxr before 1.1 has no variable-rate engine
                log.info("soxr has no variable-rate engine: resampling with block latency")
        if self._stream is None:
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, chunk: npt.ArrayLike) -> Pcm:
        """The output for one more chunk of input; its length varies, see the module doc."""
        pcm = as_pcm(chunk)
        if self._stream is None:
            return pcm
        return np.asarray(self._stream.resample_chunk(pcm), dtype=np.int16)

    def flush(self) -> Pcm:
        """The output still held in the filter, at the end of the stream; then start afresh.

        After it the total output is ``round(samples_in * out_rate / in_rate)``.
        """
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = np.asarray(
            self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True), dtype=np.int16
        )
        self._stream.clear()
        return tail

    def __repr__(self) -> str:
        mode = "passthrough" if self.passthrough else self.quality
        return f"<Resampler {self.in_rate} -> {self.out_rate} Hz {mode}>"
