"""The demo's MQTT broker: the machine's mosquitto when there is one, else one in the process.

A newcomer's PC rarely runs a broker, and the demo must show the MQTT side of the product anyway,
so it brings its own: mosquitto on a free loopback port when the program is installed (the same
broker most Home Assistant users run), and otherwise amqtt, a maintained asyncio broker that
``pip install pi-intercom[demo]`` (and ``scripts/demo``) installs. Neither keeps anything on disk
nor listens beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

BrokerKind = Literal["auto", "mosquitto", "embedded"]
LOOPBACK = "127.0.0.1"


class BrokerUnavailable(RuntimeError):
    """No broker can run here; the message says what to install."""


def find_mosquitto() -> str | None:
    """mosquitto's path; Debian puts it in /usr/sbin, which a normal user's PATH lacks."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int, timeout: float, alive: Any = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            if loop.time() > deadline or (alive is not None and not alive()):
                raise
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Broker:
    host = LOOPBACK
    kind = ""

    def __init__(self) -> None:
        self.port = 0

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class MosquittoBroker(Broker):
    kind = "mosquitto"

    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    async def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="intercom-demo-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        self.port = _free_port()
        # As root, mosquitto would switch to a 'mosquitto' user that may not exist.
        conf.write_text(
            f"listener {self.port} {LOOPBACK}\nallow_anonymous true\npersistence false\n"
            f"user {getpass.getuser()}\nlog_dest none\n"
        )
        self._proc = subprocess.Popen(
            [self.program, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        proc = self._proc
        try:
            await _wait_listening(self.port, 5.0, alive=lambda: proc.poll() is None)
        except OSError as exc:
            await self.stop()
            raise BrokerUnavailable(f"mosquitto did not start on port {self.port}: {exc}") from exc

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class EmbeddedBroker(Broker):
    kind = "embedded (amqtt)"

    def __init__(self) -> None:
        super().__init__()
        self._broker: Any = None

    async def start(self) -> None:
        try:
            from amqtt.broker import Broker as AmqttBroker
        except ImportError as exc:
            raise BrokerUnavailable(
                "no MQTT broker: install mosquitto (sudo apt-get install mosquitto) or the "
                "embedded one (pip install 'pi-intercom[demo]'; scripts/demo does this)"
            ) from exc
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # its INFO chatter is not ours
        self.port = _free_port()
        self._broker = AmqttBroker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await self._broker.start()
        await _wait_listening(self.port, 5.0)

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broker.shutdown(), 5)


async def start_broker(kind: BrokerKind = "auto") -> Broker:
    """A running broker of ``kind``; ``auto`` prefers mosquitto. Raises BrokerUnavailable."""
    program = find_mosquitto()
    if kind == "mosquitto" and program is None:
        raise BrokerUnavailable("mosquitto is not installed (sudo apt-get install mosquitto)")
    broker: Broker = (
        MosquittoBroker(program) if program is not None and kind != "embedded" else EmbeddedBroker()
    )
    await broker.start()
    return broker
