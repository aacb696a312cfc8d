"""The first five minutes, timed: the demo and the doctor, next to baresip's own first step.

* ``demo``: ``intercom demo --once`` as a newcomer runs it (a fresh process each time), with the
  machine's mosquitto and with the embedded broker: the wall time, and the time from the process
  start to the first INVITE on its SIP ladder (how long a newcomer looks at a blank terminal).
* ``doctor``: ``intercom doctor`` with a good config against Kamailio (401 challenge) and
  mosquitto: the wall time until every check is known.
* ``baresip``: the reference for the doctor: from starting baresip to its registration with the
  same Kamailio, which is all a newcomer learns from a softphone's first minute.

Run through ``scripts/bench --suite first``.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[1]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _demo_once(broker: str) -> tuple[float, float | None, bool]:
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "intercom", "demo", "--once", "--broker", broker],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    to_invite = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if to_invite is None and "── INVITE" in line:
            to_invite = time.monotonic() - start
    ok = proc.wait(60) == 0
    return time.monotonic() - start, to_invite, ok


def _demo(broker: str, runs: int) -> dict[str, Any]:
    results = [_demo_once(broker) for _ in range(runs)]
    return {
        "runs": runs,
        "ok": sum(ok for _, _, ok in results),
        "wall_s_median": _median([wall for wall, _, _ in results]),
        "start_to_first_invite_s_median": _median([t for _, t, _ in results if t is not None]),
    }


def _doctor_once(config: Path) -> tuple[float, bool]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "intercom", "doctor", "-c", str(config), "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return time.monotonic() - start, result.returncode == 0


def _baresip_once(pbx: Kamailio, workdir: Path) -> float:
    phone = Baresip("620", "pw620", pbx.host, pbx.port, workdir, record=False, sip_trace=False)
    start = time.monotonic()
    try:
        phone.start()
        phone.wait_registered(10)
        return time.monotonic() - start
    finally:
        phone.close()


async def run(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="intercom-bench-first-") as tmp:
        work = Path(tmp)
        pbx = Kamailio({"door": "doorpass", "620": "pw620"}, workdir=work / "pbx", log_level=1)
        broker = Mosquitto(work / "mqtt")
        pbx.start()
        broker.start()
        try:
            config = work / "intercom.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "sip": {
                            "server": pbx.host,
                            "port": pbx.port,
                            "username": "door",
                            "password": "doorpass",
                            "local_port": 0,
                        },
                        "audio": {"input": "tone:1000", "output": "null"},
                        "mqtt": {"host": broker.host, "port": broker.port},
                    }
                )
            )
            doctor: list[tuple[float, bool]] = []
            baresip: list[float] = []
            for i in range(runs):  # interleaved, so drift of the machine hits both alike
                doctor.append(await asyncio.to_thread(_doctor_once, config))
                baresip.append(await asyncio.to_thread(_baresip_once, pbx, work / f"b{i}"))
        finally:
            broker.close()
            pbx.close()
    demo_runs = max(1, runs // 2)
    return {
        "benchmark": "the first five minutes: the demo, and the doctor next to baresip",
        "demo_with_mosquitto": _demo("mosquitto", demo_runs),
        "demo_with_embedded_broker": _demo("embedded", demo_runs),
        "doctor": {
            "runs": runs,
            "ok": sum(ok for _, ok in doctor),
            "wall_s_median": _median([wall for wall, _ in doctor]),
        },
        "baresip_start_to_registered_s_median": _median(baresip),
    }
