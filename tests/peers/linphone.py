"""linphonec as a second, independent SIP stack for a handset.

baresip alone would let a bug that two stacks share go unnoticed (and baresip has quirks of its
own, such as its `486 Rejected`). liblinphone differs in its SDP, its digest handling and its
contacts, so a call that also works with linphonec is a call that works with more than one phone.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.peers import PeerProcess, require_program, terminate_group
from tests.peers.ports import LOOPBACK, free_udp_tcp_port

LINPHONEC = "linphonec"

# What linphonec 5.1 prints on stdout, and the kind of event each line means.
_LINE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "incoming",
        re.compile(r"Receiving new incoming call from (?P<peer>\S+), assigned id (?P<id>\d+)"),
    ),
    ("established", re.compile(r"Call (?P<id>\d+) with (?P<peer>\S+) connected\.")),
    ("media", re.compile(r"Media streams established with (?P<peer>\S+) for call (?P<id>\d+)")),
    ("ended", re.compile(r"Call (?P<id>\d+) with (?P<peer>\S+) ended \((?P<reason>[^)]*)\)")),
    ("dtmf", re.compile(r"Receiving tone (?P<digit>\S) from (?P<peer>\S+)")),
    ("registered", re.compile(r"registered, identity=")),
    ("unregistered", re.compile(r"registered=(?P<value>-?\d+)")),
)


class LinphonecError(RuntimeError):
    """linphonec did not start or an expected line never appeared; carries the output tail."""


@dataclass(frozen=True)
class LinphoneEvent:
    """One meaningful line of linphonec output."""

    kind: str
    fields: dict[str, str]
    line: str


class Linphonec(PeerProcess):
    """A linphonec handset registered as `user`, answering automatically by default.

    It runs with its config, databases and HOME in `workdir` (liblinphone never opens its SIP
    port without writable storage), on a free UDP port, without GRUU (its GRUU contact has no
    port, so in-dialog requests would go to 5060), and in file mode instead of a sound card: it
    sends a sine tone from a WAV and records what it hears to `recording`.
    """

    def __init__(
        self,
        user: str,
        password: str,
        registrar_host: str,
        registrar_port: int,
        workdir: Path,
        *,
        auto_answer: bool = True,
        tone_hz: int = 440,
        record: bool = True,
        dtmf_info: bool = False,
    ) -> None:
        self.user = user
        # linphonec can send DTMF as SIP INFO, the one method baresip cannot produce.
        self.dtmf_info = dtmf_info
        self.password = password
        self.registrar_host = registrar_host
        self.registrar_port = registrar_port
        self.auto_answer = auto_answer
        self.tone_hz = tone_hz
        self.workdir = Path(workdir)
        self.rc_path = self.workdir / "linphonerc"
        self.log_path = self.workdir / "liblinphone.log"
        self.transcript_path = self.workdir / "linphonec.out"
        self.tone_path = self.workdir / "tone.wav"
        self.recording: Path | None = self.workdir / "recording.wav" if record else None
        self.sip_port = free_udp_tcp_port()

        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._events: list[LinphoneEvent] = []
        self._consumed: set[int] = set()
        self._write_lock = threading.Lock()
        self._eof = False

    @property
    def aor(self) -> str:
        """The handset's address of record on the PBX."""
        return f"sip:{self.user}@{self.registrar_host}:{self.registrar_port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Write the config and start linphonec; commands go to its stdin, events come on stdout."""
        if self._proc is not None:
            return
        program = require_program(LINPHONEC)
        self._write_files()
        command = [program, "-c", str(self.rc_path), "-d", "6", "-l", str(self.log_path)]
        if self.auto_answer:
            command.insert(1, "-a")
        stdbuf = shutil.which("stdbuf")
        if stdbuf:
            # linphonec prints through stdio; unbuffered lines let us react to them at once.
            command = [stdbuf, "-oL", "-eL", *command]
        # HOME points into the workdir, so that every default path liblinphone derives from it
        # (zrtp cache, call history, history file) is private and writable.
        env = dict(os.environ, HOME=str(self.workdir))
        env.pop("DISPLAY", None)
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._eof = False
        self._reader = threading.Thread(
            target=self._read_loop,
            args=(self._proc.stdout,),
            name=f"linphonec-{self.user}",
            daemon=True,
        )
        self._reader.start()
        self.command("soundcard use files")
        self.command(f"play {self.tone_path}")
        if self.recording is not None:
            # Only between calls: linphonec 5.1 crashes on `record` while a call is ringing.
            self.command(f"record {self.recording}")

    def stop(self, timeout: float = 3.0) -> None:
        """Ask linphonec to quit (it un-registers), then kill its process group if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            proc.stdin.flush()
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        if proc.poll() is not None and self._reader is not None:
            self._reader.join(timeout=2)  # let it read the last lines before the pipe is closed
        terminate_group(proc)
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    # -- commands ----------------------------------------------------------------------------

    def command(self, line: str) -> None:
        """Type one command line into linphonec (answers appear on stdout, see `output()`)."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise LinphonecError(f"linphonec {self.user} is not running\n{self._tail()}")
        with self._write_lock:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()

    def answer(self) -> None:
        """Answer the ringing call (when started with auto_answer=False)."""
        self.command("answer")

    def terminate(self) -> None:
        """Hang up the current call."""
        self.command("terminate")

    def call(self, uri: str) -> None:
        """Call `uri` through the PBX."""
        self.command(f"call {uri}")

    # -- waiting -----------------------------------------------------------------------------

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Poll `status register` until linphonec reports its registration as done."""
        deadline = time.monotonic() + timeout
        while True:
            self.command("status register")
            with self._cond:
                if self._take("registered", 0.3) is not None:
                    return
            if time.monotonic() >= deadline:
                raise LinphonecError(
                    f"linphonec {self.user} did not register in {timeout} s\n{self._tail()}"
                )

    def wait_incoming(self, timeout: float = 10.0) -> LinphoneEvent:
        """Wait for `Receiving new incoming call from ...`."""
        return self.wait_event("incoming", timeout)

    def wait_established(self, timeout: float = 10.0) -> LinphoneEvent:
        """Wait for `Call N with ... connected.` (the call was answered and acknowledged)."""
        return self.wait_event("established", timeout)

    def wait_ended(self, timeout: float = 10.0) -> LinphoneEvent:
        """Wait for `Call N with ... ended (reason)`."""
        return self.wait_event("ended", timeout)

    def wait_event(self, kind: str, timeout: float = 10.0) -> LinphoneEvent:
        """Return the oldest event of `kind` not returned before; each event is handed out once."""
        with self._cond:
            event = self._take(kind, timeout)
        if event is None:
            raise LinphonecError(
                f"linphonec {self.user}: no {kind!r} line in {timeout} s\n{self._tail()}"
            )
        return event

    def dtmf_received(self) -> str:
        """The DTMF digits linphonec reported receiving, in order."""
        with self._cond:
            return "".join(ev.fields["digit"] for ev in self._events if ev.kind == "dtmf")

    def output(self) -> str:
        """Everything linphonec printed on stdout so far."""
        with self._cond:
            return "\n".join(self._lines)

    def log_text(self) -> str:
        """The stdout transcript followed by the verbose liblinphone log, for failing tests."""
        try:
            log = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            log = ""
        return f"--- linphonec stdout ---\n{self.output()}\n--- liblinphone log ---\n{log}"

    # -- internals ---------------------------------------------------------------------------

    def _take(self, kind: str, timeout: float) -> LinphoneEvent | None:
        """With the condition held: pop the oldest unconsumed event of `kind`, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self._events):
                if index not in self._consumed and event.kind == kind:
                    self._consumed.add(index)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._eof:
                return None
            self._cond.wait(remaining)

    def _read_loop(self, stream: IO[bytes]) -> None:
        with self.transcript_path.open("w") as transcript:
            try:
                for raw in iter(stream.readline, b""):
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    transcript.write(line + "\n")
                    transcript.flush()
                    with self._cond:
                        self._lines.append(line)
                        for kind, pattern in _LINE_PATTERNS:
                            match = pattern.search(line)
                            if match:
                                self._events.append(LinphoneEvent(kind, match.groupdict(), line))
                        self._cond.notify_all()
            except (OSError, ValueError):  # the pipe was closed under us at teardown
                pass
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _tail(self, lines: int = 40) -> str:
        with self._cond:
            return "\n".join(self._lines[-lines:])

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        _write_sine_wav(self.tone_path, self.tone_hz, seconds=30.0)
        registrar = f"{self.registrar_host}:{self.registrar_port}"
        codecs = []
        # Only the codecs the intercom speaks; everything liblinphone knows otherwise is off, so
        # the answer can only pick PCMU, PCMA or G722.
        for index, (mime, rate, enabled) in enumerate(
            (
                ("PCMU", 8000, 1),
                ("PCMA", 8000, 1),
                ("G722", 8000, 1),
                ("opus", 48000, 0),
                ("speex", 16000, 0),
                ("speex", 8000, 0),
                ("speex", 32000, 0),
                ("GSM", 8000, 0),
                ("G729", 8000, 0),
                ("iLBC", 8000, 0),
            )
        ):
            channels = 2 if mime == "opus" else 1
            codecs.append(
                f"[audio_codec_{index}]\nmime={mime}\nrate={rate}\nchannels={channels}\n"
                f"enabled={enabled}\n"
            )
        rc = f"""# Written by tests/peers/linphone.py for one test; do not edit.
[sip]
sip_port={self.sip_port}
sip_tcp_port=0
sip_tls_port=0
bind_address={LOOPBACK}
contact=sip:{self.user}@{LOOPBACK}:{self.sip_port}
# No "gruu": a GRUU contact carries no port, and in-dialog requests would go to 5060.
supported=replaces, outbound
register_only_when_network_is_up=0
register_only_when_upnp_is_ok=0
use_ipv6=0
default_proxy=0
verify_server_certs=0
verify_server_cn=0
media_encryption=none
use_info={1 if self.dtmf_info else 0}
use_rfc2833={0 if self.dtmf_info else 1}
inc_timeout=60
guess_hostname=0

[net]
firewall_policy=0
mtu=1300

[rtp]
audio_rtp_port=20000-39999
video_rtp_port=40000-49999
text_rtp_port=50000-59999
nortp_timeout=30

[sound]
echocancellation=0

[video]
capture=0
display=0
automatically_initiate=0
automatically_accept=0

[storage]
uri={self.workdir}/linphone.db
call_logs_db_uri={self.workdir}/call-history.db

[misc]
zrtp_secrets_file={self.workdir}/zrtp-secrets.db
user_certificates_path={self.workdir}

[proxy_0]
reg_proxy=<sip:{registrar};transport=udp>
reg_identity=<sip:{self.user}@{registrar}>
reg_expires=600
reg_sendregister=1
publish=0
avpf=0
quality_reporting_enabled=0

[auth_info_0]
username={self.user}
passwd={self.password}

{"".join(codecs)}"""
        self.rc_path.write_text(rc)


def _write_sine_wav(path: Path, hz: int, seconds: float, rate: int = 8000) -> None:
    """A mono 16-bit sine WAV, linphonec's sound source in file mode."""
    frames = int(rate * seconds)
    samples = (int(12000 * math.sin(2 * math.pi * hz * n / rate)) for n in range(frames))
    data = b"".join(struct.pack("<h", sample) for sample in samples)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data)
