"""Take the README's screenshot of Home Assistant's device page for a door (docs/images/).

Everything runs on loopback, reusing scripts/ha_check.py: its cached Home Assistant 2025.4.4
virtualenv, Mosquitto on a free port, a generated config dir (plus the frontend, the recorder and
the logbook here, and onboarding marked done) and the daemon's own ``MqttBridge`` publishing
discovery for one door, ``front_door``, as ``intercom/app.py`` would: entity form, door-open
button on. The door then goes through one call as the daemon reports it (ring from the button,
calling, ringing, answered, door opened by DTMF, hung up after opening, ``call/last``), so every
entity has a real state and the logbook a story.

Headless Chromium (Debian's ``chromium``) is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``, stdlib only): the frontend's ``hassTokens`` are put in
localStorage before the page loads, so it is logged in with the owner's token that ha_check
writes. Every host but 127.0.0.1 resolves to nothing and any proxied request goes to a dead
loopback port, so the browser sends nothing off this machine (requests it tried anyway, such as
the integration's brand icon, are listed). The page is shot once the device's entities have
rendered, then shrunk with pngquant and optipng when they are installed.

    .venv/bin/python scripts/ha_screenshot.py             writes docs/images/ha-device.png
    .venv/bin/python scripts/ha_screenshot.py --out x.png --width 1440 --height 1100 --keep

Needs Debian's chromium (apt-get install chromium; pngquant and optipng are optional) and
Python 3.13 for Home Assistant's virtualenv, which ha_check makes on first use (about 2 min).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ha_check as hc  # scripts/ is sys.path[0] when this runs as a script

DEVICE_ID = "front_door"
DEFAULT_OUT = hc.ROOT / "docs" / "images" / "ha-device.png"
USER_NAME = "Sam"  # the owner, shown at the foot of the sidebar
LOCATION = "Home"
TARGET = "**9"  # the FRITZ!Box's "ring every phone"

#: Added to ha_check's configuration.yaml: what the device page needs and shows, all local.
EXTRA_CONFIG = """\
frontend:
config:
recorder:
  commit_interval: 1
logbook:
history:
automation: []
script: {}
scene: []
"""

#: Page script: the text of the page, shadow roots included, to tell when it has rendered.
PAGE_TEXT_JS = """
(() => {
  const out = [];
  const walk = (root) => {
    const it = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let n = it.currentNode; n; n = it.nextNode()) {
      if (n.nodeType === Node.TEXT_NODE) { if (n.nodeValue.trim()) out.push(n.nodeValue.trim()); }
      else if (n.shadowRoot) walk(n.shadowRoot);
    }
  };
  walk(document);
  return out.join("\\n");
})()
"""


def say(text: str) -> None:
    print(f"ha-screenshot: {text}", flush=True)


# ------------------------------------------------------------------------------------------------
# Home Assistant's config dir: ha_check's, plus the frontend and a finished onboarding.


def write_config(config_dir: Path, *, broker_port: int, http_port: int) -> tuple[str, str]:
    """ha_check's config dir made fit for a browser; returns (access token, refresh token)."""
    token = hc.write_config(config_dir, broker_port=broker_port, http_port=http_port)
    yaml = config_dir / "configuration.yaml"
    text = yaml.read_text().replace("name: ha-check", f"name: {LOCATION}")
    yaml.write_text(text + EXTRA_CONFIG)
    storage = config_dir / ".storage"
    auth_file = storage / "auth"
    auth = json.loads(auth_file.read_text())
    auth["data"]["users"][0]["name"] = USER_NAME
    auth_file.write_text(json.dumps(auth))
    # Without it the frontend sends the browser to /onboarding.html.
    onboarding = {"done": ["user", "core_config", "analytics", "integration"]}
    (storage / "onboarding").write_text(hc._store("onboarding", onboarding, version=4))
    refresh: str = auth["data"]["refresh_tokens"][0]["token"]
    return token, refresh


def hass_tokens(base: str, access: str, refresh: str) -> dict[str, Any]:
    """localStorage ``hassTokens`` as the frontend saves them after a login."""
    return {
        "hassUrl": base,
        "clientId": f"{base}/",
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": 86400,
        "expires": int(time.time() * 1000) + 3_600_000,  # never refreshed during the shot
    }


# ------------------------------------------------------------------------------------------------
# The door and its call.


def call_last(reason: str, duration: float) -> str:
    """``call/last`` as intercom/app.py publishes it after an answered call."""
    return json.dumps(
        {
            "result": hc.last_call_result(reason, answered=True),
            "reason": reason,
            "code": None,
            "target": TARGET,
            "answered_by": TARGET,
            "duration": duration,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        sort_keys=True,
    )


async def one_call(door: hc.Door, step: float) -> None:
    """What the daemon publishes for a ring answered on the phone that opens the door by DTMF."""
    bridge, topics = door.bridge, door.info.topics
    steps: list[tuple[str, tuple[str, dict[str, Any]] | None]] = [
        ("calling", ("ring", {"source": "button", "targets": [TARGET]})),
        ("ringing", None),
        ("in_call", ("answered", {"target": TARGET, "incoming": False})),
        ("in_call", ("door_opened", {"how": "dtmf", "who": TARGET})),
    ]
    for state, event in steps:
        bridge.set_state(topics.call_state, state)
        if event is not None:
            bridge.event(event[0], **event[1])
        await asyncio.sleep(step)
    bridge.set_state(topics.call_state, "ended")
    bridge.set_state(topics.call_last, call_last("local_hangup", 14.2))
    bridge.event("ended", reason="local_hangup", duration=14.2)
    await asyncio.sleep(step)
    bridge.set_state(topics.call_state, "idle")


async def device_registry_id(api: hc.Api, door: hc.Door) -> str:
    """The device registry's id of the door, through the template API."""
    states = await api.states()
    entity_id = states[door.friendly("call_state")]["entity_id"]
    template = f"{{{{ device_id('{entity_id}') | to_json }}}}"
    device: Any = await api.post("/template", {"template": template})
    if not isinstance(device, str) or not device:
        raise hc.CheckError(f"no device for {entity_id}: {device!r}")
    return device


# ------------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol on a pipe.


class CdpError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium with ``--remote-debugging-pipe``: NUL-terminated JSON on fds 3 and 4."""

    def __init__(self, binary: str, profile: Path, *, log: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: our pipe ends become its fds 3 (in), 4 (out)
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [
            binary,
            "--headless",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--force-color-profile=srgb",
            "--lang=en-US",
            # Nothing leaves the machine: no name resolves but loopback, and any request that
            # would go out is sent to a dead loopback proxy instead (loopback bypasses it).
            f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {hc.LOOPBACK}",
            f"--proxy-server=http://{hc.LOOPBACK}:9",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(2, "--no-sandbox")
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                close_fds=False,  # fds 3 and 4 must reach it; ours are close-on-exec anyway
                preexec_fn=wire_pipes,
                start_new_session=True,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            reply = self._read(deadline - time.monotonic())
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise CdpError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    def _read(self, timeout: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(timeout, 0))
            if not ready:
                raise CdpError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise CdpError(f"Chromium closed the pipe (exit {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError, CdpError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=5)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)


def shoot(
    chromium: str,
    workdir: Path,
    url: str,
    tokens: dict[str, Any],
    *,
    size: tuple[int, int],
    wanted: list[str],
    timeout: float,
) -> tuple[bytes, list[str]]:
    """A PNG of ``url`` once every string of ``wanted`` is on it; and the off-machine requests
    the page tried (all of them failed)."""
    browser = Chromium(chromium, workdir / "chromium-profile", log=workdir / "chromium.log")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

        def page(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
            return browser.call(method, params, session=session)

        page("Network.enable")
        page("Page.enable")
        page(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
        )
        origin = json.dumps(tokens["hassUrl"])
        store = json.dumps(json.dumps(tokens))
        page(
            "Page.addScriptToEvaluateOnNewDocument",
            {"source": f"if (location.origin === {origin}) localStorage.hassTokens = {store};"},
        )
        page("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        missing = wanted
        while True:
            text = page("Runtime.evaluate", {"expression": PAGE_TEXT_JS, "returnByValue": True})
            shown = text.get("result", {}).get("value") or ""
            missing = [w for w in wanted if w not in shown]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise hc.CheckError(f"the device page never showed {missing}:\n{shown[:2000]}")
            time.sleep(0.5)
        time.sleep(3)  # the logbook, the icons and the cards' transitions
        png = page("Page.captureScreenshot", {"format": "png"})["data"]
        tried = sorted(
            {
                e["params"]["request"]["url"]
                for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"
                and not e["params"]["request"]["url"].startswith(
                    (f"http://{hc.LOOPBACK}", "ws://", "data:", "blob:", "about:")
                )
            }
        )
        return base64.b64decode(png), tried
    finally:
        browser.close()


def shrink(path: Path) -> None:
    """pngquant (lossy palette) then optipng, when installed: a screenshot drops to ~1/3."""
    before = path.stat().st_size
    if shutil.which("pngquant"):
        quant = ["pngquant", "--force", "--skip-if-larger", "--quality=70-95", "--strip"]
        subprocess.run([*quant, "--output", str(path), str(path)], check=False)
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", "-strip", "all", str(path)], check=False)
    say(f"{path}: {before // 1024} KiB, {path.stat().st_size // 1024} KiB after shrinking")


# ------------------------------------------------------------------------------------------------
# The run.


async def run(args: argparse.Namespace, workdir: Path) -> None:
    chromium = shutil.which(args.chromium) or args.chromium
    if not os.access(chromium, os.X_OK):
        raise hc.CheckError(f"no {args.chromium}: apt-get install chromium")
    hass_bin = hc.ensure_venv(args.venv)
    broker = hc.Mosquitto(workdir / "mosquitto")
    broker.start()
    config_dir = workdir / "ha"
    http_port = hc.free_tcp_port()
    access, refresh = write_config(config_dir, broker_port=broker.port, http_port=http_port)
    probe = hc.MqttProbe(hc.LOOPBACK, broker.port, client_id="ha-screenshot-probe")
    probe.connect()
    probe.subscribe(f"{hc.PREFIX}/status")
    api = hc.Api(http_port, access)
    hass = hc.Hass(hass_bin, config_dir, api, probe)
    door = hc.make_door(broker.port, "entity", True, DEVICE_ID, extras={})
    checks = hc.Run()
    try:
        await hass.start(args.timeout)
        door.bridge.start()
        if not await hc.wait_entities(checks, api, [door], 30, "door started"):
            raise hc.CheckError("the door's entities never appeared")
        await asyncio.sleep(1)
        await one_call(door, args.step)
        await asyncio.sleep(2)  # the recorder commits every second (EXTRA_CONFIG)
        device = await device_registry_id(api, door)
        # A discovery flow that came and went during start-up leaves "New devices discovered".
        await api.post("/services/persistent_notification/dismiss_all", {})
        base = f"http://{hc.LOOPBACK}:{http_port}"
        url = f"{base}/config/devices/device/{device}"
        say(f"shooting {url}")
        # The entities and their states, and the logbook's latest entry.
        wanted = [door.info.name, *(hc.NAMES[o] for _, o in door.expected)]
        wanted += ["idle", "answered", "Connected", "changed to idle"]
        png, tried = await asyncio.to_thread(
            shoot,
            chromium,
            workdir,
            url,
            hass_tokens(base, access, refresh),
            size=(args.width, args.height),
            wanted=wanted,
            timeout=args.timeout,
        )
    finally:
        with contextlib.suppress(Exception):
            await door.bridge.stop()
        hass.stop(checks)
        probe.close()
        broker.stop()
    for request in tried:
        say(f"the page tried (and failed) to fetch {request}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    if not args.no_shrink:
        shrink(args.out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)  # down to Diagnostic
    parser.add_argument("--chromium", default="chromium", help="the browser (default chromium)")
    parser.add_argument("--venv", type=Path, default=hc.DEFAULT_VENV, help="see ha_check.py")
    parser.add_argument("--workdir", type=Path, help="work dir (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    parser.add_argument("--timeout", type=float, default=60.0, help="HA start-up, page render")
    parser.add_argument("--step", type=float, default=1.5, help="seconds between call steps")
    parser.add_argument("--no-shrink", action="store_true", help="skip pngquant and optipng")
    args = parser.parse_args(argv)
    args.venv = args.venv.expanduser()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ha-screenshot-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run(args, workdir))
    except (hc.CheckError, CdpError, subprocess.CalledProcessError, OSError) as exc:
        say(f"failed: {exc}; work dir kept: {workdir}")
        return 1
    if args.keep or args.workdir:
        say(f"work dir: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
