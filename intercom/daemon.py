"""``intercom run``: the daemon under systemd, with its signals and watchdog.

SIGTERM or SIGINT: hang up, un-REGISTER, publish ``offline``, relay off, exit 0 within 5 s.
SIGHUP: load the config again; a bad one is refused with its errors in the log and the old one
keeps running. ``WATCHDOG=1`` goes out only while the event loop turns and the SIP stack has
finished its last registration transaction recently, so that systemd restarts a daemon that looks
alive but is dead inside. The loop only reports a heartbeat; the decision and the ping are taken
in a thread (:mod:`intercom.watchdog_thread`), the one place that can see the loop stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from intercom import config_warnings
from intercom.app import Intercom
from intercom.config import Config, load_config
from intercom.errors import ConfigError
from intercom.sip.events import Event, RegistrationChanged
from intercom.systemd import Notifier
from intercom.watchdog import WatchdogPolicy, sip_grace_for, status_line
from intercom.watchdog_thread import WatchdogThread

log = logging.getLogger("intercom")

STOP_TIMEOUT = 4.5
#: Seconds between two heartbeats of the event loop, at most; a short period makes it shorter
#: (a quarter of it), so the grace window of one period always sees several beats.
HEARTBEAT = 1.0


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
        self._watchdog: WatchdogThread | None = None
        self._last_sip: float | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        self._warn()
        if not await self._start():
            return 0
        self.notifier.ready()
        self._status()
        heartbeat = asyncio.create_task(self._heartbeat())
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
            heartbeat.cancel()
            if self._watchdog is not None:
                self._watchdog.stop()
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
        self._warn()
        self.registration = "off" if not config.sip.register else "registering"
        if await self._start():
            self.notifier.ready()
            self._status()

    def _warn(self) -> None:
        """What `intercom check-config` warns about, once per configuration loaded."""
        path = Path(self.path) if self.path is not None else None
        for line in config_warnings.warnings(self.config, path):
            log.warning("config: %s", line)

    # ---------------------------------------------------------------- status and watchdog
    def _on_event(self, event: Event) -> None:
        if isinstance(event, RegistrationChanged):
            self.registration = event.state
            if event.state == "failed" and event.retry_in is not None and self._watchdog:
                self._watchdog.sip_retry_in(event.retry_in)
        self._status()

    def _status(self) -> None:
        state = self.app.machine.state if self.app is not None else "idle"
        self.notifier.status(status_line(self.registration, state))

    def _setup_watchdog(self) -> None:
        """Start the watchdog thread, or after a reload hand it a policy for the new config."""
        period = self.notifier.watchdog_period()
        if period is None:
            return
        refresh = self.config.sip.expires / 2
        policy = WatchdogPolicy(
            period,
            start=time.monotonic(),
            sip_required=self.config.sip.register,
            sip_grace=sip_grace_for(period, refresh) if self.config.sip.register else None,
        )
        self._last_sip = None
        if self._watchdog is not None:
            self._watchdog.replace(policy)
            return
        loop = asyncio.get_running_loop()

        def recovered() -> None:  # on the watchdog's thread: hand it to the loop
            loop.call_soon_threadsafe(self._status)

        self._watchdog = WatchdogThread(policy, self.notifier, on_recovered=recovered)
        self._watchdog.start()

    async def _heartbeat(self) -> None:
        """The loop's side of the watchdog: prove it turns, and pass on SIP's progress."""
        period = self.notifier.watchdog_period()
        watchdog = self._watchdog  # one for the daemon's life; a reload only replaces its policy
        if period is None or watchdog is None:
            return
        every = min(HEARTBEAT, period / 4)
        while True:
            watchdog.beat()
            registration = (
                self.app.phone.agent.registration
                if self.app is not None and self.app.phone.agent is not None
                else None
            )
            if registration is not None and registration.last_result != self._last_sip:
                self._last_sip = registration.last_result
                if self._last_sip is not None:
                    watchdog.sip_ok()
            await asyncio.sleep(every)
