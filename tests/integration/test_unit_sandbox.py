"""The systemd unit's sandbox, checked against what the door really does, without systemd.

There is no systemd to run the unit under here (and none in CI), so the door is run the other
way round: the demo (SIP, RTP, G.722, soxr, numpy, paho, gpiozero's mock pins), the daemon
(``intercom run``: sd_notify, the watchdog thread, signals, the config and name lookups) and
PyAudio on ALSA (PortAudio's ALSA host API, ALSA plugins, a JACK-clocked device; see
tests/integration/test_pyaudio_alsa.py) run under ``strace -f``, and what they did is compared
with what config/systemd/pi-intercom.service allows:

* every system call is in the unit's ``SystemCallFilter=`` (sets expanded by
  ``systemd-analyze syscall-filter``, the same tables systemd builds the filter from);
* no mapping is made writable and executable, and no ``mprotect`` adds execute rights
  (``MemoryDenyWriteExecute=``: libffi closures, a JIT or an executable stack would);
* sockets are only of the ``RestrictAddressFamilies=`` families;
* ``/proc``: no other process's directory (``ProtectProc=invisible``), and no non-process file
  if the unit says ``ProcSubset=pid``;
* ``/dev``: only the pseudo devices, ALSA, the GPIO chips and shared memory (``DevicePolicy=``);
* peaks of memory, threads and file descriptors stay well inside ``MemoryMax=``, ``TasksMax=``
  and ``LimitNOFILE=``.

lgpio cannot run without a GPIO chip; what it does on a Pi (ioctls on /dev/gpiochip*, a thread,
a FIFO made with mknodat in its working directory) is in the @system-service set, see the
decision entry for the unit.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.test_pyaudio_alsa import AlsaBench, require_audio_stack
from tests.peers.fixtures import in_ci

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "systemd" / "pi-intercom.service"

_CALL = re.compile(r"^(\d+)\s+(?:(\w+)\(|<\.\.\. (\w+) resumed>)")
_PATH = re.compile(
    r'^\d+\s+(?:openat|open|newfstatat|statx|access|faccessat2?|readlink)\(.*?"(/[^"]*)"'
)
_OPENED = re.compile(r'^\d+\s+(?:openat|open)\(.*?"(/[^"]*)".*\)\s+=\s+\d+')
_PROC_OWN = re.compile(r"^/proc/(self|thread-self)(/|$)")
_PROC_PID = re.compile(r"^/proc/(\d+)(/|$)")
#: What DevicePolicy=closed allows without DeviceAllow=, and what the unit adds (ALSA's
#: /dev/aloadC* ask the kernel to load a card's driver: char-alsa devices too).
_DEVICES_OK = re.compile(
    r"^/dev/(null|zero|full|random|urandom|tty|ptmx|pts/.*|shm(/.*)?|snd(/.*)?|aloadC\d+"
    r"|aloadSEQ|gpiochip\d+|gpiomem\d*)$"
)


def require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        message = f"needs {', '.join(missing)} (scripts/test installs them)"
        if in_ci():
            pytest.fail(f"CI: {message}", pytrace=False)
        pytest.skip(message)


# -- what the unit allows -----------------------------------------------------------------------
def unit_values(key: str) -> list[str]:
    values = []
    for raw in UNIT.read_text().splitlines():
        name, sep, value = raw.strip().partition("=")
        if sep and not raw.lstrip().startswith("#") and name == key:
            values.append(value.strip())
    return values


def syscall_sets() -> dict[str, list[str]]:
    """Each @set of this systemd and its members (names and nested @sets)."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    sets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = sets.setdefault(line.strip(), [])
        elif not line.strip():
            current = None
        elif current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
    return sets


def expand(names: list[str], sets: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= expand(sets[name], sets) if name.startswith("@") else {name}
    return found


def allowed_syscalls() -> set[str]:
    """SystemCallFilter= as systemd reads it: the first line an allow list, then each later
    line adds (or, with ~, removes) in order."""
    sets = syscall_sets()
    lines = unit_values("SystemCallFilter")
    assert lines and not lines[0].startswith("~"), "the filter must be an allow list"
    allowed: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        names = expand(line.lstrip("~").split(), sets)
        allowed = allowed - names if deny else allowed | names
    return allowed


# -- running things under strace ----------------------------------------------------------------
@dataclass
class Peaks:
    rss_kb: int = 0
    threads: int = 0
    fds: int = 0


@dataclass
class Trace:
    name: str
    lines: list[str] = field(default_factory=list)
    peaks: Peaks = field(default_factory=Peaks)

    @property
    def pids(self) -> set[str]:
        return {m.group(1) for line in self.lines if (m := _CALL.match(line))}

    def syscalls(self) -> set[str]:
        return {m.group(2) or m.group(3) for line in self.lines if (m := _CALL.match(line))}

    def paths(self) -> set[str]:
        """Every path looked up, found or not."""
        return {m.group(1) for line in self.lines if (m := _PATH.match(line))}

    def opened(self) -> set[str]:
        """Every path opened (the ones that did not exist make no difference to a sandbox)."""
        return {m.group(1) for line in self.lines if (m := _OPENED.match(line))}


def _descendants(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    found += [int(child), *_descendants(int(child))]
    except OSError:
        pass
    return found


def _sample(pid: int, peaks: Peaks) -> None:
    """The traced programs' peaks (not strace's own)."""
    for child in _descendants(pid):
        try:
            status = Path(f"/proc/{child}/status").read_text()
            fds = len(os.listdir(f"/proc/{child}/fd"))
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "RssAnon" not in fields:  # exiting: its memory is gone already
            continue
        # Shared memory (JACK's, here) is charged to the cgroup of the process that made it.
        rss = int(fields["RssAnon"].split()[0]) + int(fields["RssFile"].split()[0])
        peaks.rss_kb = max(peaks.rss_kb, rss)
        peaks.threads = max(peaks.threads, int(fields["Threads"]))
        peaks.fds = max(peaks.fds, fds)


class Traced:
    """One program under ``strace -f``, its peaks sampled from a thread."""

    def __init__(self, name: str, out: Path, argv: list[str], env: dict[str, str]) -> None:
        self.trace = Trace(name)
        self.out = out / f"{name}.strace"
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-s", "256", "-o", str(self.out), *argv],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self.proc.poll() is None:
            _sample(self.proc.pid, self.trace.peaks)
            time.sleep(0.05)

    def tracee(self) -> int:
        children = _descendants(self.proc.pid)
        assert children, "strace started nothing"
        return children[0]

    def wait(self, timeout: float = 90) -> Trace:
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
        self._sampler.join(5)
        assert self.proc.returncode == 0, (
            f"{self.trace.name} exited {self.proc.returncode}\n{stdout[-2000:]}\n{stderr[-3000:]}"
        )
        self.trace.lines = self.out.read_text(errors="replace").splitlines()
        return self.trace


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def trace_demo(out: Path) -> Trace:
    # The embedded broker keeps everything in the one process (mosquitto would be a program of
    # its own, not the door's); its system calls count too, which is only stricter.
    argv = [sys.executable, "-m", "intercom", "demo", "--once", "--broker", "embedded"]
    return Traced("demo", out, argv, _env()).wait()


def trace_daemon(out: Path) -> Trace:
    config = out / "intercom.yaml"
    (out / "sip-password").write_text("not-used\n")
    config.write_text(
        "sip: {server: localhost, port: 9, username: door, password_file: sip-password,\n"
        "      register: false, local_port: 0}\n"
        "audio: {input: 'tone:1000', output: 'null'}\n"
        "doorbell: {pin: 17}\n"
        "door: {pin: 23, dtmf_code: '4711081'}\n"
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(out / "notify"))
    notify.settimeout(30)
    env = _env(
        NOTIFY_SOCKET=str(out / "notify"),
        WATCHDOG_USEC="1000000",
        GPIOZERO_PIN_FACTORY="mock",
        LG_WD=str(out),
    )
    argv = [sys.executable, "-m", "intercom", "run", "-c", str(config)]
    traced = Traced("daemon", out, argv, env)
    try:
        got = []
        while b"WATCHDOG=1" not in got:  # started, and the watchdog thread pinged once
            got.append(notify.recv(4096))
        assert b"READY=1" in got
        os.kill(traced.tracee(), signal.SIGTERM)  # as systemctl stop does
        return traced.wait()
    finally:
        notify.close()
        if traced.proc.poll() is None:
            traced.proc.kill()


def trace_pyaudio(out: Path) -> Trace:
    bench = AlsaBench(out, "intercom-sandbox")
    bench.start()
    try:
        merged = Trace("pyaudio")
        child = [sys.executable, "-m", "tests.integration.test_pyaudio_alsa"]
        for name, args in (
            ("list", ["list"]),
            ("play", ["play", "intercom_test_out48", "1000", "0.5"]),  # resampled by soxr
            ("record", ["record", "intercom_test_in", "0.5", str(out / "heard.raw")]),
        ):
            trace = Traced(f"pyaudio-{name}", out, [*child, *args], bench.env()).wait()
            merged.lines += trace.lines
            for attr in ("rss_kb", "threads", "fds"):
                setattr(
                    merged.peaks,
                    attr,
                    max(getattr(merged.peaks, attr), getattr(trace.peaks, attr)),
                )
        return merged
    finally:
        bench.stop()


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Trace]]:
    require("strace", "systemd-analyze")
    require_audio_stack()
    out = tmp_path_factory.mktemp("sandbox")
    yield [trace_demo(out), trace_daemon(out), trace_pyaudio(out)]


# -- the checks ---------------------------------------------------------------------------------
def test_the_filter_is_what_systemd_analyze_rates(traces: list[Trace]) -> None:
    allowed = allowed_syscalls()
    assert {"read", "epoll_wait", "sendto", "clone3", "mbind", "sched_setscheduler"} <= allowed
    assert not {"mount", "reboot", "setuid", "setrlimit", "setpriority", "ptrace"} & allowed


def test_every_system_call_is_allowed_by_the_unit(traces: list[Trace]) -> None:
    allowed = allowed_syscalls()
    for trace in traces:
        assert trace.syscalls() > {"openat", "mmap", "futex"}, trace.name  # the trace worked
        outside = trace.syscalls() - allowed
        assert not outside, f"{trace.name} uses {sorted(outside)}, which the unit forbids"


def test_no_memory_is_made_writable_and_executable(traces: list[Trace]) -> None:
    assert unit_values("MemoryDenyWriteExecute") == ["yes"]
    for trace in traces:
        wx = [
            line
            for line in trace.lines
            if re.search(r"\b(mmap|mmap2)\(.*PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE", line)
            or re.search(r"\b(pkey_)?mprotect\([^)]*PROT_EXEC", line)
            or re.search(r"\bshmat\(.*SHM_EXEC", line)
        ]
        assert not wx, f"{trace.name}: {wx[:5]}"


def test_sockets_are_of_the_allowed_families(traces: list[Trace]) -> None:
    allowed = set(unit_values("RestrictAddressFamilies")[0].split())
    for trace in traces:
        used = set(re.findall(r"\bsocket\((AF_\w+)", "\n".join(trace.lines)))
        assert "AF_INET" in used or trace.name == "pyaudio"
        assert used <= allowed, f"{trace.name}: {sorted(used - allowed)}"


def test_proc_holds_nothing_the_unit_hides(traces: list[Trace]) -> None:
    subset_pid = unit_values("ProcSubset") == ["pid"]
    assert unit_values("ProtectProc") == ["invisible"]
    for trace in traces:
        proc = sorted(p for p in trace.paths() if p.startswith("/proc/"))
        others = [p for p in proc if (m := _PROC_PID.match(p)) and m.group(1) not in trace.pids]
        assert not others, f"{trace.name} looks at other processes: {others}"
        if subset_pid:
            system = [p for p in proc if not _PROC_OWN.match(p) and not _PROC_PID.match(p)]
            assert not system, f"{trace.name} reads {system}, hidden by ProcSubset=pid"


def test_only_the_allowed_devices_are_opened(traces: list[Trace]) -> None:
    assert unit_values("DevicePolicy") == ["closed"]
    for trace in traces:
        devices = sorted(p for p in trace.opened() if p.startswith("/dev/"))
        assert devices or trace.name != "pyaudio"  # JACK's shared memory at least
        assert not [d for d in devices if not _DEVICES_OK.match(d)], devices


def _bytes(value: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def test_limits_leave_room_above_what_the_door_uses(traces: list[Trace]) -> None:
    memory_max = _bytes(unit_values("MemoryMax")[0])
    tasks_max = int(unit_values("TasksMax")[0])
    nofile = int(unit_values("LimitNOFILE")[0])
    for trace in traces:
        peaks = trace.peaks
        assert peaks.rss_kb > 10_000, trace.name  # sampled at all
        # At least three times the memory, twice the threads (a Pi 4 has twice the cores, so
        # OpenBLAS and the resolver start more), ten times the descriptors (for TCP peers).
        assert peaks.rss_kb * 1024 * 3 <= memory_max, (trace.name, peaks)
        assert peaks.threads * 2 <= tasks_max, (trace.name, peaks)
        assert peaks.fds * 10 <= nofile, (trace.name, peaks)
