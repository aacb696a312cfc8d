"""The door's phone: the SIP endpoint and each call's media, on one asyncio event loop.

This is the runtime that ``intercom ring``, ``intercom run`` and the demo share. It owns nothing
of the protocol: it builds the sans-I/O agent from the config, binds the sockets, starts and stops
RTP as calls are answered and end, and hands every event to an asyncio queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from intercom import __version__
from intercom.config import Config
from intercom.media.audio import (
    AudioSink,
    AudioSource,
    NullSink,
    SilenceSource,
    open_sink,
    open_source,
)
from intercom.media.dtmf import parse_info
from intercom.media.session import MediaSession, MediaSettings, MediaStats
from intercom.sip.agent import AgentSettings, UserAgent
from intercom.sip.events import (
    CallAnswered,
    CallEnded,
    CallUpdated,
    DtmfReceived,
    Event,
    InfoReceived,
    RegistrationChanged,
)
from intercom.transport import SipEndpoint, bind_sip_socket, local_address_for

log = logging.getLogger(__name__)

#: Media figures kept of the calls that ended (the demo, the doctor and the bench read the last).
MEDIA_STATS_KEPT = 16


@dataclass(frozen=True)
class PhoneOptions:
    trace: bool = False
    #: Address to bind; None means the local address that routes to the PBX.
    local_host: str | None = None
    #: Keep every SIP message sent and received in ``Phone.wire`` (tests, doctor, bench).
    capture: bool = False
    #: Audio source and sink specs overriding audio.input/audio.output ("file:PATH", ...).
    play: str | None = None
    record: str | None = None
    #: Any free RTP port instead of media.rtp_port_min..max (tests and the demo on loopback).
    any_rtp_port: bool = False


def _host_for_uri(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def settings_from_config(config: Config, local_host: str, local_port: int) -> AgentSettings:
    sip = config.sip
    return AgentSettings(
        username=sip.username,
        domain=_host_for_uri(sip.effective_domain),
        proxy=(sip.server, sip.port),
        local_host=local_host,
        local_port=local_port,
        transport=sip.transport,
        password=sip.secret(),
        auth_username=sip.auth_username,
        user_agent=sip.user_agent or f"pi-intercom/{__version__}",
        expires=sip.expires,
        allow_incoming=tuple(config.incoming.allow),
        answer_after=config.incoming.answer_after,
        max_duration=float(config.call.max_duration),
        register=sip.register,
        trusted_sources=tuple(sip.trusted_sources),
    )


class Phone:
    def __init__(self, config: Config, options: PhoneOptions | None = None) -> None:
        self.config = config
        self.options = options or PhoneOptions()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.media: dict[int, MediaSession] = {}
        #: The media figures of each call that ended, for the demo, the doctor and the bench.
        self.media_stats: dict[int, MediaStats] = {}  # the last MEDIA_STATS_KEPT calls
        self.agent: UserAgent | None = None
        self.endpoint: SipEndpoint | None = None
        self.registration: RegistrationChanged | None = None
        self._registered = asyncio.Event()
        self._reg_result = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: ("sent" | "received", monotonic time, message bytes), when options.capture is set.
        self.wire: list[tuple[str, float, bytes]] = []
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        sip = self.config.sip
        host = self.options.local_host or await local_address_for(sip.server, sip.port)
        sock = bind_sip_socket(host, sip.local_port, sip.transport)
        self._sock = sock
        port = sock.getsockname()[1]
        self.agent = UserAgent(settings_from_config(self.config, host, port), self._sdp)
        door = self.config.door
        self.endpoint = SipEndpoint(
            self.agent,
            trace=self.options.trace,
            hide_dtmf=door is not None and bool(door.secret()),
        )
        self.endpoint.listeners.append(self._on_event)
        if self.options.capture:
            loop = asyncio.get_running_loop()
            self.endpoint.on_sent = lambda data, _a: self.wire.append(("sent", loop.time(), data))
            self.endpoint.on_received = lambda data, _a: self.wire.append(
                ("received", loop.time(), data)
            )
        try:
            await self.endpoint.start(sock)
        except OSError:
            self.endpoint = None
            self.agent = None
            raise
        log.info("SIP on %s:%s/%s, PBX %s:%s", host, port, sip.transport, sip.server, sip.port)
        if sip.register:
            self.endpoint.command(self.agent.register)

    @property
    def registered(self) -> bool:
        return self.agent is not None and self.agent.registered

    @property
    def local_addr(self) -> tuple[str, int]:
        assert self.agent is not None
        return (self.agent.settings.local_host, self.agent.settings.local_port)

    async def wait_registration(self, timeout: float) -> RegistrationChanged | None:
        """The first registration outcome (registered or failed), or None on time-out."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reg_result.wait(), timeout)
        return self.registration

    def call(self, targets: list[str]) -> int:
        assert self.agent is not None and self.endpoint is not None
        agent, cfg = self.agent, self.config.call
        handle = self.endpoint.command(
            lambda now: agent.call(
                targets,
                now,
                strategy=cfg.strategy,
                ring_timeout=float(cfg.ring_timeout),
                max_duration=float(cfg.max_duration),
            )
        )
        assert isinstance(handle, int)
        return handle

    def hangup(self, handle: int) -> None:
        assert self.agent is not None and self.endpoint is not None
        agent = self.agent
        self.endpoint.command(lambda now: agent.hangup(handle, now))

    def hangup_all(self) -> None:
        assert self.agent is not None
        for handle in self.agent.active_calls():
            self.hangup(handle)

    async def stop(self, timeout: float = 4.0) -> None:
        """Hang up, let the last transactions finish, un-REGISTER, close. Bounded by ``timeout``."""
        if self.agent is None or self.endpoint is None:
            self._close_socket()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.hangup_all()
        while self.agent.calls and loop.time() < deadline - 1.5:
            await asyncio.sleep(0.05)
        if self.agent.registration is not None and self.config.sip.register:
            self._reg_result.clear()
            self.endpoint.command(self.agent.unregister)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_unregistered(), max(0.1, deadline - loop.time()))
        for stream in list(self.media.values()):
            await stream.stop()
        self.media.clear()
        for task in list(self._tasks):
            task.cancel()
        await self.endpoint.close()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _wait_unregistered(self) -> None:
        while self.registration is None or self.registration.state != "unregistered":
            await asyncio.sleep(0.02)

    def send_dtmf(self, handle: int, digits: str) -> None:
        media = self.media.get(handle)
        if media is not None:
            media.send_dtmf(digits)

    # ---------------------------------------------------------------- internals
    def _media_settings(self) -> MediaSettings:
        assert self.agent is not None
        audio, media = self.config.audio, self.config.media
        any_port = self.options.any_rtp_port
        return MediaSettings(
            host=self.agent.settings.local_host,
            port_min=0 if any_port else media.rtp_port_min,
            port_max=0 if any_port else media.rtp_port_max,
            codecs=tuple(audio.codecs),
            rtp_timeout=float(media.rtp_timeout),
            jitter_ms=media.jitter_ms,
            input_gain_db=audio.input_gain_db,
            output_gain_db=audio.output_gain_db,
        )

    def _open_source(self, rate: int) -> AudioSource:
        spec = self.options.play or self.config.audio.input
        try:
            return open_source(spec, rate)
        except Exception as exc:
            # The call still matters without a microphone (the resident can open the door).
            log.error("no microphone, sending silence: %s", exc)
            return SilenceSource(rate)

    def _open_sink(self, rate: int) -> AudioSink:
        spec = self.options.record or self.config.audio.output
        try:
            return open_sink(spec, rate)
        except Exception as exc:
            log.error("no speaker, the caller is not heard: %s", exc)
            return NullSink(rate)

    def _sdp(self, handle: int, offer: bytes | None) -> bytes | None:
        media = self.media.get(handle)
        if media is None:
            media = MediaSession(
                self._media_settings(),
                self._open_source,
                self._open_sink,
                on_dtmf=lambda digit: self._on_event(DtmfReceived(handle, digit, "rfc4733")),
                on_timeout=lambda: self._hangup_reason(handle, "rtp_timeout"),
            )
            try:
                media.bind()
            except OSError as exc:
                log.error("%s", exc)
                return None
            self.media[handle] = media
        return media.local_sdp(offer)

    def _hangup_reason(self, handle: int, reason: str) -> None:
        assert self.agent is not None and self.endpoint is not None
        agent = self.agent
        self.endpoint.command(lambda now: agent.hangup(handle, now, reason))

    async def _start_media(self, handle: int, media: MediaSession, remote_sdp: bytes) -> None:
        try:
            await media.start(remote_sdp)
        except Exception as exc:
            # A broken sound card must not leave the other phone off the hook without a word.
            log.error("cannot start the audio of call %s: %s", handle, exc)
            self._hangup_reason(handle, "local_hangup")

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RegistrationChanged):
            self.registration = event
            if event.state in ("registered", "failed"):
                self._reg_result.set()
        elif isinstance(event, CallAnswered):
            media = self.media.get(event.call)
            if media is not None:
                self._spawn(self._start_media(event.call, media, event.remote_sdp))
        elif isinstance(event, CallUpdated):
            media = self.media.get(event.call)
            if media is not None:
                media.update(event.remote_sdp)
        elif isinstance(event, InfoReceived):
            digit = parse_info(event.content_type, event.body)
            if digit is not None:
                self._on_event(DtmfReceived(event.call, digit.digit, "info"))
            return
        elif isinstance(event, CallEnded):
            media = self.media.pop(event.call, None)
            if media is not None:
                self.media_stats[event.call] = media.stats
                while (
                    len(self.media_stats) > MEDIA_STATS_KEPT
                ):  # a year of calls: not a year of stats
                    del self.media_stats[next(iter(self.media_stats))]
                self._spawn(media.stop())
        self.events.put_nowait(event)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
