"""The ``intercom`` command: run, check-config, ring, demo.

``main(argv)`` returns the exit code instead of exiting, so tests call it in-process. Logs go to
stderr; ``ring --json`` writes one JSON object per event to stdout, for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from intercom import __version__
from intercom.config import Config, describe, load_config
from intercom.controller import CallStateMachine
from intercom.controller import describe as describe_event
from intercom.errors import ConfigError
from intercom.phone import PhoneOptions
from intercom.sip.events import CallAnswered, CallEnded, Event, RegistrationChanged

log = logging.getLogger("intercom")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_ANSWERED = 2

#: Call results that mean the callee did not take the call (exit 2), not that the door is broken.
NOT_ANSWERED = frozenset(
    {"no_answer", "busy", "rejected", "not_found", "unavailable", "cancelled", "local_hangup"}
)


def _setup_logging(level: str, trace: bool) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    trace_logger = logging.getLogger("intercom.sip.trace")
    if trace:
        trace_logger.setLevel(logging.DEBUG)
        if logging.getLogger().level > logging.DEBUG:
            logging.getLogger().setLevel(logging.DEBUG)
    else:
        trace_logger.setLevel(logging.INFO)  # never print the trace unless asked


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.errors)} error(s) in the configuration:", file=sys.stderr)
        for line in exc.errors:
            print(f"  - {line}", file=sys.stderr)
        return None


# ------------------------------------------------------------------------------ check-config
def cmd_check_config(args: argparse.Namespace) -> int:
    from intercom import config_warnings

    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    if args.secret_files:
        # For scripts/install-pi: "key<TAB>absolute path" per file that holds a secret.
        for key, path in config_warnings.secret_files(config):
            print(f"{key}\t{path}")
        return EXIT_OK
    print(describe(config))
    found = config_warnings.warnings(config, Path(args.config))
    if found:
        print(f"{args.config}: {len(found)} warning(s); the door runs, but:", file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        print(f"{args.config}: OK, with {len(found)} warning(s)")
    else:
        print(f"{args.config}: OK")
    return EXIT_OK


# ------------------------------------------------------------------------------ ring
class _Printer:
    """Prints each event of ``intercom ring``; a DTMF digit only with ``show_digits`` (no door
    code set), since a terminal's output ends up in scrollback and bug reports."""

    def __init__(self, as_json: bool, out: TextIO, *, show_digits: bool = False) -> None:
        self.as_json = as_json
        self.out = out
        self.show_digits = show_digits
        self.start = time.monotonic()
        self.machine = CallStateMachine()
        self.answered = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, CallAnswered):
            self.answered = True
        state = self.machine.feed(event)
        fields = describe_event(event, show_digits=self.show_digits)
        fields["state"] = state
        fields["t"] = round(time.monotonic() - self.start, 3)
        if self.as_json:
            print(json.dumps(fields), file=self.out, flush=True)
        else:
            extra = " ".join(
                f"{k}={v}" for k, v in fields.items() if k not in ("event", "state", "t")
            )
            line = f"{fields['t']:7.2f}s  {fields['event']:<12} [{state}] {extra}"
            print(line.rstrip(), file=self.out, flush=True)


async def ring(
    config: Config,
    targets: list[str],
    talk: float | None,
    printer: _Printer,
    options: PhoneOptions | None = None,
    mqtt_debug: bool = False,
) -> int:
    from intercom.app import Intercom

    app = Intercom(
        config,
        mqtt_debug=mqtt_debug,
        phone_options=options or PhoneOptions(trace=config.log.sip_trace),
    )
    phone = app.phone
    events: asyncio.Queue[Event] = asyncio.Queue()
    app.listeners.append(events.put_nowait)
    try:
        await app.start()
    except OSError as exc:
        log.error("%s", exc)
        await app.stop()
        return EXIT_ERROR
    try:
        if config.sip.register:
            while True:
                event = await events.get()
                printer(event)
                if isinstance(event, RegistrationChanged) and event.state == "failed":
                    log.error("registration failed: %s", event.reason)
                    return EXIT_ERROR
                if isinstance(event, RegistrationChanged) and event.state == "registered":
                    break
        handle = app.ring(targets, source="cli")
        assert handle is not None
        hangup_task: asyncio.TimerHandle | None = None
        while True:
            event = await events.get()
            if isinstance(event, RegistrationChanged):
                printer(event)
                continue
            if getattr(event, "call", None) != handle:
                continue
            printer(event)
            if isinstance(event, CallAnswered) and talk is not None:
                loop = asyncio.get_running_loop()
                hangup_task = loop.call_later(talk, phone.hangup, handle)
            if isinstance(event, CallEnded):
                if hangup_task is not None:
                    hangup_task.cancel()
                if printer.answered:
                    return EXIT_OK
                if event.reason in NOT_ANSWERED:
                    return EXIT_NOT_ANSWERED
                return EXIT_ERROR
    finally:
        await app.stop()


def cmd_ring(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    _setup_logging(args.log_level or config.log.level, config.log.sip_trace or args.sip_trace)
    if args.sip_trace and not config.log.sip_trace:
        config = config.model_copy(
            update={"log": config.log.model_copy(update={"sip_trace": True})}
        )
    targets = list(args.targets) or list(config.call.targets)
    code_set = config.door is not None and bool(config.door.secret())
    printer = _Printer(args.json, sys.stdout, show_digits=not code_set)
    options = PhoneOptions(
        trace=config.log.sip_trace,
        play=f"file:{args.play}" if args.play else None,
        record=f"file:{args.record}" if args.record else None,
    )
    if args.play and not Path(args.play).is_file():
        print(f"--play {args.play}: no such file", file=sys.stderr)
        return EXIT_ERROR
    try:
        return asyncio.run(ring(config, targets, args.talk, printer, options, args.mqtt_debug))
    except KeyboardInterrupt:
        return EXIT_ERROR


def cmd_doctor(args: argparse.Namespace) -> int:
    from intercom import doctor

    logging.basicConfig(level=logging.CRITICAL)  # the checks speak for themselves

    def say(text: str) -> None:
        print(f"doctor: {text}", file=sys.stderr, flush=True)

    run = doctor.run(
        args.config,
        call=args.call,
        dtmf_wait=args.dtmf_wait,
        use_mic=args.mic,
        say=None if args.json else say,
    )
    try:
        checks = asyncio.run(run)
    except KeyboardInterrupt:
        return EXIT_ERROR
    print(doctor.report(checks, args.json))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_ERROR


def cmd_devices(args: argparse.Namespace) -> int:
    from intercom.media.audio import AudioDeviceError
    from intercom.media.devices import format_devices, list_devices

    try:
        print(format_devices(list_devices()))
    except AudioDeviceError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# ------------------------------------------------------------------------------ run
def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    trace = config.log.sip_trace or args.sip_trace
    _setup_logging(args.log_level or config.log.level, trace)
    from intercom.daemon import Daemon

    async def main() -> int:
        return await Daemon(config, args.config, trace=trace, mqtt_debug=args.mqtt_debug).run()

    return asyncio.run(main())


# ------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> int:
    from intercom.demo import DemoOptions, run_demo

    # The demo's own lines tell the story; the log would repeat it.
    _setup_logging(args.log_level or "error", args.sip_trace)
    options = DemoOptions(once=args.once, talk=args.talk, broker=args.broker)
    try:
        return asyncio.run(run_demo(options, out=sys.stdout))
    except KeyboardInterrupt:
        # Stopping the endless demo is how it ends; stopping --once means a step never came.
        if args.once:
            print("\ndemo interrupted before every step happened", file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intercom", description="pi-intercom: a SIP door intercom for the Raspberry Pi."
    )
    parser.add_argument("--version", action="version", version=f"pi-intercom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, config: bool = True) -> None:
        if config:
            p.add_argument("-c", "--config", required=True, help="the YAML configuration file")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        p.add_argument(
            "--sip-trace", action="store_true", help="log every SIP message (secrets masked)"
        )
        p.add_argument(
            "--mqtt-debug", action="store_true", help="log every MQTT message sent and received"
        )

    p = sub.add_parser(
        "check-config", help="validate a configuration file, listing all errors and warnings"
    )
    p.add_argument("-c", "--config", required=True, help="the YAML configuration file")
    p.add_argument(
        "--secret-files",
        action="store_true",
        help="only list the files the config names that hold secrets (key, tab, path)",
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("run", help="the daemon: register and keep the door reachable")
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ring", help="place one call, to TARGETs or to call.targets")
    common(p)
    p.add_argument("targets", nargs="*", metavar="TARGET", help="extension or SIP URI")
    p.add_argument("--talk", type=float, metavar="SECONDS", help="hang up after this long")
    p.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    p.add_argument(
        "--play", metavar="FILE.wav", help="send this WAV file instead of the microphone"
    )
    p.add_argument(
        "--record", metavar="FILE.wav", help="record what is heard instead of playing it"
    )
    p.set_defaults(func=cmd_ring)

    p = sub.add_parser(
        "doctor", help="check the config, the PBX, the sound card, MQTT, GPIO and a test call"
    )
    p.add_argument("-c", "--config", required=True, help="the YAML configuration file")
    p.add_argument("--json", action="store_true", help="the results as one JSON object")
    p.add_argument(
        "--call",
        metavar="TARGET",
        help="end with a test call to TARGET (extension or SIP URI): ring, audio, DTMF",
    )
    p.add_argument(
        "--dtmf-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="during --call, how long to wait for a key pressed on the phone (0: skip)",
    )
    p.add_argument(
        "--mic", action="store_true", help="during --call, send the microphone, not a test tone"
    )
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("devices", help="list the sound cards' inputs and outputs")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="a door call to a virtual handset, all on this machine")
    common(p, config=False)
    p.add_argument(
        "--talk", type=float, default=3.0, metavar="SECONDS",
        help="how long the resident listens before keying the door code (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--once", action="store_true",
        help="play the story once; exit 0 when every step happened, 1 naming the one that did not",
    )  # fmt: skip
    p.add_argument(
        "--broker", choices=["auto", "mosquitto", "embedded", "none"], default="auto",
        help="the MQTT broker: mosquitto if installed, else the embedded one (default auto)",
    )  # fmt: skip
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # lgpio (gpiozero's pin library on a Pi) makes its notification pipes in $LG_WD, else in the
    # current directory, which the service user can seldom write when an installer runs
    # `sudo -u pi-intercom intercom doctor` from a home directory. The unit sets its own.
    os.environ.setdefault("LG_WD", tempfile.gettempdir())
    if getattr(args, "config", None) and not Path(args.config).exists():
        print(f"{args.config}: no such file", file=sys.stderr)
        return EXIT_ERROR
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
