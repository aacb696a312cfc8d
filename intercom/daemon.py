"""``intercom run``: the daemon under systemd, with its signals and watchdog.

SIGTERM or SIGINT: hang up, un-REGISTER, publish ``offline``, relay off, exit 0 within 5 s.
SIGHUP: load the config again; a bad one is refused with its errors in the log and the old one
keeps running. ``WATCHDOG=1`` goes out only while the event loop turns and the SIP stack has
finished its last registration transaction recently, so that systemd restarts a daemon that looks
alive but is dead inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from intercom.app import Intercom
from intercom.config import Config, load_config
from intercom.errors import ConfigError
from intercom.sip.events import Event, RegistrationChanged
from intercom.systemd import Notifier
from intercom.watchdog import WatchdogPolicy, sip_grace_for, status_line

log = logging.getLogger("intercom")

STOP_TIMEOUT = 4.5


class Daemon:
    def __init__(self, config: Config, path: str | None, *, trace: bool, mqtt_debug: bool) -> None:
        self.config = config
        self.path = path
        self.trace = trace
        self.mqtt_debug = mqtt_debug
        self.notifier = Notifier()
        self.app: Intercom | None = None
        self.registration = "off" if not config.sip.register else "registering"
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._policy: WatchdogPolicy | None = None
        self._last_sip: float | None = None
        self._problem_logged = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        if not await self._start():
            return 0
        self.notifier.ready()
        self._status()
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while not self._stop.is_set():
                stop = asyncio.create_task(self._stop.wait())
                reload = asyncio.create_task(self._reload.wait())
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
                for task in (stop, reload):
                    task.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self._do_reload()
        finally:
            watchdog.cancel()
            log.info("stopping")
            self.notifier.stopping()
            if self.app is not None:
                try:
                    await asyncio.wait_for(self.app.stop(), STOP_TIMEOUT)
                except TimeoutError:
                    log.error("stopping took longer than %.1f s; exiting anyway", STOP_TIMEOUT)
            self.notifier.close()
        return 0

    async def _start(self) -> bool:
        """Start, retrying with back-off: after a power cut the network may not be up yet."""
        delay = 2.0
        while True:
            app = Intercom(self.config, trace=self.trace, mqtt_debug=self.mqtt_debug)
            app.listeners.append(self._on_event)
            try:
                await app.start()
            except OSError as exc:
                log.error("cannot start SIP (%s); trying again in %.0f s", exc, delay)
                self.notifier.status(f"waiting for the network: {exc}")
                await app.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return False
                delay = min(delay * 2, 60.0)
                continue
            self.app = app
            self._setup_watchdog()
            return True

    async def _do_reload(self) -> None:
        self.notifier.reloading()
        if self.path is None:
            self.notifier.ready()
            return
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            log.error(
                "SIGHUP: %s has %d error(s); keeping the running configuration:",
                self.path,
                len(exc.errors),
            )
            for line in exc.errors:
                log.error("  - %s", line)
            self.notifier.ready()
            return
        log.info("SIGHUP: reloading %s", Path(self.path).name)
        if self.app is not None:
            await self.app.stop()
            self.app = None
        self.config = config
        self.registration = "off" if not config.sip.register else "registering"
        if await self._start():
            self.notifier.ready()
            self._status()

    # ---------------------------------------------------------------- status and watchdog
    def _on_event(self, event: Event) -> None:
        if isinstance(event, RegistrationChanged):
            self.registration = event.state
            if event.state == "failed" and event.retry_in is not None and self._policy:
                now = asyncio.get_running_loop().time()
                self._policy.sip_retry_at(now + event.retry_in)
        self._status()

    def _status(self) -> None:
        state = self.app.machine.state if self.app is not None else "idle"
        self.notifier.status(status_line(self.registration, state))

    def _setup_watchdog(self) -> None:
        period = self.notifier.watchdog_period()
        if period is None:
            self._policy = None
            return
        now = asyncio.get_running_loop().time()
        refresh = self.config.sip.expires / 2
        self._policy = WatchdogPolicy(
            period,
            start=now,
            sip_required=self.config.sip.register,
            sip_grace=sip_grace_for(period, refresh) if self.config.sip.register else None,
        )
        self._last_sip = None

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            policy = self._policy
            if policy is None:
                await asyncio.sleep(5)
                continue
            now = loop.time()
            policy.loop_alive(now)
            registration = (
                self.app.phone.agent.registration
                if self.app is not None and self.app.phone.agent is not None
                else None
            )
            if registration is not None and registration.last_result != self._last_sip:
                self._last_sip = registration.last_result
                if self._last_sip is not None:
                    policy.sip_ok(now)
            if policy.should_ping(now):
                self.notifier.watchdog_ping()
                self._problem_logged = False
            elif not self._problem_logged:
                problem = policy.problem(now) or "unknown"
                log.error("watchdog: not pinging systemd: %s", problem)
                self.notifier.status(f"unhealthy: {problem}")
                self._problem_logged = True
            await asyncio.sleep(policy.interval)
