"""Is what was heard the audio that was sent: the demo's voice check, on the shipped voices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intercom.media.audio import read_wav
from intercom.media.codecs import G722Codec, alaw_decode, alaw_encode
from intercom.media.compare import similarity

DATA = Path(__file__).resolve().parents[2] / "intercom" / "data"
VISITOR, RATE = read_wav(DATA / "visitor.wav")
RESIDENT, _ = read_wav(DATA / "resident.wav")


def _heard(start: int, seconds: float) -> np.ndarray:
    """What a call records of the looped visitor: any start, wrapping around the end."""
    return np.roll(np.tile(VISITOR, 3), -start)[: int(seconds * RATE)]


@pytest.mark.parametrize("start", [0, 1234, len(VISITOR) - 8000])
def test_the_voice_at_any_delay_and_across_the_loop_is_the_same_voice(start: int) -> None:
    assert similarity(_heard(start, 3.0), RATE, VISITOR, RATE) > 0.99


def test_a_quieter_copy_is_still_the_same_voice() -> None:
    assert similarity(_heard(500, 3.0) // 8, RATE, VISITOR, RATE) > 0.99


def test_through_g722_it_is_still_the_voice() -> None:
    codec = G722Codec()
    pcm = _heard(777, 3.0)
    frame = codec.frame_samples()
    decoded = np.concatenate(
        [codec.decode(codec.encode(pcm[i : i + frame])) for i in range(0, len(pcm), frame)]
    )
    assert similarity(decoded, RATE, VISITOR, RATE) > 0.9


def test_through_g711_at_8_khz_it_is_still_the_voice() -> None:
    import soxr

    narrow = soxr.resample(_heard(4000, 3.0).astype(np.float64), RATE, 8000).astype(np.int16)
    decoded = alaw_decode(alaw_encode(narrow))
    assert similarity(decoded, 8000, VISITOR, RATE) > 0.9


@pytest.mark.parametrize(
    "garbage",
    [
        RESIDENT[: 3 * RATE],  # the other voice
        _heard(0, 3.0).byteswap(),  # the right bytes read the wrong way round
        (np.random.default_rng(1).standard_normal(3 * RATE) * 8000).astype(np.int16),
    ],
    ids=["other voice", "byte-swapped", "noise"],
)
def test_loud_sound_that_is_not_the_voice_is_told_apart(garbage: np.ndarray) -> None:
    assert similarity(garbage, RATE, VISITOR, RATE) < 0.2


def test_nothing_heard_is_zero() -> None:
    assert similarity(np.zeros(RATE, np.int16), RATE, VISITOR, RATE) == 0.0
    assert similarity(np.zeros(0, np.int16), RATE, VISITOR, RATE) == 0.0
