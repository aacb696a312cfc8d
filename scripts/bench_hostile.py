"""The door under hostile input, next to baresip under the same load in the same run.

Everything runs on loopback: Kamailio (the PBX, 127.0.0.1), a baresip handset ``621``, baresip
as caller ``620`` (the reference system: Debian's baresip 1.0), and the door in a process of
its own (``bench_door.py``: the daemon's wiring from a generated config), so that CPU and memory
are read for both alike, from ``/proc/PID``. Each figure gets fresh processes. The hostile
datagrams are the fixed mix of ``hostile_mix.py``, sent by a flooder process of its own.

1. **CPU per 1,000 hostile datagrams**, by source: from a stranger (127.0.0.2), which the door
   drops before parsing, and from the PBX's own address (127.0.0.1: a buggy or hijacked PBX,
   whose datagrams reach the parser). The flooder sends the next batch only when the receiver's
   socket queue is empty, so that the kernel drops nothing (checked) and the receiver always
   has work; the CPU is counted until the receiver is back to idle (baresip retransmits its
   refusals for 32 s), and the CPU it used while idle, sampled just before, is subtracted.
   Also: the door's cost of each kind alone from the PBX's address, what came back (answers,
   and their bytes per byte sent: the amplification), and the log lines written.
2. **Send pacing under a flood**: during a call (door to handset through Kamailio), the door's
   SIP port is flooded at increasing rates, half from each source, and the standard deviation of
   the gaps between the door's RTP packets is taken at each rate (as the door's clock sends
   them); then the handset's SIP port, and the gaps between baresip's packets as they arrive at
   the door (kernel timestamps). Reported: each rate's figures, and the highest rate below the
   first whose stdev passes 1 ms (and passes the unflooded stdev plus 1 ms, for a sender whose
   pacing is already past 1 ms without a flood).
3. **RSS** (``VmRSS``) before and after those datagrams, and before, after 100 and after all of
   ``calls`` calls: the door rings the handset, which answers at once, and hangs up as soon as
   the call is answered (about 45 ms a call); then baresip dials the handset through Kamailio
   ``calls`` times and does the same. And each one's RSS at least 35 s after its last call,
   when nothing of the calls may be held any more (the door's SIP tables are printed with it).

The machine is shared
(2 cores): figures vary from run to run; the comparison within one run is what counts. Run
through ``scripts/bench --suite hostile`` (``--datagrams``, ``--calls``, ``--rates``,
``--window``, ``--per-kind`` to shorten it).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml
from hostile_mix import KINDS, PBX, STRANGER, cpu_seconds  # type: ignore[import-not-found]

from intercom import __version__
from tests.peers import terminate_group
from tests.peers.baresip import Baresip, BaresipError
from tests.peers.kamailio import Kamailio
from tests.peers.ports import free_udp_tcp_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
#: A clocked player for baresip (ALSA's null device has no clock and makes it spin).
PLAYER = os.environ.get("BENCH_BARESIP_PLAYER", "aubridge,bench")
#: Flood rates during the call, datagrams a second (the mix averages about 10 KB a datagram).
RATES = (100, 250, 500, 1000, 2000, 5000, 10000, 20000)
PACING_LIMIT_MS = 1.0
#: How long the receiver's idle CPU is sampled before a flood.
IDLE_SAMPLE_S = 2.0
#: After the last call, how long until nothing of it may be held (SIP's 64*T1 is 32 s).
QUIET_S = 35.0


# ------------------------------------------------------------------------------ /proc
def rss_kib(pid: int) -> int:
    """Resident memory of a process (``VmRSS``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------------------ the door
class DoorProcess:
    """``bench_door.py`` as a child process: one JSON command a line, one JSON reply."""

    def __init__(self, pbx: Kamailio, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "intercom.yaml"
        self.log_path = workdir / "door.log"
        self.sip_port = free_udp_tcp_port()
        config = {
            "sip": {
                "server": pbx.host,
                "port": pbx.port,
                "username": "door",
                "password": "doorpass",
                "local_port": self.sip_port,
            },
            "call": {"targets": ["621"], "ring_timeout": 30, "max_duration": 3600},
            "audio": {"input": "tone:1000:-30", "output": "null", "codecs": ["PCMA"]},
            # The forged INVITEs claim to be 620; the real 620 is at the PBX.
            "incoming": {"allow": [f"sip:620@{pbx.host}"]},
            # BENCH_HOSTILE_SIP_TRACE=1 puts the door's SIP trace in door.log (with ``keep``).
            "log": {"level": "info", "sip_trace": bool(os.environ.get("BENCH_HOSTILE_SIP_TRACE"))},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 20.0) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, str(SCRIPTS / "bench_door.py"), str(self.config_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=ROOT,
                start_new_session=True,
            )
        ready = self._read(timeout)
        if not ready.get("ready"):
            raise RuntimeError(f"the door did not start: {ready}\n{self._tail()}")

    def ask(self, op: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self._proc.stdin.flush()
        reply = self._read(timeout)
        if "error" in reply:
            raise RuntimeError(f"door: {op}: {reply['error']}\n{self._tail()}")
        return reply

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"the door did not answer in {timeout} s\n{self._tail()}")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the door exited ({self._proc.poll()})\n{self._tail()}")
        return dict(json.loads(line))

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(8)
        terminate_group(proc)  # type: ignore[arg-type]

    def _tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------ the flooder
def _flooder(port: int, sources: Sequence[str], *args: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPTS / "hostile_mix.py"),
        "127.0.0.1",
        str(port),
        "--sources",
        ",".join(sources),
        *args,
    ]


def flood_all(port: int, sources: Sequence[str], count: int, *args: str) -> dict[str, Any]:
    """Send ``count`` datagrams of the mix, never overrunning the receiver; returns once it
    has read the last one. ``args``: more flooder options."""
    out = subprocess.run(
        _flooder(port, sources, "--count", str(count), "--follow-receiver", *args),
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return dict(json.loads(out.stdout.splitlines()[-1]))


def flood_at(
    port: int, sources: Sequence[str], rate: float, seconds: float, started: Callable[[], None]
) -> dict[str, Any]:
    """Flood at ``rate`` for ``seconds``; ``started`` runs once the flooder sends."""
    proc = subprocess.Popen(
        _flooder(port, sources, "--rate", str(rate), "--seconds", str(seconds)),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        go = proc.stdout.readline()
        if not go.strip():
            raise RuntimeError("the flooder did not start")
        started()
        result = dict(json.loads(proc.stdout.readline()))
    finally:
        proc.wait(30)
    return result


# ------------------------------------------------------------------------------ figure 1 and 3a
def datagram_load(
    pid: int, port: int, count: int, log: Path, per_kind_max: int = 0
) -> dict[str, Any]:
    """CPU per 1,000 datagrams from each source, counted until the receiver is quiet again,
    and RSS before and after them all; with ``per_kind_max``, each kind's own cost from the
    PBX's address too (after the RSS: for a stateless receiver, which the door is)."""
    time.sleep(0.5)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SAMPLE_S)
    idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
    rss_before = rss_kib(pid)
    log_before = _lines(log)
    by_source: dict[str, Any] = {}
    total = 0
    for name, source in (("stranger_127_0_0_2", STRANGER), ("pbx_address_127_0_0_1", PBX)):
        c0, t0 = cpu_seconds(pid), time.monotonic()
        sent = flood_all(port, [source], count // 2)
        flooded = time.monotonic() - t0
        tail = _until_quiet(pid, idle)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pid) - c0 - idle * wall
        if sent["receiver_stalled"]:
            raise RuntimeError(f"the receiver (pid {pid}) stopped reading its SIP socket")
        delivered = sent["sent"] - (sent["receiver_drops"] or 0)
        total += sent["sent"]
        by_source[name] = {
            "datagrams": sent["sent"],
            "kernel_drops": sent["receiver_drops"],
            "wall_s": round(flooded, 2),
            "busy_after_s": round(tail, 1),
            "cpu_s": round(cpu, 3),
            "cpu_s_per_1000_datagrams": round(cpu / max(delivered, 1) * 1000, 4),
            "answers": sent["answers"],
            "answer_bytes_per_byte_received": round(
                sent["answer_bytes"] / max(sent["bytes"], 1), 4
            ),
        }
    rss_after = rss_kib(pid)
    costs = per_kind(pid, port, idle, per_kind_max) if per_kind_max else None
    return {
        "idle_cpu_s_per_s": round(idle, 4),
        **by_source,
        "datagrams_total": total,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_growth_kib": rss_after - rss_before,
        "log_lines_written": _lines(log) - log_before,
        "pbx_address_cpu_ms_per_1000_by_kind": costs,
    }


#: CPU seconds each kind may cost the receiver in the per-kind figure.
PER_KIND_CPU_S = 0.3


def _until_quiet(pid: int, idle: float, most: float = 40.0) -> float:
    """Wait until ``pid`` is back to its idle CPU (within a clock tick over a second): what a
    flood costs includes the work it leaves behind, such as refusals a stateful stack goes on
    retransmitting for 32 s. Returns how long that took."""
    start = time.monotonic()
    tick = 1 / os.sysconf("SC_CLK_TCK")
    while time.monotonic() - start < most:
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - c0 <= idle + tick:
            break
    return time.monotonic() - start


def per_kind(pid: int, port: int, idle: float, most: int) -> dict[str, float]:
    """CPU ms per 1,000 datagrams of each kind alone, from the PBX's address: at most ``most``
    datagrams, and fewer once the receiver has spent :data:`PER_KIND_CPU_S` on them."""
    out = {}
    for name, _ in KINDS:
        c0, t0 = cpu_seconds(pid), time.monotonic()
        sent = flood_all(
            port, [PBX], most, "--kinds", name, "--until-cpu", f"{pid}:{PER_KIND_CPU_S}"
        )
        cpu = cpu_seconds(pid) - c0 - idle * (time.monotonic() - t0)
        delivered = sent["sent"] - (sent["receiver_drops"] or 0)
        out[name] = round(max(cpu, 0.0) / max(delivered, 1) * 1e6, 2)
    return out


# ------------------------------------------------------------------------------ figure 2
def _max_within(rows: list[dict[str, Any]], limit_ms: float) -> int | None:
    """The highest rate below the first whose stdev passes ``limit_ms`` (None: even the first
    does)."""
    best = None
    for row in rows:
        if row["rate_per_s"] == 0:
            continue
        if row["stdev_ms"] > limit_ms:
            break
        best = row["rate_per_s"]
    return best


def _pacing_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    unflooded = rows[0]["stdev_ms"]
    return {
        "max_rate_within_1ms_stdev_per_s": _max_within(rows, PACING_LIMIT_MS),
        "highest_rate_tried_per_s": rows[-1]["rate_per_s"],
        "unflooded_stdev_ms": unflooded,
        # For a sender whose own pacing is already past 1 ms without a flood: what the flood adds.
        "max_rate_within_1ms_of_unflooded_stdev_per_s": _max_within(
            rows, unflooded + PACING_LIMIT_MS
        ),
        "by_rate": rows,
    }


def pacing_under_flood(
    door: DoorProcess, port: int, pid: int, which: str, rates: Sequence[int], window: float
) -> list[dict[str, Any]]:
    """Flood ``port`` at each rate (0: no flood) and read the pacing of ``which`` side's RTP
    (``send``: the door's, ``arrival``: the other end's, as it arrives at the door)."""
    rows = []
    for rate in (0, *rates):
        c0, t0 = cpu_seconds(pid), time.monotonic()
        flood: dict[str, Any] = {}
        if rate == 0:
            door.ask("window")
            time.sleep(window)
        else:
            flood = flood_at(port, [STRANGER, PBX], rate, window, lambda: door.ask("window"))
        pacing = door.ask("pacing")[which]
        cpu = cpu_seconds(pid) - c0
        wall = time.monotonic() - t0
        rows.append(
            {
                "rate_per_s": rate,
                "sent_per_s": flood.get("rate_per_s", 0),
                "kib_per_s": round(flood.get("bytes", 0) / 1024 / window, 1),
                "kernel_drops": flood.get("receiver_drops", 0),
                "stdev_ms": pacing["stdev_ms"],
                "mean_ms": pacing["mean_ms"],
                "p99_ms": pacing["p99_ms"],
                "max_ms": pacing["max_ms"],
                "gaps": pacing["gaps"],
                "flooded_process_cpu_percent": round(cpu / wall * 100, 1),
            }
        )
    return rows


# ------------------------------------------------------------------------------ figure 3b
def _baresip_call(caller: Baresip, uri: str) -> str:
    caller.dial(uri)
    try:
        caller.wait_event("CALL_ESTABLISHED", 10)
    except BaresipError:
        caller.wait_event("CALL_CLOSED", 10)
        return "not_answered"
    caller.hangup()
    caller.wait_event("CALL_CLOSED", 10)
    return "answered_then_local_hangup"


def _errors(path: Path) -> int:
    """ERROR lines (the door's log format) or tracebacks in a log."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return text.count(" ERROR ") + text.count("Traceback (most recent call last)")


def calls_rss(
    pid: int, calls: int, place: Callable[[int], dict[str, int]], log: Path
) -> dict[str, Any]:
    """RSS before, after 100 and after ``calls`` calls placed by ``place(n)`` (n at a time)."""
    first = min(100, calls)
    outcomes: dict[str, int] = {}
    errors = _errors(log)
    lines = _lines(log)
    before = rss_kib(pid)
    t0 = time.monotonic()
    for key, value in place(first).items():
        outcomes[key] = outcomes.get(key, 0) + value
    after_first = rss_kib(pid)
    if calls > first:
        for key, value in place(calls - first).items():
            outcomes[key] = outcomes.get(key, 0) + value
    wall = time.monotonic() - t0
    after = rss_kib(pid)
    return {
        "calls": calls,
        "outcomes": outcomes,
        "wall_s": round(wall, 1),
        "rss_before_kib": before,
        f"rss_after_{first}_calls_kib": after_first,
        f"rss_after_{calls}_calls_kib": after,
        "rss_growth_kib": after - before,
        "log_lines_written": _lines(log) - lines,
        "log_errors_written": _errors(log) - errors,
    }


# ------------------------------------------------------------------------------ the suite
def _door(stack: contextlib.ExitStack, pbx: Kamailio, workdir: Path) -> DoorProcess:
    door = DoorProcess(pbx, workdir)
    stack.callback(door.close)
    door.start()
    return door


def _baresip(stack: contextlib.ExitStack, user: str, pbx: Kamailio, workdir: Path) -> Baresip:
    phone = Baresip(
        user, f"pw{user}", pbx.host, pbx.port, workdir,
        record=False, sip_trace=False, player=PLAYER, codecs=("PCMA",),
    )  # fmt: skip
    stack.callback(phone.close)
    phone.start()
    phone.wait_registered(10)
    return phone


def _pid(phone: Baresip) -> int:
    assert phone._proc is not None
    return phone._proc.pid


def datagram_figures(
    pbx: Kamailio, work: Path, datagrams: int, per_kind: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figures 1 and 3a, on a fresh door and a fresh baresip (registered, idle)."""
    with contextlib.ExitStack() as stack:
        door = _door(stack, pbx, work / "door-datagrams")
        caller = _baresip(stack, "620", pbx, work / "baresip-datagrams")
        ours = datagram_load(door.pid, door.sip_port, datagrams, door.log_path, per_kind)
        ours["sip_core_counters"] = door.ask("counters")
        theirs = datagram_load(_pid(caller), caller.sip_port, datagrams, caller.log_path)
        theirs["pbx_address_cpu_ms_per_1000_by_kind"] = (
            "not measured: baresip retransmits its refusals for 32 s, so a short run of one "
            "kind cannot be told from the retransmissions of the kinds before it"
        )
        return ours, theirs


def pacing_figures(
    pbx: Kamailio, handset: Baresip, work: Path, rates: Sequence[int], window: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Figure 2: one call from a fresh door to the handset, each end's SIP port flooded."""
    with contextlib.ExitStack() as stack:
        door = _door(stack, pbx, work / "door-pacing")
        rung = door.ask("ring")
        if not rung["answered"]:
            raise RuntimeError(f"the handset did not answer the door: {rung}")
        time.sleep(1.0)  # settle: jitter buffers filled, both clocks running
        ours = pacing_under_flood(door, door.sip_port, door.pid, "send", rates, window)
        theirs = pacing_under_flood(door, handset.sip_port, _pid(handset), "arrival", rates, window)
        door.ask("hangup")
        return ours, theirs


def call_figures(pbx: Kamailio, work: Path, calls: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figure 3b: ``calls`` calls to the handset from a fresh door, then a fresh baresip; and
    each one's RSS once at least :data:`QUIET_S` have passed since its last call (what it
    still holds when nothing goes on: the door keeps each ended dialog 32 s). The door waits
    out baresip's calls, so its quiet time is longer."""
    target = f"sip:621@{pbx.host}:{pbx.port}"
    with contextlib.ExitStack() as stack:
        door = _door(stack, pbx, work / "door-calls")
        ours = calls_rss(
            door.pid,
            calls,
            lambda n: door.ask("calls", timeout=30 + n, n=n)["outcomes"],
            door.log_path,
        )
        ours["sip_core_counters"] = door.ask("counters")
        door_done = time.monotonic()
        caller = _baresip(stack, "620", pbx, work / "baresip-calls")

        def dial(n: int) -> dict[str, int]:
            out: dict[str, int] = {}
            for _ in range(n):
                key = _baresip_call(caller, target)
                out[key] = out.get(key, 0) + 1
            return out

        theirs = calls_rss(_pid(caller), calls, dial, caller.log_path)
        caller_done = time.monotonic()
        for pid, done, figures in (
            (door.pid, door_done, ours),
            (_pid(caller), caller_done, theirs),
        ):
            time.sleep(max(0.0, done + QUIET_S - time.monotonic()))
            figures["quiet_s"] = round(time.monotonic() - done, 1)
            figures["rss_after_quiet_kib"] = rss_kib(pid)
        ours["sip_core_counters_after_quiet"] = door.ask("counters")
    return ours, theirs


def run(
    datagrams: int = 100_000,
    calls: int = 1000,
    rates: Sequence[int] | None = None,
    window: float = 3.0,
    per_kind: int = 5000,
    progress: IO[str] | None = sys.stderr,
    keep: Path | None = None,
) -> dict[str, Any]:
    """The whole suite; ``keep``: a directory to leave the logs and configs in. Each figure
    gets processes of its own, so that none is measured on what an earlier one left.
    ``rates``: :data:`RATES` unless given."""
    rates = RATES if rates is None else tuple(sorted(rates))

    def say(text: str) -> None:
        if progress is not None:
            print(f"bench hostile: {text}", file=progress, flush=True)

    with contextlib.ExitStack() as stack:
        if keep is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hostile-")))
        else:
            work = keep
            work.mkdir(parents=True, exist_ok=True)
        pbx = Kamailio(
            {"door": "doorpass", "620": "pw620", "621": "pw621"},
            workdir=work / "pbx",
            log_level=1,
        )
        stack.callback(pbx.close)
        pbx.start()
        handset = _baresip(stack, "621", pbx, work / "handset")

        say(f"{datagrams} datagrams to the door, then to baresip")
        ours, theirs = datagram_figures(pbx, work, datagrams, per_kind)
        say(f"pacing during a call, flooded at {', '.join(map(str, rates))} datagrams/s")
        door_rows, baresip_rows = pacing_figures(pbx, handset, work, rates, window)
        say(f"{calls} calls from the door, then from baresip")
        ours_calls, theirs_calls = call_figures(pbx, work, calls)
    return {
        "benchmark": "hostile SIP datagrams and many calls, the door next to baresip "
        "(Kamailio 5.6, loopback, UDP)",
        "mix": [name for name, _ in KINDS],
        "pi_intercom": {
            "version": __version__,
            "hostile_datagrams": ours,
            "pacing_under_flood": _pacing_summary(door_rows),
            "many_calls": ours_calls,
        },
        "baresip": {
            "version": "1.0 (Debian)",
            "hostile_datagrams": theirs,
            "pacing_under_flood": _pacing_summary(baresip_rows),
            "many_calls": theirs_calls,
        },
        "notes": NOTES,
    }


NOTES = (
    "CPU: utime+stime from /proc/PID/stat of the receiving process, its idle CPU (sampled 2 s "
    "before) subtracted, per 1,000 datagrams of the mix delivered; the flooder, a process of "
    "its own, sends the next batch only when the receiver's socket queue is empty, so kernel "
    "drops stay 0; counted until the receiver is back to idle (busy_after_s), so baresip's "
    "retransmitted refusals are in. baresip has no notion of a stranger: both sources reach "
    "its parser. Answers are counted until 0.1 s after the last datagram. Every "
    "request is addressed to sip:door@..., so baresip refuses the INVITEs (404) rather than "
    "ringing. The door's by_kind: each kind alone from 127.0.0.1, until it has cost 0.3 CPU s "
    "or 5,000 datagrams. Pacing: stdev of the gaps between RTP packets over each window, the "
    "flood half from 127.0.0.2 and half from 127.0.0.1; the door's as its 20 ms clock sends them, "
    "baresip's as they arrive at the door (kernel timestamps). RSS: VmRSS from "
    "/proc/PID/status. Calls: through Kamailio (407 challenge), the handset answers at once, "
    "the caller hangs up as soon as the call is answered. A shared 2-core machine: compare the two "
    "systems within one run."
)
