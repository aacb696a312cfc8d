"""Home Assistant MQTT discovery: pure functions from a :class:`DiscoveryInfo` to messages.

Every message is a ``(topic, payload, retain)`` tuple, as in mqtt-io's ``home_assistant.py``:
nothing here touches a socket or a clock, so the bridge only publishes what it is given, and the
tests compare the output with golden files under ``tests/data/discovery/``. Payloads are compact
JSON with sorted keys, so the same input always gives the same bytes (and a retained config that
did not change is republished identically).

Conventions (the project's HOME_ASSISTANT.md notes and the Home Assistant MQTT docs):

* Two forms. ``entity`` (the default, for every release): one retained config per entity at
  ``<prefix>/<component>/<device_id>/<object_id>/config``. ``device``: one retained config at
  ``<prefix>/device/intercom_<device_id>/config`` with ``device``, ``origin``, ``availability``
  and ``components``, for releases with device-based discovery. ``off``: removals only.
* Full key names only, never the abbreviations (``stat_t``, ``dev``...): the payloads are read by
  people in MQTT Explorer far more often than memory on a Pi is short.
* ``unique_id`` is ``intercom_<device_id>_<object_id>``, the same in both forms, so an entity
  keeps its identity across restarts and reinstalls, and comes back as the same entity after a
  change of form (:func:`migration_messages` also keeps its settings through that change). It
  never depends on the name, the base topic or the prefix.
* ``availability`` lists the status topic only: ``online``/``offline`` are Home Assistant's
  defaults for ``payload_available``/``payload_not_available``, so naming them adds nothing.
* An empty retained payload (``""``) removes a config; retained, it also clears the broker's
  copy, so a removed entity doesn't come back when Home Assistant restarts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from intercom.controller import CALL_STATES
from intercom.mqtt.topics import Topics, check_topic

__all__ = [
    "CALL_STATES",
    "EVENT_TYPES",
    "LAST_RESULTS",
    "MODES",
    "DiscoveryInfo",
    "Message",
    "Mode",
    "device_message",
    "device_topic",
    "discovery_messages",
    "entity_messages",
    "entity_topic",
    "last_call_result",
    "migration_messages",
    "removal_messages",
]

#: ``(topic, payload, retain)``: what the bridge hands to ``client.publish``.
Message = tuple[str, str, bool]

Mode = Literal["entity", "device", "off"]
MODES: tuple[Mode, ...] = get_args(Mode)

#: The doorbell's event types. Home Assistant ignores (with a warning) an event whose type is not
#: listed here, and wants ``ring`` on every ``doorbell`` event entity.
EVENT_TYPES = (
    "ring",
    "answered",
    "no_answer",
    "busy",
    "rejected",
    "failed",  # the call could not be made: wrong credentials, PBX unreachable, codec mismatch
    "ended",
    "door_opened",
    "door_refused",
    "door_lockout",
    "dtmf",
)

#: Values of ``result`` on ``call/last`` and so the options of the "Last call" enum sensor. A
#: call that was answered reports ``answered`` whatever ended it later (hang-up on either side,
#: ``max_duration``, ``rtp_timeout``: those reasons only happen after an answer and are in the
#: ``reason`` attribute). Any other call reports its end reason, one of
#: :data:`intercom.sip.events.END_REASONS`. Home Assistant refuses an enum state that is not an
#: option, so this list must cover every such reason; a unit test holds it to ``END_REASONS``.
LAST_RESULTS = (
    "answered",
    "no_answer",
    "busy",
    "rejected",
    "not_found",
    "unavailable",
    "cancelled",
    "local_hangup",
    "auth_failed",
    "timeout",
    "error",
)

#: The payload Home Assistant sends on a button's command topic (its default, stated anyway
#: because the bridge compares against it).
PAYLOAD_PRESS = "PRESS"
#: ``sip/registered`` payloads (binary_sensor defaults, stated for the same reason).
PAYLOAD_ON = "ON"
PAYLOAD_OFF = "OFF"

ORIGIN_NAME = "pi-intercom"

_ID = re.compile(r"[a-zA-Z0-9_-]+")
_URL_SCHEMES = ("http", "https", "homeassistant")


def last_call_result(reason: str, *, answered: bool) -> str:
    """The ``result`` to publish on ``call/last`` for a call that ended with ``reason``."""
    result = "answered" if answered else reason
    if result not in LAST_RESULTS:
        raise ValueError(
            f"end reason {reason!r} of an unanswered call is not in LAST_RESULTS; "
            "add it there, or Home Assistant will reject the Last call state"
        )
    return result


def _check_url(url: str | None, what: str) -> None:
    """Home Assistant rejects the whole payload for a bad URL, so refuse it here instead."""
    if url is None:
        return
    parsed = urlparse(url)
    needs_host = parsed.scheme in ("http", "https")
    if parsed.scheme not in _URL_SCHEMES or (needs_host and not parsed.netloc):
        raise ValueError(
            f"{what} {url!r} is not a URL Home Assistant accepts: use http://, https:// "
            "or homeassistant://"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryInfo:
    """Everything the discovery payloads depend on, checked when built.

    ``sw_version`` and ``door_open_enabled`` have no default on purpose: the version belongs in
    the caller's hands (goldens pin it), and the door-open button must be a decision.
    """

    device_id: str
    name: str
    topics: Topics
    sw_version: str
    door_open_enabled: bool
    prefix: str = "homeassistant"
    model: str = "Raspberry Pi SIP intercom"
    manufacturer: str = "pi-intercom"
    configuration_url: str | None = None
    suggested_area: str | None = None
    #: No project URL is published yet, so none is made up; set it once there is one.
    support_url: str | None = None

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.device_id):
            raise ValueError(
                f"device id {self.device_id!r} can't be used in discovery topics and unique ids: "
                "use only letters, digits, '_' and '-'"
            )
        if not self.name.strip():
            raise ValueError("device name is empty; Home Assistant shows it on every entity")
        check_topic(self.prefix, "discovery prefix")
        _check_url(self.configuration_url, "configuration_url")
        _check_url(self.support_url, "support_url")

    @property
    def device_object_id(self) -> str:
        """``intercom_<device_id>``: the device's identifier and its device-discovery object id."""
        return f"intercom_{self.device_id}"


# --------------------------------------------------------------------------------------------
# The entities, in one place: (component, object_id, component-specific keys).


def _entities(
    info: DiscoveryInfo, *, every: bool = False
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The entities the door offers with ``info`` (with ``every``, also those it has switched
    off), in a fixed order."""
    t = info.topics
    yield (
        "event",
        "doorbell",
        {
            "name": "Doorbell",
            "device_class": "doorbell",
            "event_types": list(EVENT_TYPES),
            "state_topic": t.event,
        },
    )
    yield "button", "ring", _button("Ring", t.call_ring, "mdi:phone-outgoing")
    yield "button", "hangup", _button("Hang up", t.call_hangup, "mdi:phone-hangup")
    if info.door_open_enabled or every:
        yield "button", "open_door", _button("Open door", t.door_open, "mdi:door-open")
    yield (
        "sensor",
        "call_state",
        {
            "name": "Call state",
            "device_class": "enum",
            "options": list(CALL_STATES),
            "state_topic": t.call_state,
            "icon": "mdi:phone",
        },
    )
    yield (
        "sensor",
        "last_call",
        {
            "name": "Last call",
            "device_class": "enum",
            "options": list(LAST_RESULTS),
            "state_topic": t.call_last,
            "value_template": "{{ value_json.result }}",
            "json_attributes_topic": t.call_last,
            "icon": "mdi:phone-log",
        },
    )
    yield (
        "binary_sensor",
        "sip_registered",
        {
            "name": "SIP registration",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": t.sip_registered,
            "payload_on": PAYLOAD_ON,
            "payload_off": PAYLOAD_OFF,
        },
    )


def _button(name: str, command_topic: str, icon: str) -> dict[str, Any]:
    # No "retain": Home Assistant must never leave a retained press behind, or a restart of the
    # door (or of the broker) would replay it and ring or open the door.
    return {
        "name": name,
        "command_topic": command_topic,
        "payload_press": PAYLOAD_PRESS,
        "icon": icon,
    }


def _switched_off(info: DiscoveryInfo) -> list[tuple[str, str]]:
    """(component, object_id) of the entities that ``info`` switches off, in a fixed order."""
    enabled = {object_id for _, object_id, _ in _entities(info)}
    return [(c, o) for c, o, _ in _entities(info, every=True) if o not in enabled]


# --------------------------------------------------------------------------------------------
# Shared blocks.


def _device(info: DiscoveryInfo) -> dict[str, Any]:
    device: dict[str, Any] = {
        "identifiers": [info.device_object_id],
        "name": info.name,
        "manufacturer": info.manufacturer,
        "model": info.model,
        "sw_version": info.sw_version,
    }
    if info.configuration_url is not None:
        device["configuration_url"] = info.configuration_url
    if info.suggested_area is not None:
        device["suggested_area"] = info.suggested_area
    return device


def _origin(info: DiscoveryInfo) -> dict[str, Any]:
    origin: dict[str, Any] = {"name": ORIGIN_NAME, "sw_version": info.sw_version}
    if info.support_url is not None:
        origin["support_url"] = info.support_url
    return origin


def _availability(info: DiscoveryInfo) -> list[dict[str, str]]:
    return [{"topic": info.topics.status}]


def _unique_id(info: DiscoveryInfo, object_id: str) -> str:
    return f"intercom_{info.device_id}_{object_id}"


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Topics and messages.


def entity_topic(info: DiscoveryInfo, component: str, object_id: str) -> str:
    """``<prefix>/<component>/<device_id>/<object_id>/config`` (the node id is the device id)."""
    return f"{info.prefix}/{component}/{info.device_id}/{object_id}/config"


def device_topic(info: DiscoveryInfo) -> str:
    """``<prefix>/device/intercom_<device_id>/config``."""
    return f"{info.prefix}/device/{info.device_object_id}/config"


def entity_messages(info: DiscoveryInfo) -> list[Message]:
    """One retained config per entity (the ``entity`` form). Configs only, no removals."""
    messages: list[Message] = []
    for component, object_id, keys in _entities(info):
        payload = {
            **keys,
            "unique_id": _unique_id(info, object_id),
            "device": _device(info),
            "origin": _origin(info),
            "availability": _availability(info),
        }
        messages.append((entity_topic(info, component, object_id), _dumps(payload), True))
    return messages


def device_message(info: DiscoveryInfo) -> Message:
    """The one retained config of the ``device`` form.

    An optional entity that is off (the door-open button) is listed with its ``platform`` alone:
    that is how device discovery removes one component. For a component Home Assistant never
    saw, it does nothing, so it is sent every time rather than tracked.
    """
    components: dict[str, dict[str, Any]] = {
        object_id: {"platform": component, "unique_id": _unique_id(info, object_id), **keys}
        for component, object_id, keys in _entities(info)
    }
    for component, object_id in _switched_off(info):
        components[object_id] = {"platform": component}
    payload = {
        "device": _device(info),
        "origin": _origin(info),
        "availability": _availability(info),
        "components": components,
    }
    return device_topic(info), _dumps(payload), True


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"discovery mode {mode!r} is unknown; use one of {', '.join(MODES)}")


def removal_messages(info: DiscoveryInfo, mode: Mode) -> list[Message]:
    """Empty retained payloads for every config that ``mode`` must not leave behind.

    * ``entity``: the entity topics of optional entities that are off (the door-open button when
      door opening is disabled). Not the device topic: see the comment in the code.
    * ``device``: every entity topic, in case the door used ``entity`` before. (A disabled
      door-open button is removed inside the device config, see :func:`device_message`.)
    * ``off``: every entity topic and the device topic.

    The pure builders can't know which form was used before, so every removal a switch might
    need is listed, every time. A removal of a config that never existed is a no-op, with one
    cost: Home Assistant logs a warning for an empty payload on a device topic it has nothing
    for ("No device components to cleanup"; releases without device discovery warn "Integration
    device is not supported"). A bridge that wants quiet logs subscribes to the topics of
    ``removal_messages(info, "off")`` (every discovery topic this door can use), and publishes
    only the removals of retained configs it saw there.

    A plain switch deletes the old form's entities in Home Assistant and the new configs create
    them again under the same unique ids (see :func:`migration_messages` to keep their settings).
    Removals come first in :func:`discovery_messages` so that Home Assistant handles them before
    the configs that reuse those unique ids.
    """
    _check_mode(mode)
    if mode == "entity":
        topics = [entity_topic(info, c, o) for c, o in _switched_off(info)]
    else:
        topics = [entity_topic(info, c, o) for c, o, _ in _entities(info, every=True)]
    if mode == "off":
        # Not in ``entity`` mode: Home Assistant warns at every start about an empty payload on
        # a device topic it has nothing for. Switching from ``device`` back to ``entity`` goes
        # through ``off`` once, or through :func:`migration_messages`.
        topics.append(device_topic(info))
    return [(topic, "", True) for topic in topics]


def discovery_messages(info: DiscoveryInfo, mode: Mode) -> list[Message]:
    """What to publish for ``mode`` (after every connect and every Home Assistant ``online``):
    the removals of :func:`removal_messages`, then the configs of that form."""
    _check_mode(mode)
    messages = removal_messages(info, mode)
    if mode == "entity":
        messages += entity_messages(info)
    elif mode == "device":
        messages.append(device_message(info))
    return messages


def migration_messages(info: DiscoveryInfo, mode: Mode) -> list[Message]:
    """Optional: hand the entities over to ``mode``'s form without losing their settings.

    A plain switch (:func:`discovery_messages`) deletes the entities of the old form and creates
    them again with the same unique ids: renamed entity ids and areas chosen in Home Assistant
    are lost. Home Assistant's documented hand-over keeps them: publish these
    ``{"migrate_discovery": true}`` payloads on the old form's topics, then (once Home Assistant
    has logged the hand-over) the new configs, then the removals. ``off`` has nothing to migrate.
    """
    _check_mode(mode)
    marker = _dumps({"migrate_discovery": True})
    if mode == "device":
        return [
            (entity_topic(info, component, object_id), marker, True)
            for component, object_id, _ in _entities(info)
        ]
    if mode == "entity":
        return [(device_topic(info), marker, True)]
    return []
