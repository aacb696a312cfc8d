"""Real SIP peers (Kamailio, baresip, linphonec) run on loopback for the acceptance tests."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self


def terminate_group(proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    """SIGTERM the process group of `proc`, wait up to `timeout`, then SIGKILL what is left.

    Every peer is started in a session of its own, so the group holds the peer and any worker it
    forked (Kamailio forks a dozen); killing the group is what keeps tests from leaving orphans.
    When `proc` is already gone, whatever is left of its group is killed outright.
    """
    try:
        pgid: int | None = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # the leader is reaped; its group id was its pid
    if proc.poll() is None and pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class PeerProcess:
    """What every peer shares: a process in ``_proc``, ``running``, and ``with peer:`` that
    closes the peer even when its start fails half-way (a port taken, a config refused)."""

    _proc: subprocess.Popen[bytes] | None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop; peers that leave files behind also remove them here."""
        self.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the peer's process is alive."""
        return self._proc is not None and self._proc.poll() is None


class LoggedPeer(PeerProcess):
    """A server peer (Kamailio, mosquitto) whose output goes to ``log_path``: started in its own
    session, waited for until it really serves, and stopped with its whole process group.
    Every failure carries the log, which is what tells a broken config from a taken port."""

    name: ClassVar[str]
    error: ClassVar[type[Exception]] = RuntimeError
    workdir: Path
    log_path: Path
    port: int

    def _spawn(self, argv: Sequence[str]) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"==== starting {self.name} on port {self.port} ====\n".encode())
            log.flush()
            # stdout and stderr go to the log too: config errors are printed there before the
            # server opens its own log (both append, so no line overwrites another).
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )

    def _wait_ready(self, ready: Callable[[], bool], timeout: float, waiting_for: str) -> None:
        """Return once ``ready()``; raise ``error`` with the log if the process dies or time
        runs out (after stopping it and any worker it had already forked)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise self.error(f"{self.name} exited with {code}:\n{self.log_text()}")
            if ready():
                return
            time.sleep(0.01)
        self.stop()
        raise self.error(
            f"{self.name} did not {waiting_for} within {timeout} s:\n{self.log_text()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process group (SIGTERM, SIGKILL after ``timeout``); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_group(proc, timeout)

    def log_text(self) -> str:
        """Everything the peer wrote to its log, for printing when a test fails."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, pattern: str) -> list[str]:
        """Lines of the log that match the regular expression ``pattern``."""
        regex = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if regex.search(line)]


_SBIN_DIRS = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def find_program(name: str) -> str | None:
    """The full path of `name`, also looking in the sbin dirs.

    Debian installs `kamailio` and `kamcmd` in /usr/sbin, which is not on an ordinary user's
    PATH; the tests must find them there all the same.
    """
    return shutil.which(name) or shutil.which(name, path=_SBIN_DIRS)


def require_program(name: str) -> str:
    """The full path of `name`; FileNotFoundError when it is not installed."""
    path = find_program(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (looked in PATH and the sbin dirs)")
    return path
