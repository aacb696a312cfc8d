"""Real SIP peers (Kamailio, baresip, linphonec) run on loopback for the acceptance tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from types import TracebackType
from typing import Self


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
