"""Codecs: G.711 against ITU-T G.711/G.191 values and an independent reference, G.722 against
libg722's regression vectors (tests/data/codecs/README.md), and the AudioCodec interface."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from intercom.media import codecs
from intercom.media.codecs import (
    AudioCodec,
    G711Codec,
    G722Codec,
    alaw_decode,
    alaw_encode,
    create_codec,
    ulaw_decode,
    ulaw_encode,
)

CODEC_DIR = Path(__file__).resolve().parents[1] / "data" / "codecs"
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def tone(freq: float, rate: int, seconds: float, dbfs: float) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(32767 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def snr_db(signal: npt.ArrayLike, output: npt.ArrayLike) -> float:
    s = np.asarray(signal, dtype=np.float64)
    e = s - np.asarray(output, dtype=np.float64)
    return float(10 * np.log10(np.sum(s**2) / np.sum(e**2)))


# -- an independent G.711 reference ----------------------------------------------------------------
# Written per sample after the ITU-T G.191 software tool library (g711.c), which works in the
# 13-bit (A-law) and 14-bit (mu-law) domains of the G.711 tables, with a segment search loop,
# unlike the module's 16-bit bit-length formulation.


def ref_alaw_compress(x: int) -> int:
    ix = (~x if x < 0 else x) >> 4  # 12-bit magnitude, one's complement for negatives
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def ref_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def ref_ulaw_compress(x: int) -> int:
    absno = ((~x if x < 0 else x) >> 2) + 33  # 14-bit magnitude plus the bias of 33
    absno = min(absno, 0x1FFF)  # clip at 8159 + 33
    i = absno >> 6
    segno = 1
    while i:
        segno += 1
        i >>= 1
    high = 8 - segno
    low = 15 - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    return code | 0x80 if x >= 0 else code


def ref_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    step = 4 << (exponent + 1)
    mantissa &= 0x0F
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


# -- G.711 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (0x00, -32124),  # mu-law: loudest negative, 8031 in the 14-bit domain
        (0x80, 32124),
        (0xFF, 0),
        (0x7F, 0),  # negative zero
        (0x7E, -8),
        (0xFE, 8),
        (0xF0, 120),  # the top of the first segment: 30 in 14 bits
        (0xEF, 132),  # the bottom of the second: 33 in 14 bits
        (0x70, -120),
    ],
)
def test_ulaw_decode_reference_values(code: int, value: int) -> None:
    assert ulaw_decode(bytes([code]))[0] == value


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (0xD5, 8),  # A-law zero is the two codes closest to it, with the even bits inverted
        (0x55, -8),
        (0x2A, -32256),
        (0xAA, 32256),
        (0xD4, 24),
        (0xC5, 264),  # first code of segment 1: (16 + 0.5) * 16
        (0xFA, 1008),
    ],
)
def test_alaw_decode_reference_values(code: int, value: int) -> None:
    assert alaw_decode(bytes([code]))[0] == value


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7F, 0x55),  # G.191: one's complement, so -1 quantizes like 0 with the sign clear
        (1, 0xFF, 0xD5),
        (4, 0xFE, 0xD5),  # mu-law's first step is 8, A-law's 16 (2 in 13 bits)
        (15, 0xFD, 0xD5),
        (16, 0xFD, 0xD4),
        (-17, 0x7D, 0x54),
        (31611, 0x81, 0xAB),
        (31612, 0x80, 0xAB),  # mu-law's decision level for its top code: 7903 in 14 bits
        (31743, 0x80, 0xAB),
        (31744, 0x80, 0xAA),  # A-law's: 3968 in 13 bits
        (32124, 0x80, 0xAA),
        (32635, 0x80, 0xAA),  # 8159 in 14 bits: mu-law's clipping level
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
    ],
)
def test_g711_encode_reference_values(sample: int, ulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype=np.int16)
    assert ulaw_encode(pcm) == bytes([ulaw])
    assert alaw_encode(pcm) == bytes([alaw])


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref_ulaw_compress(int(x)) for x in ALL_INT16)
    assert ulaw_encode(ALL_INT16) == expected


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref_alaw_compress(int(x)) for x in ALL_INT16)
    assert alaw_encode(ALL_INT16) == expected


def test_g711_decode_tables_match_reference_for_every_code() -> None:
    every_code = bytes(range(256))
    assert ulaw_decode(every_code).tolist() == [ref_ulaw_expand(c) for c in range(256)]
    assert alaw_decode(every_code).tolist() == [ref_alaw_expand(c) for c in range(256)]


def test_g711_tables_shape_and_symmetry() -> None:
    assert codecs.ULAW_ENCODE.shape == codecs.ALAW_ENCODE.shape == (65536,)
    assert codecs.ULAW_DECODE.shape == codecs.ALAW_DECODE.shape == (256,)
    assert codecs.ULAW_DECODE.dtype == codecs.ALAW_DECODE.dtype == np.int16
    codes = np.arange(256)
    # The sign is the top bit; flipping it negates the value (mu-law's two zeros included).
    assert np.array_equal(codecs.ULAW_DECODE[codes ^ 0x80], -codecs.ULAW_DECODE[codes])
    assert np.array_equal(codecs.ALAW_DECODE[codes ^ 0x80], -codecs.ALAW_DECODE[codes])
    # Quantization never runs backwards: louder input never decodes quieter.
    for decode, encode in ((ulaw_decode, ulaw_encode), (alaw_decode, alaw_encode)):
        assert np.all(np.diff(decode(encode(ALL_INT16)).astype(np.int32)) >= 0)


def test_g711_reencoding_a_decoded_code_gives_it_back() -> None:
    every_code = bytes(range(256))
    assert alaw_encode(alaw_decode(every_code)) == every_code
    again = ulaw_encode(ulaw_decode(every_code))
    # All but mu-law's negative zero, which decodes to 0 and comes back as positive zero.
    assert again == every_code[:0x7F] + b"\xff" + every_code[0x80:]


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_g711_sine_round_trip_snr(name: str) -> None:
    codec = create_codec(name)
    signal = tone(1000, 8000, 1.0, -30)
    frames = [codec.encode(signal[i : i + 160]) for i in range(0, len(signal), 160)]
    assert all(len(f) == 160 for f in frames)
    output = np.concatenate([codec.decode(f) for f in frames])
    # 34.8 dB (PCMU) and 34.3 dB (PCMA) measured: at -30 dBFS the peaks fall in segments with
    # steps of 32 and 64, and at 1 kHz the tone repeats every 8 samples, so the error is not noise.
    assert snr_db(signal, output) >= 30


def test_g711_rejects_what_is_not_mono_int16() -> None:
    with pytest.raises(TypeError, match="int16"):
        ulaw_encode(np.zeros(160, dtype=np.float32))
    with pytest.raises(TypeError, match="int16"):
        alaw_encode(np.zeros(160, dtype=np.int32))
    with pytest.raises(ValueError, match="mono"):
        ulaw_encode(np.zeros((160, 2), dtype=np.int16))


def test_g711_takes_other_byte_orders_and_strided_views() -> None:
    pcm = tone(1000, 8000, 0.02, -10)
    assert ulaw_encode(pcm.astype(">i2")) == ulaw_encode(pcm)
    doubled = np.repeat(pcm, 2)
    assert alaw_encode(doubled[::2]) == alaw_encode(pcm)


def test_g711_decode_accepts_bytes_like() -> None:
    assert ulaw_decode(bytearray(b"\x00\xff")).tolist() == [-32124, 0]
    assert alaw_decode(memoryview(b"\xd5\x55")).tolist() == [8, -8]
    assert ulaw_decode(b"").shape == (0,)


# -- G.722 -------------------------------------------------------------------------------------


def g722_round_trip(signal: npt.NDArray[np.int16]) -> tuple[list[bytes], npt.NDArray[np.int16]]:
    codec = G722Codec()
    frames = [codec.encode(signal[i : i + 320]) for i in range(0, len(signal), 320)]
    return frames, np.concatenate([codec.decode(f) for f in frames])


def test_g722_frame_sizes() -> None:
    signal = tone(1000, 16000, 1.0, -20)
    frames, output = g722_round_trip(signal)
    assert len(frames) == 50
    assert {len(f) for f in frames} == {160}
    assert len(output) == len(signal)
    codec = G722Codec()
    assert len(codec.decode(frames[0])) == 320


def test_g722_sine_round_trip_snr_after_the_codec_delay() -> None:
    signal = tone(1000, 16000, 1.0, -20)
    _, output = g722_round_trip(signal)
    # The QMF filter pair delays the audio: find it by cross-correlation, then compare.
    head = 4000
    xcorr = np.correlate(output[:head].astype(float), signal[:head].astype(float), "full")
    delay = int(np.argmax(xcorr)) - (head - 1)
    assert 16 <= delay <= 32  # 22 samples (1.4 ms) for libg722
    settle = 1600  # 100 ms for the ADPCM adaptation
    aligned = output[settle + delay :]
    reference = signal[settle : len(signal) - delay]
    assert snr_db(reference, aligned) >= 25  # ~46 dB measured


def test_g722_matches_libg722_encode_and_decode_vectors() -> None:
    pcm = np.frombuffer((CODEC_DIR / "pcminb.dat").read_bytes(), dtype=">i2").astype(np.int16)
    assert len(pcm) == 49602
    # Framed in 20 ms here, in 1024-sample blocks upstream: equal only if state carries over.
    frames, output = g722_round_trip(pcm)
    encoded = b"".join(frames)
    assert len(encoded) == 24801
    assert (
        hashlib.sha256(encoded).hexdigest()
        == "fc0abeb220fc66fc7d5429758dff26b56bdc9e2d64ce701a5b2489ba3a2fb877"
    )
    assert (
        hashlib.sha256(output.astype(">i2").tobytes()).hexdigest()
        == "6f80f1635a58a9352b1a31357f6f3feea4459953df34d6d275167f4c3e8cc967"
    )


def test_g722_matches_libg722_full_scale_decode_vector() -> None:
    payload = (CODEC_DIR / "fullscale.g722").read_bytes()
    codec = G722Codec()
    output = np.concatenate([codec.decode(payload[i : i + 160]) for i in range(0, 500, 160)])
    assert len(output) == 1000
    assert (
        hashlib.sha256(output.astype("<i2").tobytes()).hexdigest()
        == "e70c92cd2068d112839db12bfaa787cc0ea9a809b64fbf62fd78b6041cd9fbcc"
    )


def test_g722_encoder_and_decoder_keep_separate_state() -> None:
    frames, _ = g722_round_trip(tone(1000, 16000, 0.2, -20))
    alone = G722Codec()
    expected = [alone.decode(f) for f in frames]
    busy = G722Codec()
    other = tone(440, 16000, 0.02, -6)
    got = []
    for f in frames:
        busy.encode(other)  # sending must not disturb receiving
        got.append(busy.decode(f))
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_g722_codecs_do_not_share_state() -> None:
    first, second = create_codec("G722"), create_codec("G722")
    assert first is not second
    loud = tone(1000, 16000, 0.02, -6)
    first.encode(loud)
    assert second.encode(loud) == G722Codec().encode(loud)


def test_g722_rejects_odd_sample_counts() -> None:
    with pytest.raises(ValueError, match="pairs"):
        G722Codec().encode(np.zeros(319, dtype=np.int16))


# -- the codec interface and factory -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pt", "clock_rate", "sample_rate", "samples", "step"),
    [
        ("PCMU", 0, 8000, 8000, 160, 160),
        ("PCMA", 8, 8000, 8000, 160, 160),
        ("G722", 9, 8000, 16000, 320, 160),
    ],
)
def test_codec_rates_and_frames(
    name: str, pt: int, clock_rate: int, sample_rate: int, samples: int, step: int
) -> None:
    codec = create_codec(name)
    assert isinstance(codec, AudioCodec)
    assert (codec.name, codec.payload_type) == (name, pt)
    assert (codec.clock_rate, codec.sample_rate) == (clock_rate, sample_rate)
    assert codec.frame_samples() == samples
    assert codec.timestamp_step() == step
    assert codec.frame_samples(10) == samples // 2
    assert codec.timestamp_step(30) == step * 3 // 2
    assert len(codec.encode(np.zeros(samples, dtype=np.int16))) == 160


@pytest.mark.parametrize("ms", [0, -20])
def test_frame_length_must_be_positive(ms: int) -> None:
    with pytest.raises(ValueError, match="whole number"):
        create_codec("PCMU").frame_samples(ms)
    with pytest.raises(ValueError, match="whole number"):
        create_codec("G722").timestamp_step(ms)


def test_frame_length_must_be_whole_milliseconds() -> None:
    with pytest.raises(TypeError, match="whole milliseconds"):
        create_codec("PCMA").frame_samples(2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "cls"),
    [("pcmu", G711Codec), ("Pcma", G711Codec), ("g722", G722Codec), ("PCMU", G711Codec)],
)
def test_create_codec_is_case_insensitive(name: str, cls: type[AudioCodec]) -> None:
    codec = create_codec(name)
    assert type(codec) is cls
    assert codec.name == name.upper()


@pytest.mark.parametrize("name", ["opus", "G729", "", "PCMU/8000", "telephone-event"])
def test_create_codec_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="PCMU, PCMA, G722") as err:
        create_codec(name)
    assert repr(name) in str(err.value)


def test_g711_codec_rejects_unknown_law() -> None:
    with pytest.raises(ValueError, match="ulaw"):
        G711Codec("mulaw")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "byte"), [("PCMU", 0xFF), ("PCMA", 0xD5)])
def test_g711_silence_payload(name: str, byte: int) -> None:
    codec = create_codec(name)
    assert codec.silence_payload() == bytes([byte]) * 160
    assert codec.silence_payload(30) == bytes([byte]) * 240
    # A-law has no zero: its quietest codes decode to +-8, 1/4096 of full scale.
    assert np.abs(codec.decode(codec.silence_payload())).max() <= 8


def test_g722_silence_payload_decodes_to_near_zero() -> None:
    sender, receiver = G722Codec(), G722Codec()
    payloads = [sender.silence_payload() for _ in range(10)]
    assert {len(p) for p in payloads} == {160}
    assert len(sender.silence_payload(10)) == 80
    output = np.concatenate([receiver.decode(p) for p in payloads])
    assert len(output) == 3200
    assert np.abs(output).max() <= 8  # -72 dBFS: ADPCM idle noise of +-3 measured


def test_g722_silence_after_speech_goes_through_the_same_encoder() -> None:
    sender, receiver = G722Codec(), G722Codec()
    loud = tone(1000, 16000, 0.2, -6)
    for i in range(0, len(loud), 320):
        receiver.decode(sender.encode(loud[i : i + 320]))
    quiet = [receiver.decode(sender.silence_payload()) for _ in range(10)]
    assert np.abs(quiet[0]).max() > 1000  # the tone's last 1.4 ms, still in the QMF filters
    assert max(np.abs(frame).max() for frame in quiet[1:]) <= 8
