"""baresip as a handset: a real, independent SIP stack that registers with the test PBX.

The intercom rings handsets, is called by them and exchanges DTMF and audio with them. baresip runs
headless with its own config dir, answers, rejects or ignores calls as told, sends a sine tone,
records what it hears, and is driven over its `ctrl_tcp` JSON interface.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.peers import PeerProcess, require_program, terminate_group
from tests.peers.ports import LOOPBACK, free_udp_tcp_port

BARESIP = "baresip"
MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules")

AnswerMode = Literal["auto", "manual", "busy"]

# baresip 1.0 keeps the sndfile recording path in a 128-byte buffer together with the file name
# (`dump-YYYY-MM-DD-HH-MM-SS-dec.wav`, 32 bytes); longer paths silently record nothing.
_MAX_SND_PATH = 90

# Short codec names and the `name/srate/channels` baresip's audio_codecs needs (G722's sample
# rate is 16 kHz even though its RTP clock says 8000).
_CODEC_SPECS = {"PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1", "G722": "G722/16000/1"}

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# A `reginfo` line: `> sip:620@127.0.0.1:5080   OK  pbx Expires 600s` (or ERR, or zzz).
_REGSTATUS_RE = re.compile(r"^>?\s*sip:\S+\s+(OK|ERR|zzz|\d{3})\b", re.MULTILINE)


class BaresipError(RuntimeError):
    """baresip did not start, did not answer a command, or an expected event never came."""


@dataclass
class CallInfo:
    """What the handset saw of one call, built from the ctrl_tcp events of that call id."""

    id: str
    direction: str
    peeruri: str
    events: list[str] = field(default_factory=list)
    established: bool = False
    closed: bool = False
    close_reason: str = ""
    rejected: bool = False

    @property
    def cancelled(self) -> bool:
        """An incoming call that the caller gave up (CANCEL) before it was answered.

        That is: closed, never established, and not rejected by this handset (busy mode or a
        `hangup()` while it rang).
        """
        return (
            self.direction == "incoming"
            and self.closed
            and not self.established
            and not self.rejected
        )


class Baresip(PeerProcess):
    """One baresip handset registered as `user` with the PBX at `registrar_host:registrar_port`.

    `answer` decides what happens to incoming calls:
      * "auto": accepted after `answer_delay` seconds (the handset rings first, so the caller
        sees 180 Ringing and then 200 OK);
      * "manual": rings until `accept()` or `hangup()` is called, or the caller cancels;
      * "busy": rejected at once; baresip 1.0 answers `486 Rejected` (code 486, its own reason).
    """

    def __init__(
        self,
        user: str,
        password: str,
        registrar_host: str,
        registrar_port: int,
        workdir: Path,
        *,
        answer: AnswerMode = "auto",
        answer_delay: float = 0.0,
        tone_hz: int = 440,
        record: bool = True,
        transport: Literal["udp", "tcp"] = "udp",
        codecs: Sequence[str] = ("PCMU", "PCMA", "G722"),
        regint: int = 600,
        register: bool = True,
        sip_trace: bool = True,
        player: str = "alsa,null",
        extra_config: Mapping[str, str] | None = None,
    ) -> None:
        if answer not in ("auto", "manual", "busy"):
            raise ValueError(f"answer must be auto, manual or busy, not {answer!r}")
        self.user = user
        self.password = password
        self.registrar_host = registrar_host
        self.registrar_port = registrar_port
        self.answer = answer
        self.answer_delay = answer_delay
        self.tone_hz = tone_hz
        self.record = record
        self.transport = transport
        self.codecs = tuple(_CODEC_SPECS.get(codec.upper(), codec) for codec in codecs)
        self.regint = regint
        self.register = register
        self.sip_trace = sip_trace
        # ALSA's null device has no clock: baresip then writes as fast as it can and burns a
        # whole core. Fine for tests; a benchmark gives it a clocked player ("aubridge,...").
        self.player = player
        self.extra_config = dict(extra_config or {})

        self.workdir = Path(workdir)
        self.confdir = self.workdir / "config"
        self.log_path = self.workdir / "baresip.log"
        snd = self.workdir / "recordings"
        self._own_snd_dir = len(str(snd)) > _MAX_SND_PATH
        self.snd_dir = Path(tempfile.mkdtemp(prefix="bsrec-")) if self._own_snd_dir else snd

        self.sip_port = free_udp_tcp_port(with_next=True)  # SIP/TLS listens one above
        self.ctrl_port = free_udp_tcp_port()

        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._responses: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, CallInfo] = {}
        self._tokens = itertools.count(1)
        self._timers: list[threading.Timer] = []
        self._closing = False
        self._last_dtmf = 0.0

    # -- addressing --------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        """The handset's address of record, `sip:user@host:port` on the PBX."""
        return f"sip:{self.user}@{self.registrar_host}:{self.registrar_port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start baresip and connect to its ctrl_tcp port.

        Returns when the control connection is up; registration may still be in flight, see
        `wait_registered()`.
        """
        if self._proc is not None:
            return
        program = require_program(BARESIP)
        self._write_config()
        command = [program, "-f", str(self.confdir)]
        if self.sip_trace:
            command.append("-s")
        # baresip writes its log through stdio; line buffering keeps the log file current even
        # when the process is killed.
        stdbuf = shutil.which("stdbuf")
        if stdbuf:
            command = [stdbuf, "-oL", "-eL", *command]
        self._closing = False
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._connect(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        """End baresip: SIGTERM (graceful: un-REGISTER, BYE), then SIGKILL after `timeout` s.

        Kills the whole process group so that no child survives; safe to call twice.
        """
        self._closing = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_group(proc, timeout)
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def close(self) -> None:
        """Stop, and remove the private recording dir if one had to be made outside workdir."""
        self.stop()
        if self._own_snd_dir:
            shutil.rmtree(self.snd_dir, ignore_errors=True)

    # -- registration ------------------------------------------------------------------------

    def reginfo(self) -> str:
        """baresip's own registration status text (`reginfo` command), without colour codes."""
        return _ANSI_RE.sub("", self.command("reginfo"))

    def registration_status(self) -> str:
        """`OK` once registered, `ERR` after a failure (such as a 403), `zzz` while pending."""
        match = _REGSTATUS_RE.search(self.reginfo())
        return match.group(1) if match else ""

    def is_registered(self) -> bool:
        """True when baresip reports its registration as OK (a 200 to its last REGISTER)."""
        return self.registration_status() == "OK"

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Wait until the registrar has accepted the handset's REGISTER (401 challenge included).

        Fails at once when the registrar answered with an error (403 for a wrong password), so a
        test does not sit out the whole timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.registration_status()
            if status == "OK":
                return
            if status == "ERR" or (status.isdigit() and int(status) >= 300):
                failures = [str(ev.get("param", "")) for ev in self.find_events("REGISTER_FAIL")]
                raise BaresipError(f"{self.user}: registration failed ({status}) {failures}")
            if time.monotonic() >= deadline:
                raise BaresipError(f"{self.user} did not register in {timeout} s\n{self._tail()}")
            time.sleep(0.05)

    # -- calls -------------------------------------------------------------------------------

    def dial(self, uri: str) -> None:
        """Call `uri` (e.g. `sip:621@127.0.0.1:5080`); progress arrives as events."""
        self.command("dial", uri)

    def accept(self) -> None:
        """Answer the ringing incoming call."""
        self.command("accept")

    def hangup(self) -> None:
        """Hang up the current call; on a ringing incoming call this rejects it with 486."""
        with self._cond:
            for call in self._calls.values():
                if call.direction == "incoming" and not call.established and not call.closed:
                    call.rejected = True
        self.command("hangup")

    def send_dtmf(self, digits: str, gap: float = 0.4) -> None:
        """Send DTMF (RFC 4733) one digit at a time, `gap` seconds apart.

        baresip's `sndcode` ends only the last digit of a multi-digit string properly, so every
        digit gets its own command, and the pause is kept across calls of this method too.
        """
        for digit in digits:
            if digit not in "0123456789*#ABCD":
                raise ValueError(f"not a DTMF digit: {digit!r}")
            time.sleep(max(0.0, self._last_dtmf + gap - time.monotonic()))
            self.command("sndcode", digit)
            self._last_dtmf = time.monotonic()

    def dtmf_received(self) -> str:
        """The DTMF digits this handset has received so far, in order (from DTMF_START events)."""
        return "".join(str(ev.get("param", "")) for ev in self.find_events("CALL_DTMF_START"))

    def calls(self) -> list[CallInfo]:
        """Every call seen so far, oldest first."""
        with self._cond:
            return list(self._calls.values())

    def wait_cancelled(self, timeout: float = 10.0) -> CallInfo:
        """Wait for an incoming call that closed without being answered (the caller's CANCEL)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for call in self._calls.values():
                    if call.cancelled:
                        return call
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BaresipError(
                        f"{self.user}: no cancelled incoming call in {timeout} s; "
                        f"events: {self._event_types()}"
                    )
                self._cond.wait(remaining)

    def recordings(self) -> list[Path]:
        """The WAV files sndfile wrote: `dump-<time>-dec.wav` (heard) and `-enc.wav` (sent)."""
        if not self.snd_dir.is_dir():
            return []
        return sorted(self.snd_dir.glob("dump-*-*.wav"))

    # -- events ------------------------------------------------------------------------------

    def wait_event(self, type_substring: str, timeout: float = 10.0) -> dict[str, Any]:
        """Return the oldest not yet returned event whose type contains `type_substring`.

        Each event is handed out once, whatever order the waits come in, so a test can wait for
        CALL_ESTABLISHED and afterwards still get the CALL_INCOMING that came before it.
        Event fields (baresip 1.0): type, class, accountaor, param, and for calls direction,
        peeruri, id.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, event in enumerate(self._events):
                    if index not in self._consumed and type_substring in event.get("type", ""):
                        self._consumed.add(index)
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._reader is None or not self._reader.is_alive()):
                    raise BaresipError(
                        f"{self.user}: no {type_substring} event in {timeout} s; "
                        f"events: {self._event_types()}\n{self._tail()}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def find_events(self, type_substring: str) -> list[dict[str, Any]]:
        """All events so far whose type contains `type_substring`, without consuming them."""
        with self._cond:
            return [ev for ev in self._events if type_substring in ev.get("type", "")]

    def events(self) -> list[dict[str, Any]]:
        """A copy of every event received so far."""
        with self._cond:
            return list(self._events)

    # -- control -----------------------------------------------------------------------------

    def command(self, name: str, params: str | None = None, timeout: float = 5.0) -> str:
        """Run a baresip command over ctrl_tcp and return its text output.

        Raises BaresipError when baresip reports the command failed.
        """
        token = self._send(name, params)
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._sock is None:
                    raise BaresipError(f"{self.user}: no answer to {name!r}\n{self._tail()}")
                self._cond.wait(min(remaining, 0.5))
            response = self._responses.pop(token)
        data = str(response.get("data", ""))
        if not response.get("ok", False):
            raise BaresipError(f"{self.user}: {name} {params or ''} failed: {data}")
        return data

    def log_text(self) -> str:
        """Everything baresip printed (with the SIP trace when `sip_trace`)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- internals ---------------------------------------------------------------------------

    def _send(self, name: str, params: str | None) -> str:
        token = f"t{next(self._tokens)}"
        message: dict[str, str] = {"command": name, "token": token}
        if params is not None:
            message["params"] = params
        payload = json.dumps(message).encode()
        with self._send_lock:
            if self._sock is None:
                raise BaresipError(f"{self.user}: not connected to baresip")
            self._sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        return token

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self.stop()
                raise BaresipError(f"baresip {self.user} exited ({code}):\n{self._tail()}")
            try:
                sock = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=0.2)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    self.stop()
                    raise BaresipError(
                        f"baresip {self.user}: ctrl_tcp never opened\n{self._tail()}"
                    ) from None
                time.sleep(0.05)
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(
            target=self._read_loop, args=(sock,), name=f"baresip-{self.user}", daemon=True
        )
        self._reader.start()

    def _read_loop(self, sock: socket.socket) -> None:
        """Split the netstring stream into JSON messages; file responses and events."""
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buffer += chunk
            while True:
                colon = buffer.find(b":")
                if colon < 0:
                    break
                try:
                    length = int(buffer[:colon])
                except ValueError:  # not a netstring: resynchronise on the next message
                    buffer = b""
                    break
                end = colon + 1 + length
                if len(buffer) < end + 1:
                    break
                payload, buffer = buffer[colon + 1 : end], buffer[end + 1 :]
                try:
                    message = json.loads(payload)
                except ValueError:
                    continue
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("response"):
            with self._cond:
                self._responses[str(message.get("token", ""))] = message
                self._cond.notify_all()
            return
        if not message.get("event"):
            return
        with self._cond:
            self._events.append(message)
            self._track_call(message)
            self._cond.notify_all()
        if message.get("type") == "CALL_INCOMING":
            self._on_incoming()

    def _track_call(self, event: dict[str, Any]) -> None:
        call_id = event.get("id")
        if not call_id or event.get("class") != "call":
            return
        call = self._calls.get(call_id)
        if call is None:
            call = CallInfo(
                id=call_id,
                direction=str(event.get("direction", "")),
                peeruri=str(event.get("peeruri", "")),
            )
            self._calls[call_id] = call
        kind = str(event.get("type", ""))
        call.events.append(kind)
        if kind == "CALL_ESTABLISHED":
            call.established = True
        elif kind == "CALL_CLOSED":
            call.closed = True
            call.close_reason = str(event.get("param", ""))

    def _on_incoming(self) -> None:
        """Apply the answer mode; runs on the reader thread, so commands go out from a timer
        thread (a command waits for its response, which only this reader thread can read)."""
        if self._closing:
            return
        action: Callable[[], None] | None = None
        delay = 0.0
        if self.answer == "auto":
            action, delay = self.accept, self.answer_delay
        elif self.answer == "busy":
            action = self.hangup
        if action is None:
            return

        def run() -> None:
            with contextlib.suppress(BaresipError, OSError):
                action()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _write_config(self) -> None:
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.snd_dir.mkdir(parents=True, exist_ok=True)
        module_dir = next((d for d in MODULE_DIRS if Path(d).is_dir()), MODULE_DIRS[0])
        modules = ["g711.so", "g722.so", "ausine.so", "alsa.so", "aubridge.so"]
        if self.record:
            modules.append("sndfile.so")
        lines = [
            "# Written by tests/peers/baresip.py for one test; do not edit.",
            "poll_method\t\tepoll",
            f"sip_listen\t\t{LOOPBACK}:{self.sip_port}",
            # `net_interface lo` fails in some sandboxes; the address always works.
            f"net_interface\t\t{LOOPBACK}",
            "call_local_timeout\t120",
            "call_max_calls\t\t4",
            # ausine only produces 48 kHz stereo; baresip resamples it to the codec's rate.
            f"audio_source\t\tausine,{self.tone_hz}",
            "ausrc_srate\t\t48000",
            "ausrc_channels\t\t2",
            # No sound card: the ALSA null device swallows what would be played.
            f"audio_player\t\t{self.player}",
            "audio_alert\t\talsa,null",
            "audio_level\t\tno",
            "ausrc_format\t\ts16",
            "auplay_format\t\ts16",
            "auenc_format\t\ts16",
            "audec_format\t\ts16",
            "audio_buffer\t\t20-160",
            "rtcp_mux\t\tno",
            "jitter_buffer_delay\t1-10",
            "rtp_stats\t\tno",
            f"snd_path\t\t{self.snd_dir}",
            f"module_path\t\t{module_dir}",
            *(f"module\t\t\t{name}" for name in modules),
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t{LOOPBACK}:{self.ctrl_port}",
            *(f"{key}\t\t{value}" for key, value in self.extra_config.items()),
            "",
        ]
        (self.confdir / "config").write_text("\n".join(lines))
        transport = f";transport={self.transport}" if self.transport != "udp" else ""
        # The handset rings in every mode; auto and busy are carried out by the control thread.
        params = [
            f"auth_pass={self.password}",
            "answermode=manual",
            f"regint={self.regint if self.register else 0}",
            "audio_codecs=" + ",".join(self.codecs),
            "mwi=no",
            "pubint=0",
        ]
        account = f"<sip:{self.user}@{self.registrar_host}:{self.registrar_port}{transport}>;"
        (self.confdir / "accounts").write_text(account + ";".join(params) + "\n")
        (self.confdir / "contacts").write_text("")

    def _event_types(self) -> list[str]:
        return [str(ev.get("type")) for ev in self._events]

    def _tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
