"""Media figures of a call, next to baresip in the same call.

The door calls a baresip handset through Kamailio and the two talk for ``seconds`` (60 by default),
once in G.711 (PCMA) and once in G.722. Both ends send and receive audio all the time: the door a
1 kHz tone at -30 dBFS, baresip its own sine. Measured in the same call:

* RTP send pacing: mean and standard deviation of the gaps between the door's packets, and the
  drift (packets sent against packets due); baresip's pacing as its packets arrive at the door.
* CPU seconds per minute of call: the door's process against baresip's process.
* SNR of the door's tone as recorded by the handset.

Run through ``scripts/bench --suite media``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench import door_config  # type: ignore[import-not-found]

from intercom.phone import Phone, PhoneOptions
from intercom.sip.events import CallAnswered, CallEnded
from tests.integration.audio_check import read_wav, tone_snr
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio

ROOT = Path(__file__).resolve().parents[1]
FRAME = 0.020
#: A clocked player for baresip (ALSA's null device has no clock and makes it spin).
PLAYER = os.environ.get("BENCH_BARESIP_PLAYER", "aubridge,bench")


def _cpu_of(pid: int) -> float:
    """User plus system CPU seconds of a process and all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def _wait(phone: Phone, kind: type, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = await asyncio.wait_for(phone.events.get(), deadline - time.monotonic())
        except TimeoutError:
            break
        if isinstance(event, kind):
            return event
    raise TimeoutError(f"no {kind.__name__}")


async def one_call(pbx: Kamailio, work: Path, codec: str, seconds: float) -> dict[str, Any]:
    handset = Baresip(
        "621",
        "pw621",
        pbx.host,
        pbx.port,
        work / f"handset-{codec}",
        tone_hz=440,
        sip_trace=False,
        player=PLAYER,
    )
    await asyncio.to_thread(handset.start)
    config = door_config(
        pbx.port,
        call={"max_duration": 3600},
        audio={"codecs": [codec], "input": "tone:1000:-30"},
    )
    phone = Phone(config, PhoneOptions(local_host="127.0.0.1", any_rtp_port=True))
    try:
        await asyncio.to_thread(handset.wait_registered, 10)
        await phone.start()
        if (await phone.wait_registration(10)) is None:
            raise RuntimeError("the door did not register")
        handle = phone.call(["621"])
        await _wait(phone, CallAnswered, 10)
        await asyncio.sleep(1.0)  # settle: jitter buffers filled, resamplers primed
        assert handset._proc is not None
        media = phone.media[handle]
        ours0, theirs0 = time.process_time(), _cpu_of(handset._proc.pid)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        ours = time.process_time() - ours0
        theirs = _cpu_of(handset._proc.pid) - theirs0
        stats = media.stats
        assert stats.started_at is not None
        running = asyncio.get_running_loop().time() - stats.started_at
        due = int(running / FRAME) + 1
        phone.hangup(handle)
        await _wait(phone, CallEnded, 5)
    finally:
        await phone.stop()
        await asyncio.to_thread(handset.stop)
    heard = sorted(p for p in handset.recordings() if p.name.endswith("-dec.wav"))
    snr = None
    if heard:
        samples, rate = read_wav(heard[-1])
        _peak, snr = tone_snr(samples, rate, 1000, skip=1.5)
    await asyncio.to_thread(handset.close)
    return {
        "codec": codec,
        "seconds": round(elapsed, 1),
        "pi_intercom": {
            "send_gap_mean_ms": round(stats.pacing.mean * 1000, 3),
            "send_gap_stdev_ms": round(stats.pacing.stdev * 1000, 3),
            "drift_packets": stats.ticks - due,
            "cpu_s_per_min": round(ours / elapsed * 60, 3),
            "tone_snr_db_at_handset": None if snr is None else round(float(snr), 1),
        },
        "baresip": {
            "send_gap_mean_ms": round(stats.arrival.mean * 1000, 3),
            "send_gap_stdev_ms": round(stats.arrival.stdev * 1000, 3),
            "cpu_s_per_min": round(theirs / elapsed * 60, 3),
        },
        "cpu_ratio_intercom_over_baresip": round(ours / max(theirs, 1e-6), 3),
    }


async def run(seconds: float) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="intercom-bench-media-") as tmp:
        work = Path(tmp)
        pbx = Kamailio({"door": "doorpass", "621": "pw621"}, workdir=work / "pbx", log_level=1)
        pbx.start()
        try:
            calls = [await one_call(pbx, work, codec, seconds) for codec in ("PCMA", "G722")]
        finally:
            pbx.close()
    return {
        "benchmark": "a call in each codec, both ends sending all the time (loopback, UDP)",
        "notes": (
            "baresip's pacing is measured as its packets arrive at the door; its CPU includes "
            "its sine source at 48 kHz stereo and the resampling to the codec rate"
        ),
        "calls": calls,
    }
