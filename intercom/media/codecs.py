"""Audio codecs for RTP: G.711 (PCMU, PCMA) and G.722, on 16-bit linear mono numpy audio.

Every codec has two rates, kept apart in every name here because mixing them up breaks G.722:

- ``clock_rate`` is the RTP timestamp clock, what the SDP ``rtpmap`` says and what the RTP
  timestamp counts. It is 8000 Hz for all three codecs.
- ``sample_rate`` is the rate of the linear audio that goes into ``encode`` and comes out of
  ``decode``: 8000 Hz for G.711, 16000 Hz for G.722.

G.722 samples audio at 16 kHz, yet RFC 3551 (4.5.2) keeps the 8000 Hz RTP clock that RFC 1890 got
wrong, for the sake of the phones that already followed it. So a 20 ms G.722 frame holds 320
samples of audio but advances the RTP timestamp by 160, like G.711.

G.711 is table lookups built once at import (``audioop`` is gone in Python 3.13): decoding indexes
a 256-entry int16 table with the payload bytes, encoding indexes a 65536-entry table with the
int16 samples viewed as uint16, so a 20 ms frame costs one numpy gather either way. G.722 is the
``G722`` package (libg722, bit-exact to the ITU-T recommendation); it keeps ADPCM state, so each
codec object owns one encoder and one decoder and serves exactly one call: create a fresh codec
per call, never share one between calls or directions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
import numpy.typing as npt
from G722 import G722

from intercom.sdp import STATIC_PT

Pcm = npt.NDArray[np.int16]

# -- G.711 (ITU-T G.711, 1988) ---------------------------------------------------------------------

#: mu-law works on the magnitude plus this bias, so that every segment starts at a power of two.
ULAW_BIAS = 0x84
#: The largest magnitude that still fits 15 bits after the bias; louder input is clipped to it.
ULAW_CLIP = 0x7FFF - ULAW_BIAS
#: A-law inverts every even bit on the wire, so that quiet signals still have ones for the line.
ALAW_XOR = 0x55
#: The codes of a zero sample: what a silent G.711 frame is made of.
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


def _bit_length(values: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """``int.bit_length`` for a whole array: frexp's exponent is exact for integers below 2**53."""
    return np.frexp(values.astype(np.float64))[1].astype(np.int32)


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, in the order of its uint16 bit pattern, to build the encode tables."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_int16()
    negative = pcm < 0
    # One's complement rather than negation, as in G.191's reference: -1 (-0.25 in G.711's 14-bit
    # units) falls in the interval of negative zero, 0x7F. audioop negated after shifting and so
    # sent 0x7E (-8) for it, one code too loud on 508 negative decision boundaries.
    magnitude = np.minimum(np.where(negative, ~pcm, pcm), ULAW_CLIP) + ULAW_BIAS
    exponent = _bit_length(magnitude) - 8  # the biased magnitude lies in [2**7, 2**15)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = np.where(negative, 0x80, 0x00) | (exponent << 4) | mantissa
    return np.asarray(~code & 0xFF, dtype=np.uint8)


def _ulaw_decode_table() -> Pcm:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_int16()
    negative = pcm < 0
    magnitude = np.where(negative, ~pcm, pcm) >> 3  # 13-bit A-law input, 0..4095
    # Segment 0 and 1 share the step of 2; from segment 1 on, each segment doubles range and step.
    exponent = np.clip(_bit_length(magnitude) - 5, 0, 7)
    mantissa = (magnitude >> np.maximum(exponent, 1)) & 0x0F
    code = np.where(negative, 0x00, 0x80) | (exponent << 4) | mantissa
    return np.asarray(code ^ ALAW_XOR, dtype=np.uint8)


def _alaw_decode_table() -> Pcm:
    code = np.arange(256, dtype=np.int32) ^ ALAW_XOR
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # Reconstruct at the middle of the quantization interval (the +1 and +33 in 13-bit units).
    magnitude = np.where(
        exponent == 0,
        (mantissa << 1) + 1,
        ((mantissa << 1) + 33) << np.maximum(exponent - 1, 0),
    )
    magnitude <<= 3
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_ENCODE: npt.NDArray[np.uint8] = _ulaw_encode_table()
ULAW_DECODE: Pcm = _ulaw_decode_table()
ALAW_ENCODE: npt.NDArray[np.uint8] = _alaw_encode_table()
ALAW_DECODE: Pcm = _alaw_decode_table()
for _table in (ULAW_ENCODE, ULAW_DECODE, ALAW_ENCODE, ALAW_DECODE):
    _table.flags.writeable = False  # shared by every call: nobody may patch them by accident


def as_pcm(pcm: npt.ArrayLike) -> Pcm:
    """Check that ``pcm`` is mono 16-bit audio and return it as a native int16 array.

    Casting silently would turn float audio in [-1, 1] into zeros and a stereo block into garbage,
    so anything else is an error here, at the border, rather than noise at the far end.
    """
    array = np.asarray(pcm)
    if array.dtype.kind != "i" or array.dtype.itemsize != 2:
        raise TypeError(f"expected 16-bit linear audio (int16), got {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"expected mono audio (a 1-D array), got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.int16)


def _payload_bytes(payload: bytes | bytearray | memoryview) -> npt.NDArray[np.uint8]:
    return np.frombuffer(payload, dtype=np.uint8)


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """G.711 mu-law (PCMU) bytes of 16-bit linear audio, one byte per sample."""
    return ULAW_ENCODE[as_pcm(pcm).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    """16-bit linear audio of G.711 mu-law (PCMU) bytes, one sample per byte."""
    return ULAW_DECODE[_payload_bytes(data)]


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """G.711 A-law (PCMA) bytes of 16-bit linear audio, one byte per sample."""
    return ALAW_ENCODE[as_pcm(pcm).view(np.uint16)].tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    """16-bit linear audio of G.711 A-law (PCMA) bytes, one sample per byte."""
    return ALAW_DECODE[_payload_bytes(data)]


# -- the codec interface ---------------------------------------------------------------------------


def _samples(rate: int, ms: int) -> int:
    if not isinstance(ms, int):
        raise TypeError(f"frame lengths are whole milliseconds, got {ms!r}")
    if ms <= 0 or (rate * ms) % 1000:
        raise ValueError(f"{ms} ms is not a whole number of samples at {rate} Hz")
    return rate * ms // 1000


class AudioCodec(ABC):
    """One direction pair of one call's audio: encodes what we send, decodes what we receive.

    Stateful codecs (G.722) keep their encoder and decoder apart, so sending never disturbs
    receiving; one object still belongs to one call only.
    """

    #: The encoding name of SDP's rtpmap: "PCMU", "PCMA" or "G722".
    name: str
    #: The static RTP payload type of RFC 3551.
    payload_type: int
    #: RTP timestamp clock in Hz, as in the rtpmap: 8000 for all three codecs, G.722 included.
    clock_rate: int
    #: Rate of the linear audio in Hz that ``encode`` takes and ``decode`` returns.
    sample_rate: int

    def frame_samples(self, ms: int = 20) -> int:
        """Audio samples (at ``sample_rate``) in a frame of ``ms`` milliseconds: 160 or 320."""
        return _samples(self.sample_rate, ms)

    def timestamp_step(self, ms: int = 20) -> int:
        """RTP timestamp increment (at ``clock_rate``) per frame of ``ms`` milliseconds: 160."""
        return _samples(self.clock_rate, ms)

    @abstractmethod
    def encode(self, pcm: npt.ArrayLike) -> bytes:
        """The RTP payload of mono int16 audio at ``sample_rate``."""

    @abstractmethod
    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm:
        """Mono int16 audio at ``sample_rate`` of an RTP payload."""

    @abstractmethod
    def silence_payload(self, ms: int = 20) -> bytes:
        """A payload of ``ms`` milliseconds of silence, to keep RTP flowing without audio."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}/{self.clock_rate} audio {self.sample_rate} Hz>"


class G711Codec(AudioCodec):
    """G.711 mu-law (PCMU) or A-law (PCMA): stateless, so any frame length encodes alone."""

    clock_rate = 8000
    sample_rate = 8000

    def __init__(self, law: Literal["ulaw", "alaw"]) -> None:
        if law == "ulaw":
            self.name, self._encode, self._decode = "PCMU", ulaw_encode, ulaw_decode
            self._silence = ULAW_SILENCE
        elif law == "alaw":
            self.name, self._encode, self._decode = "PCMA", alaw_encode, alaw_decode
            self._silence = ALAW_SILENCE
        else:
            raise ValueError(f"unknown G.711 law {law!r}; expected 'ulaw' or 'alaw'")
        self.law = law
        self.payload_type = STATIC_PT[self.name]

    def encode(self, pcm: npt.ArrayLike) -> bytes:
        return self._encode(pcm)

    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm:
        return self._decode(payload)

    def silence_payload(self, ms: int = 20) -> bytes:
        return bytes([self._silence]) * self.frame_samples(ms)


class G722Codec(AudioCodec):
    """G.722 at 64 kbit/s: 16 kHz audio, 8000 Hz RTP clock, 160 bytes per 20 ms.

    The ADPCM encoder and decoder adapt to the signal, so the far end decodes correctly only if
    our encoder sees every frame in order, and we decode correctly only if our decoder does: hence
    a separate libg722 object per direction (one object does keep two contexts, but nothing here
    should rest on that), and a fresh ``G722Codec`` per call.
    """

    name = "G722"
    payload_type = STATIC_PT["G722"]
    clock_rate = 8000
    sample_rate = 16000
    bit_rate = 64000

    def __init__(self) -> None:
        self._encoder = G722(self.sample_rate, self.bit_rate)
        self._decoder = G722(self.sample_rate, self.bit_rate)

    def encode(self, pcm: npt.ArrayLike) -> bytes:
        samples = as_pcm(pcm)
        # Each byte codes two samples (one per QMF sub-band); an odd count would silently lose
        # a sample and shift everything after it.
        if len(samples) % 2:
            raise ValueError(f"G.722 encodes pairs of samples, got {len(samples)}")
        return bytes(self._encoder.encode(samples))

    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm:
        # libg722 returns array('h'), or a numpy array when G722-numpy is installed.
        return np.array(self._decoder.decode(bytes(payload)), dtype=np.int16)

    def silence_payload(self, ms: int = 20) -> bytes:
        """Silence through this call's own encoder.

        G.722 has no fixed silence code: the bytes depend on the ADPCM state, and the far end's
        decoder advances with every frame it gets, so silence must go through the same encoder as
        the audio before and after it.
        """
        return self.encode(np.zeros(self.frame_samples(ms), dtype=np.int16))


#: The codecs ``create_codec`` knows, by SDP encoding name.
SUPPORTED_CODECS = ("PCMU", "PCMA", "G722")


def create_codec(name: str) -> AudioCodec:
    """A fresh codec for one call, by SDP encoding name (any case): PCMU, PCMA or G722."""
    key = name.upper()
    if key == "PCMU":
        return G711Codec("ulaw")
    if key == "PCMA":
        return G711Codec("alaw")
    if key == "G722":
        return G722Codec()
    raise ValueError(f"unsupported codec {name!r}; supported: {', '.join(SUPPORTED_CODECS)}")
