"""Try the door's MQTT discovery against a real Home Assistant, on loopback, and report.

What it does, in about half a minute once the Home Assistant virtualenv exists:

1. Makes (once, cached under ``--venv``) a Python 3.13 virtualenv with Home Assistant 2025.4.4,
   paho-mqtt 2.1.0 and the frontend package (without them Home Assistant starts in recovery mode).
2. Starts Mosquitto on a free loopback port (``tests/peers/mosquitto.py``) and Home Assistant with
   a generated config dir: a minimal ``configuration.yaml`` (``http`` on 127.0.0.1 and a free port,
   ``api``, nothing that goes online), an MQTT config entry pointing at the broker (discovery
   prefix ``homeassistant``) and a long-lived access token for the REST API, all written under
   ``.storage`` before it starts.
3. Runs the daemon's own MQTT pieces in-process: one ``intercom.mqtt.bridge.MqttBridge`` per door,
   publishing ``discovery_messages(DiscoveryInfo(...), mode)``, for four doors (``entity`` and
   ``device`` form, each with the door-open button on and off) plus one that switches form later,
   and the retained states the daemon publishes (``call/state``, ``sip/registered``, and
   ``call/last`` as ``intercom/app.py`` builds it).
4. Step 1, the doors start while Home Assistant runs. Through the REST API: every entity is there
   (and no other), the states are right and available, a ``ring`` and an ``answered`` doorbell
   event arrive with their attributes, then every call state, last-call result and event type is
   published once (Home Assistant only logs the ones it refuses), then every button is pressed
   (``POST /api/services/button/press``) and must reach its door, not retained.
   Step 2, Home Assistant restarts (retained configs, its birth message, the doors' answer):
   entities and states again. Step 3, one door restarts in the ``device`` form instead of the
   ``entity`` form: same entities, same entity ids, buttons still work.
5. Stops Home Assistant with SIGTERM (which flushes its registries) and checks
   ``.storage/core.entity_registry`` (every unique id, platform ``mqtt``, the right domain, the
   door-open button only where enabled, on the door's device) and ``core.device_registry``, and
   that no ``home-assistant.<start>.log`` has a WARNING or ERROR from
   ``homeassistant.components.mqtt`` or naming our topics (those are printed).

Exit status 0 when every check passes, 1 otherwise (each failure is printed). Run it with
``scripts/ha-check``; ``--keep`` keeps the work dir (configs, logs) for a look afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import glob
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intercom import __version__  # noqa: E402
from intercom.config import MqttConfig  # noqa: E402
from intercom.controller import CALL_STATES  # noqa: E402
from intercom.mqtt.bridge import MqttBridge  # noqa: E402
from intercom.mqtt.discovery import (  # noqa: E402
    EVENT_TYPES,
    LAST_RESULTS,
    DiscoveryInfo,
    Mode,
    discovery_messages,
    last_call_result,
)
from intercom.mqtt.topics import Topics, default_base  # noqa: E402
from tests.peers.mosquitto import Mosquitto  # noqa: E402
from tests.peers.mqtt_client import MqttProbe  # noqa: E402

HA_VERSION = "2025.4.4"
REQUIREMENTS = (
    f"homeassistant=={HA_VERSION}",
    "paho-mqtt==2.1.0",
    "home-assistant-frontend==20250411.0",
)
DEFAULT_VENV = Path("~/.cache/pi-intercom/ha-venv").expanduser()
PREFIX = "homeassistant"
SWITCHED = "hacheck_switch"  # the door whose discovery form changes during the check
LOOPBACK = "127.0.0.1"

#: (domain, object_id) of every entity a door offers; open_door only with door opening enabled.
ENTITIES = (
    ("event", "doorbell"),
    ("button", "ring"),
    ("button", "hangup"),
    ("button", "open_door"),
    ("sensor", "call_state"),
    ("sensor", "last_call"),
    ("binary_sensor", "sip_registered"),
)
#: The entity names in the discovery payloads, to find the entities in the REST API's states
#: (friendly name "<device name> <entity name>"). Cross-checked against the registry at the end.
NAMES = {
    "doorbell": "Doorbell",
    "ring": "Ring",
    "hangup": "Hang up",
    "open_door": "Open door",
    "call_state": "Call state",
    "last_call": "Last call",
    "sip_registered": "SIP registration",
}

# A log line of Home Assistant: "2025-05-01 12:00:00.123 WARNING (MainThread) [logger] message".
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? (?P<level>[A-Z]+) \((?P<thread>[^)]*)\) "
    r"\[(?P<logger>[^\]]+)\] (?P<message>.*)$"
)


class CheckError(RuntimeError):
    """Something the check could not even set up (virtualenv, broker, Home Assistant)."""


def say(text: str) -> None:
    print(f"ha-check: {text}", flush=True)


# ------------------------------------------------------------------------------------------------
# The Home Assistant virtualenv.


def find_python313() -> str:
    """A Python 3.13 interpreter: python3.13 on PATH, else one of pyenv's versions."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser()
    candidates = [shutil.which("python3.13") or ""]
    candidates += sorted(glob.glob(str(pyenv_root / "versions" / "3.13*" / "bin" / "python3.13")))
    candidates += ["/usr/local/bin/python3.13", "/usr/bin/python3.13"]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv; sys.exit(sys.version_info[:2] != (3, 13))"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:  # a pyenv shim without 3.13 selected fails here
            return candidate
    raise CheckError(
        "no Python 3.13 found (on PATH or under pyenv's versions); Home Assistant "
        f"{HA_VERSION} needs it: pyenv install 3.13"
    )


def ensure_venv(venv: Path) -> Path:
    """The ``hass`` of a virtualenv with REQUIREMENTS, made (about 2 min) when it is missing."""
    stamp = venv / ".ha-check-installed"
    hass = venv / "bin" / "hass"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted and hass.exists():
        return hass
    python = find_python313()
    say(f"creating the Home Assistant virtualenv in {venv} with {python} (about 2 minutes)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    result = subprocess.run([*pip, *REQUIREMENTS], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CheckError(f"pip install {' '.join(REQUIREMENTS)} failed:\n{result.stderr[-4000:]}")
    stamp.write_text(wanted)
    return hass


# ------------------------------------------------------------------------------------------------
# The Home Assistant config dir.


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(refresh_id: str, jwt_key: str) -> str:
    """An HS256 JWT as Home Assistant issues for a long-lived token (iss = the token's id)."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"iss": refresh_id, "iat": now - 60, "exp": now + 86400}).encode())
    signed = f"{header}.{claims}".encode()
    signature = _b64(hmac.new(jwt_key.encode(), signed, hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


def _store(key: str, data: Any, *, version: int = 1, minor: int = 1) -> str:
    return json.dumps({"version": version, "minor_version": minor, "key": key, "data": data})


def write_config(config_dir: Path, *, broker_port: int, http_port: int) -> str:
    """Write configuration.yaml and .storage; return a bearer token for the REST API."""
    storage = config_dir / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        "# Written by scripts/ha_check.py: no default_config, nothing that goes online.\n"
        "homeassistant:\n"
        "  name: ha-check\n"
        "  latitude: 52.5\n"
        "  longitude: 13.4\n"
        "  elevation: 30\n"
        "  unit_system: metric\n"
        "  time_zone: UTC\n"
        "  country: DE\n"
        "  currency: EUR\n"
        "http:\n"
        f"  server_host: {LOOPBACK}\n"
        f"  server_port: {http_port}\n"
        "api:\n"
        "logger:\n"
        "  default: info\n"
        "  logs:\n"
        "    homeassistant.components.mqtt: debug\n"
    )
    now = datetime.now(UTC).isoformat()
    entry = {
        "created_at": now,
        "data": {"broker": LOOPBACK, "port": broker_port},
        "disabled_by": None,
        "discovery_keys": {},
        "domain": "mqtt",
        "entry_id": secrets.token_hex(13).upper()[:26],
        "minor_version": 2,
        "modified_at": now,
        "options": {"discovery": True, "discovery_prefix": PREFIX},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "subentries": [],
        "title": f"{LOOPBACK}:{broker_port}",
        "unique_id": None,
        "version": 1,
    }
    (storage / "core.config_entries").write_text(
        _store("core.config_entries", {"entries": [entry]}, minor=5)
    )
    user_id = secrets.token_hex(16)
    refresh_id = secrets.token_hex(16)
    jwt_key = secrets.token_hex(64)
    auth = {
        "users": [
            {
                "id": user_id,
                "group_ids": ["system-admin"],
                "is_owner": True,
                "is_active": True,
                "name": "ha-check",
                "system_generated": False,
                "local_only": False,
            }
        ],
        "groups": [],
        "credentials": [],
        "refresh_tokens": [
            {
                "id": refresh_id,
                "user_id": user_id,
                "client_id": None,
                "client_name": "ha-check",
                "client_icon": None,
                "token_type": "long_lived_access_token",
                "created_at": now,
                "access_token_expiration": 86400.0 * 365,
                "token": secrets.token_hex(64),
                "jwt_key": jwt_key,
                "last_used_at": None,
                "last_used_ip": None,
                "expire_at": None,
                "credential_id": None,
                "version": HA_VERSION,
            }
        ],
    }
    (storage / "auth").write_text(_store("auth", auth))
    return access_token(refresh_id, jwt_key)


# ------------------------------------------------------------------------------------------------
# Home Assistant's REST API.


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://{LOOPBACK}:{port}/api"
        self.token = token

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    async def get(self, path: str) -> Any:
        return await asyncio.to_thread(self._request, "GET", path)

    async def post(self, path: str, body: Any) -> Any:
        return await asyncio.to_thread(self._request, "POST", path, body)

    async def states(self) -> dict[str, dict[str, Any]]:
        """Every state, keyed by friendly name (entities with none are left out)."""
        out = {}
        for state in await self.get("/states"):
            name = state.get("attributes", {}).get("friendly_name")
            if name:
                out[name] = state
        return out


# ------------------------------------------------------------------------------------------------
# The doors.


@dataclass
class Door:
    """One door's bridge, as the daemon runs it, and the commands Home Assistant sent it."""

    device_id: str
    mode: Mode
    door_open: bool
    info: DiscoveryInfo
    bridge: MqttBridge
    commands: list[tuple[str, bytes]] = field(default_factory=list)
    #: object_id -> entity_id of the buttons pressed through Home Assistant.
    pressed: dict[str, str] = field(default_factory=dict)

    @property
    def expected(self) -> list[tuple[str, str]]:
        return [(d, o) for d, o in ENTITIES if o != "open_door" or self.door_open]

    def unique_id(self, object_id: str) -> str:
        return f"intercom_{self.device_id}_{object_id}"

    def friendly(self, object_id: str) -> str:
        return f"{self.info.name} {NAMES[object_id]}"

    def label(self) -> str:
        door = "door-open button on" if self.door_open else "door-open button off"
        return f"{self.device_id} ({self.mode} form, {door})"


def last_call_payload(result: str = "answered") -> str:
    """``call/last`` as intercom/app.py publishes it when a call with ``result`` ends."""
    answered = result == "answered"
    reason = "remote_hangup" if answered else result
    return json.dumps(
        {
            "result": last_call_result(reason, answered=answered),
            "reason": reason,
            "code": None,
            "target": "**9",
            "answered_by": "**9",
            "duration": 12.3,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        sort_keys=True,
    )


def make_door(
    broker_port: int,
    mode: Mode,
    door_open: bool,
    device_id: str = "",
    extras: dict[str, Any] | None = None,
) -> Door:
    """One door; ``extras`` (optional DiscoveryInfo fields) replaces the defaults below."""
    device_id = device_id or f"hacheck_{mode}_{'door' if door_open else 'nodoor'}"
    topics = Topics(default_base(device_id))
    mqtt = MqttConfig(host=LOOPBACK, port=broker_port, discovery_prefix=PREFIX, discovery=mode)
    if extras is None:
        extras = {}
        if door_open:  # the optional device and origin fields, to have them validated too
            extras = {
                "configuration_url": f"http://{LOOPBACK}/",
                "suggested_area": "Entrance",
                "support_url": "https://example.org/pi-intercom",
            }
    info = DiscoveryInfo(
        device_id=device_id,
        name=f"Door intercom {device_id}",  # as intercom/app.py names it
        topics=topics,
        prefix=PREFIX,
        sw_version=__version__,
        door_open_enabled=door_open,
        **extras,
    )
    commands: list[tuple[str, bytes]] = []
    bridge = MqttBridge(
        mqtt,
        topics,
        client_id=f"pi-intercom-{device_id}",
        discovery=lambda: discovery_messages(info, mode),
        on_command=lambda topic, payload: commands.append((topic, payload)),
        rediscovery_delay=(0.2, 0.5),
    )
    # As intercom/app.py: the states are set before the bridge starts, then published on connect.
    bridge.set_state(topics.call_state, "idle")
    bridge.set_state(topics.sip_registered, "ON")
    bridge.set_state(topics.call_last, last_call_payload())
    return Door(device_id, mode, door_open, info, bridge, commands)


# ------------------------------------------------------------------------------------------------
# The run.


@dataclass
class Run:
    failures: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        say(f"FAIL: {text}")

    def ok(self, text: str) -> None:
        say(f"ok: {text}")


async def wait_for(probe: Any, timeout: float, interval: float = 0.3) -> tuple[bool, Any]:
    """Poll the coroutine function ``probe`` until it returns a true value or time runs out."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            last = await probe()
            if last:
                return True, last
        if time.monotonic() > deadline:
            return False, last
        await asyncio.sleep(interval)


async def wait_entities(
    run: Run, api: Api, doors: list[Door], timeout: float, when: str
) -> list[Door]:
    """Wait for every expected entity in the REST API's states; fail on unexpected ones.

    Returns the doors whose entities are all there, for the checks that follow.
    """
    wanted = {door.friendly(o) for door in doors for _, o in door.expected}

    async def all_there() -> bool:
        return wanted <= set(await api.states())

    started = time.monotonic()
    await wait_for(all_there, timeout)
    states = await api.states()
    complete = []
    for door in doors:
        missing = [door.friendly(o) for _, o in door.expected if door.friendly(o) not in states]
        if missing:
            run.fail(f"{when}: {door.label()}: never appeared: {', '.join(missing)}")
        else:
            complete.append(door)
    ours = {
        name: state["entity_id"]
        for name, state in states.items()
        if any(name.startswith(door.info.name + " ") for door in doors)
    }
    for name in sorted(set(ours) - wanted):
        run.fail(f"{when}: unexpected entity {ours[name]} ({name!r})")
    for entity_id in sorted(e for e in ours.values() if re.search(r"_\d+$", e)):
        run.fail(f"{when}: {entity_id} looks like a duplicate entity (numbered entity id)")
    if len(complete) == len(doors):
        elapsed = time.monotonic() - started
        run.ok(f"{when}: all {len(wanted)} entities of {len(doors)} doors ({elapsed:.1f} s)")
    return complete


async def check_states(run: Run, api: Api, doors: list[Door], when: str) -> None:
    """The retained states the bridge published, as Home Assistant shows them; all available."""

    def problems(states: dict[str, dict[str, Any]]) -> list[str]:
        out = []
        for door in doors:
            expect = {"call_state": "idle", "last_call": "answered", "sip_registered": "on"}
            for object_id, value in expect.items():
                state = states.get(door.friendly(object_id), {})
                if state.get("state") != value:
                    out.append(
                        f"{door.label()}: {door.friendly(object_id)} is "
                        f"{state.get('state')!r}, expected {value!r}"
                    )
            last = states.get(door.friendly("last_call"), {}).get("attributes", {})
            if last.get("reason") != "remote_hangup" or last.get("answered_by") != "**9":
                out.append(f"{door.label()}: Last call lacks call/last's attributes: {last}")
            for _, object_id in door.expected:
                state = states.get(door.friendly(object_id), {})
                if state.get("state") == "unavailable":
                    out.append(f"{door.label()}: {door.friendly(object_id)} is unavailable")
        return out

    async def right() -> bool:
        return not problems(await api.states())

    await wait_for(right, 10)
    found = problems(await api.states())
    for problem in found:
        run.fail(f"{when}: {problem}")
    if not found:
        run.ok(f"{when}: everything available; call state idle, last call answered (with its")
        say("    attributes), SIP registration on")


async def check_events(run: Run, api: Api, doors: list[Door]) -> None:
    """A ring and an answered event, with the attributes intercom/app.py gives them."""
    for event_type, attributes in (
        ("ring", {"source": "mqtt", "targets": ["**9"]}),
        ("answered", {"target": "**9", "incoming": False}),
    ):
        for door in doors:
            door.bridge.event(event_type, **attributes)

        def shown(states: dict[str, dict[str, Any]], door: Door) -> dict[str, Any]:
            attrs: dict[str, Any] = states.get(door.friendly("doorbell"), {}).get("attributes", {})
            return attrs

        async def seen(event_type: str = event_type) -> bool:
            states = await api.states()
            return all(shown(states, d).get("event_type") == event_type for d in doors)

        got, _ = await wait_for(seen, 10)
        states = await api.states()
        for door in doors:
            attrs = shown(states, door)
            if attrs.get("event_type") != event_type:
                run.fail(f"{door.label()}: the {event_type} event did not arrive: {attrs}")
            elif any(attrs.get(k) != v for k, v in attributes.items()):
                run.fail(f"{door.label()}: the {event_type} event lost its attributes: {attrs}")
        if got:
            run.ok(f"every Doorbell event entity shows the {event_type!r} event and its attributes")


async def sweep(run: Run, api: Api, doors: list[Door]) -> None:
    """Every call state, every last-call result and every event type once, then back to idle.

    Home Assistant refuses an enum state outside ``options`` and an event type outside
    ``event_types`` only in its log, which :func:`check_log` reads.
    """
    for door in doors:
        topics = door.info.topics
        for state in CALL_STATES:
            door.bridge.set_state(topics.call_state, state)
        for result in LAST_RESULTS:
            door.bridge.set_state(topics.call_last, last_call_payload(result))
        for event_type in EVENT_TYPES:
            door.bridge.event(event_type, reason="ha-check")
        door.bridge.set_state(topics.call_state, "idle")
        door.bridge.set_state(topics.call_last, last_call_payload())

    async def done() -> bool:
        states = await api.states()
        return all(
            states.get(d.friendly("doorbell"), {}).get("attributes", {}).get("event_type")
            == EVENT_TYPES[-1]
            for d in doors
        )

    if (await wait_for(done, 10))[0]:
        run.ok(
            f"published {len(CALL_STATES)} call states, {len(LAST_RESULTS)} last-call results "
            f"and {len(EVENT_TYPES)} event types to every door (see the log check)"
        )
    else:
        run.fail(f"the last swept event ({EVENT_TYPES[-1]}) never showed in Home Assistant")


async def check_buttons(run: Run, api: Api, doors: list[Door]) -> None:
    """Every button pressed through Home Assistant's API arrives at its door, not retained."""
    states = await api.states()
    pressed: dict[str, tuple[Door, str]] = {}
    for door in doors:
        for domain, object_id in door.expected:
            if domain == "button":
                entity_id = states[door.friendly(object_id)]["entity_id"]
                await api.post("/services/button/press", {"entity_id": entity_id})
                pressed[entity_id] = (door, object_id)
                door.pressed[object_id] = entity_id
    topic_of = {"ring": "call_ring", "hangup": "call_hangup", "open_door": "door_open"}

    async def all_received() -> bool:
        return all(
            (getattr(d.info.topics, topic_of[o]), b"PRESS") in d.commands
            for d, o in pressed.values()
        )

    got, _ = await wait_for(all_received, 10)
    for entity_id, (door, object_id) in pressed.items():
        topic = getattr(door.info.topics, topic_of[object_id])
        if (topic, b"PRESS") not in door.commands:
            run.fail(f"{door.label()}: pressing {entity_id} sent nothing on {topic}")
    for door in doors:
        if door.bridge.ignored_retained:
            run.fail(f"{door.label()}: {door.bridge.ignored_retained} retained command(s)")
    if got:
        run.ok(f"pressed {len(pressed)} buttons with POST /api/services/button/press: each door")
        say("    received PRESS on the right command topic, not retained")


def check_registries(run: Run, config_dir: Path, doors: list[Door]) -> None:
    storage = config_dir / ".storage"
    try:
        registry = json.loads((storage / "core.entity_registry").read_text())["data"]
        devices = json.loads((storage / "core.device_registry").read_text())["data"]["devices"]
    except (OSError, ValueError, KeyError) as exc:
        run.fail(f"could not read Home Assistant's registries: {exc}")
        return
    by_unique = {(e["platform"], e["unique_id"]): e for e in registry["entities"]}
    deleted = {(e["platform"], e["unique_id"]) for e in registry.get("deleted_entities", [])}
    count = 0
    failures = len(run.failures)
    for door in doors:
        device = next(
            (
                d
                for d in devices
                if ["mqtt", door.info.device_object_id] in d.get("identifiers", [])
            ),
            None,
        )
        if device is None:
            run.fail(f"{door.label()}: no device with identifier {door.info.device_object_id}")
            continue
        want = {
            "name": door.info.name,
            "manufacturer": door.info.manufacturer,
            "model": door.info.model,
            "sw_version": door.info.sw_version,
        }
        if door.info.configuration_url:
            want["configuration_url"] = door.info.configuration_url
        for key, value in want.items():
            if device.get(key) != value:
                run.fail(f"{door.label()}: device {key} is {device.get(key)!r}, not {value!r}")
        for domain, object_id in ENTITIES:
            key = ("mqtt", door.unique_id(object_id))
            entry = by_unique.get(key)
            if object_id == "open_door" and not door.door_open:
                if entry is not None or key in deleted:
                    run.fail(f"{door.label()}: {key[1]} exists although door opening is off")
                continue
            if entry is None:
                run.fail(f"{door.label()}: no registry entry with unique_id {key[1]}")
                continue
            count += 1
            if not entry["entity_id"].startswith(f"{domain}."):
                run.fail(f"{door.label()}: {key[1]} is {entry['entity_id']}, not a {domain}")
            if entry.get("device_id") != device["id"]:
                run.fail(f"{door.label()}: {entry['entity_id']} is not on the door's device")
            if object_id == "sip_registered" and entry.get("entity_category") != "diagnostic":
                run.fail(f"{door.label()}: {entry['entity_id']} is not a diagnostic entity")
            pressed = door.pressed.get(object_id)
            if pressed is not None and pressed != entry["entity_id"]:
                run.fail(f"{door.label()}: pressed {pressed}, but {key[1]} is {entry['entity_id']}")
    if len(run.failures) == failures:
        run.ok(f"entity registry: {count} entities, unique ids, domains and devices as expected")


def _ours(logger: str, text: str) -> bool:
    """A log record about our payloads: from the MQTT integration, or naming our topics/ids."""
    return logger.startswith("homeassistant.components.mqtt") or "intercom" in text


def check_log(run: Run, config_dir: Path) -> None:
    """No WARNING or ERROR from homeassistant.components.mqtt, nor any naming our topics or ids
    (an enum state out of its options is logged elsewhere); other ones are only shown."""
    logs = sorted(config_dir.glob("home-assistant.*.log"))  # one per start, see Hass.start
    if not logs:
        run.fail(f"no home-assistant.*.log in {config_dir}")
        return
    records: list[tuple[str, list[str]]] = []  # (logger, lines) of WARNING and worse
    for log in logs:
        current: list[str] | None = None
        for line in log.read_text(errors="replace").splitlines():
            match = LOG_LINE.match(line)
            if match is None:
                if current is not None and line.strip():  # a traceback or a continued message
                    current.append(line)
                continue
            current = None
            if match["level"] in ("WARNING", "ERROR", "CRITICAL"):
                current = [f"{log.name}: {line}"]
                records.append((match["logger"], current))
    bad = [lines for logger, lines in records if _ours(logger, "\n".join(lines))]
    other = [lines for logger, lines in records if not _ours(logger, "\n".join(lines))]
    for lines in bad:
        say("    " + lines[0])
        for line in lines[1:40]:
            say("        " + line)
    if bad:
        run.fail(f"Home Assistant logged {len(bad)} WARNING/ERROR record(s) about our MQTT")
    else:
        names = ", ".join(log.name for log in logs)
        run.ok("no WARNING or ERROR from homeassistant.components.mqtt (or naming intercom) in")
        say(f"    {names}")
    if other:
        say("warnings and errors from other parts of Home Assistant (not counted):")
        for lines in other[:40]:
            say("    " + lines[0])


class Hass:
    """One Home Assistant, started and stopped as often as the check needs."""

    def __init__(self, hass: Path, config_dir: Path, api: Api, probe: MqttProbe) -> None:
        self.hass = hass
        self.config_dir = config_dir
        self.api = api
        self.probe = probe
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self, timeout: float) -> None:
        """Start it and return once its API answers and its MQTT birth message is out."""
        self.probe.clear()
        self.starts += 1
        started = time.monotonic()
        out = (self.config_dir / "hass.stdout").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        # A log file per start: Home Assistant would rotate a shared one, keeping one old copy.
        log = self.config_dir / f"home-assistant.{self.starts}.log"
        self.proc = subprocess.Popen(
            [
                str(self.hass),
                *("-c", str(self.config_dir), "--skip-pip", "--log-no-color"),
                *("--log-file", str(log)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        out.close()
        proc = self.proc

        async def api_up() -> bool:
            if proc.poll() is not None:
                raise CheckError(
                    f"Home Assistant exited with {proc.returncode}; "
                    f"see {self.config_dir}/hass.stdout and home-assistant.log"
                )
            return (await self.api.get("/")) is not None

        up, _ = await wait_for(api_up, timeout)
        if not up:
            raise CheckError(f"Home Assistant's API did not answer within {timeout} s")
        api_s = time.monotonic() - started

        async def born() -> bool:
            return any(
                m.payload == b"online" and not m.retain
                for m in self.probe.messages(f"{PREFIX}/status")
            )

        if not (await wait_for(born, timeout))[0]:
            raise CheckError(f"Home Assistant sent no MQTT birth message within {timeout} s")
        say(
            f"Home Assistant answers after {api_s:.1f} s, its MQTT birth message came after "
            f"{time.monotonic() - started:.1f} s"
        )

    def stop(self, run: Run, timeout: float = 60.0) -> None:
        """SIGTERM: a clean stop, which writes the registries; SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stopped = time.monotonic()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                run.fail("Home Assistant did not stop on SIGTERM: its registries may be stale")
                return
        say(f"Home Assistant stopped ({proc.returncode}) in {time.monotonic() - stopped:.1f} s")


async def run_check(args: argparse.Namespace, workdir: Path, run: Run) -> None:
    hass_bin = ensure_venv(args.venv)
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    say(f"mosquitto on {broker.hostport}; Home Assistant {HA_VERSION} from {args.venv}")
    config_dir = workdir / "ha"
    http_port = free_tcp_port()
    token = write_config(config_dir, broker_port=broker.port, http_port=http_port)
    probe = MqttProbe(LOOPBACK, broker.port, client_id="ha-check-probe")
    probe.connect()
    probe.subscribe(f"{PREFIX}/status")
    hass = Hass(hass_bin, config_dir, Api(http_port, token), probe)
    doors = [
        make_door(broker.port, mode, door_open)
        for mode in ("entity", "device")
        for door_open in (True, False)
    ]
    # A fifth door that starts in the entity form and is switched to the device form in step 3.
    doors.append(make_door(broker.port, "entity", True, SWITCHED))
    try:
        # 1. Home Assistant runs, then the doors start: their removals and configs arrive live.
        await hass.start(args.timeout)
        for door in doors:
            door.bridge.start()
        when = "doors started after Home Assistant"
        complete = await wait_entities(run, hass.api, doors, args.discovery_timeout, when)
        if complete:
            await check_states(run, hass.api, complete, when)
            await check_events(run, hass.api, complete)
            await sweep(run, hass.api, complete)
            await check_buttons(run, hass.api, complete)
        # 2. Home Assistant restarts: it reads the retained configs and states, and the doors
        #    answer its birth message with everything again (removals included).
        await asyncio.sleep(args.settle)
        hass.stop(run)
        await hass.start(args.timeout)
        await asyncio.sleep(max(d.bridge.rediscovery_delay[1] for d in doors) + args.settle)
        when = "after a Home Assistant restart"
        complete = await wait_entities(run, hass.api, doors, args.discovery_timeout, when)
        if complete:
            await check_states(run, hass.api, complete, when)
        # 3. One door restarts with `discovery: device` instead of `entity`: its removals of the
        #    entity configs come first, then the device config reuses the same unique ids.
        old = doors[-1]
        states = await hass.api.states()
        before = {o: states.get(old.friendly(o), {}).get("entity_id") for _, o in old.expected}
        await old.bridge.stop()
        new = doors[-1] = make_door(broker.port, "device", True, SWITCHED)
        new.bridge.start()
        await asyncio.sleep(args.settle)
        when = f"after switching {SWITCHED} from the entity to the device form"
        if await wait_entities(run, hass.api, [new], args.discovery_timeout, when):
            await check_states(run, hass.api, [new], when)
            await check_buttons(run, hass.api, [new])
            states = await hass.api.states()
            after = {o: states.get(new.friendly(o), {}).get("entity_id") for _, o in new.expected}
            if after != before:
                run.fail(f"{when}: entity ids changed from {before} to {after}")
            else:
                run.ok(f"{when}: same entity ids as before")
        await asyncio.sleep(args.settle)
    finally:
        for door in doors:
            with contextlib.suppress(Exception):
                await door.bridge.stop()
        hass.stop(run)
        probe.close()
        broker.stop()
    check_registries(run, config_dir, doors)
    check_log(run, config_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"the Home Assistant virtualenv, made when missing (default {DEFAULT_VENV})",
    )
    parser.add_argument("--workdir", type=Path, help="work dir (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    parser.add_argument("--timeout", type=float, default=60.0, help="Home Assistant's start-up")
    parser.add_argument(
        "--discovery-timeout", type=float, default=15.0, help="wait for the entities"
    )
    parser.add_argument("--settle", type=float, default=3.0, help="wait before stopping HA")
    args = parser.parse_args(argv)
    args.venv = args.venv.expanduser()

    began = time.monotonic()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ha-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run()
    try:
        asyncio.run(run_check(args, workdir, run))
    except (CheckError, subprocess.CalledProcessError, OSError) as exc:
        run.fail(f"could not run the check: {exc}")
    elapsed = time.monotonic() - began
    if run.failures:
        say(f"{len(run.failures)} failure(s) in {elapsed:.0f} s; work dir kept: {workdir}")
        for failure in run.failures:
            say(f"  - {failure}")
        return 1
    say(f"all checks passed in {elapsed:.0f} s")
    if args.keep or args.workdir:
        say(f"work dir: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
