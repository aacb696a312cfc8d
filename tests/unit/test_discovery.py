"""Home Assistant MQTT discovery: topics, payloads, removals, against goldens and tiny schemas.

The goldens (``tests/data/discovery/``) pin the exact bytes; the tables here restate what Home
Assistant requires of each platform, so that a payload that drifts away from it fails even if
someone regenerates the goldens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from typing import Any

import pytest

from intercom.controller import CALL_STATES as CONTROLLER_CALL_STATES
from intercom.mqtt.discovery import (
    CALL_STATES,
    EVENT_TYPES,
    LAST_RESULTS,
    MODES,
    DiscoveryInfo,
    Message,
    device_message,
    device_topic,
    discovery_messages,
    entity_messages,
    entity_topic,
    last_call_result,
    migration_messages,
    removal_messages,
)
from intercom.mqtt.topics import OFFLINE, ONLINE, Topics, default_base
from intercom.sip.events import END_REASONS

DATA = Path(__file__).resolve().parents[1] / "data" / "discovery"

ENTITY_IDS = [
    ("event", "doorbell"),
    ("button", "ring"),
    ("button", "hangup"),
    ("button", "open_door"),
    ("sensor", "call_state"),
    ("sensor", "last_call"),
    ("binary_sensor", "sip_registered"),
]


def make_info(**changes: Any) -> DiscoveryInfo:
    """The door of the goldens: ``frontdoor``, everything at its default, door opening on."""
    fields: dict[str, Any] = {
        "device_id": "frontdoor",
        "name": "Front door",
        "topics": Topics(default_base("frontdoor")),
        "sw_version": "0.1.0",
        "door_open_enabled": True,
    }
    fields.update(changes)
    return DiscoveryInfo(**fields)


INFO = make_info()
NO_DOOR = make_info(door_open_enabled=False)
FULL = make_info(
    configuration_url="http://frontdoor.local/",
    suggested_area="Entrance",
    support_url="https://example.org/pi-intercom",
)


def compact(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payloads(info: DiscoveryInfo) -> dict[tuple[str, str], dict[str, Any]]:
    """Entity-form payloads keyed by (component, object_id), read back from their topics."""
    out = {}
    for topic, payload, _ in entity_messages(info):
        prefix, component, node, object_id, config = topic.split("/")
        assert (prefix, node, config) == (info.prefix, info.device_id, "config")
        out[component, object_id] = json.loads(payload)
    return out


def all_messages(info: DiscoveryInfo) -> Iterator[Message]:
    for mode in MODES:
        yield from discovery_messages(info, mode)
    yield from entity_messages(info)
    yield device_message(info)


# -- Goldens ------------------------------------------------------------------------------------


def load_golden(path: Path) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert set(golden) == {"topic", "retain", "payload"}, path
    return golden


def assert_matches_golden(message: Message, path: Path) -> None:
    topic, payload, retain = message
    golden = load_golden(path)
    assert topic == golden["topic"]
    assert retain is golden["retain"]
    assert json.loads(payload) == golden["payload"]
    assert payload == compact(golden["payload"]), "payload is not compact JSON with sorted keys"


@pytest.mark.parametrize(("component", "object_id"), ENTITY_IDS)
def test_entity_form_matches_its_golden(component: str, object_id: str) -> None:
    by_topic = {m[0]: m for m in entity_messages(INFO)}
    message = by_topic[entity_topic(INFO, component, object_id)]
    assert_matches_golden(message, DATA / "entity" / f"{component}.{object_id}.json")


def test_every_entity_has_a_golden_and_every_golden_an_entity() -> None:
    files = sorted(p.name for p in (DATA / "entity").glob("*.json"))
    produced = sorted(f"{c}.{o}.json" for c, o in payloads(INFO))
    assert files == produced == sorted(f"{c}.{o}.json" for c, o in ENTITY_IDS)


def test_device_form_matches_its_golden() -> None:
    assert_matches_golden(device_message(FULL), DATA / "device" / "frontdoor.json")


def test_entity_order_is_fixed() -> None:
    assert list(payloads(INFO)) == ENTITY_IDS
    assert list(json.loads(device_message(INFO)[1])["components"]) == sorted(
        o for _, o in ENTITY_IDS
    )  # sort_keys: the wire order is alphabetical


# -- What Home Assistant requires -----------------------------------------------------------------

#: Required keys per platform, from the Home Assistant MQTT docs (event.mqtt, button.mqtt,
#: sensor.mqtt, binary_sensor.mqtt), plus what HOME_ASSISTANT.md asks of every entity.
REQUIRED = {
    "event": {"state_topic", "event_types"},
    "button": {"command_topic"},
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
}
EVERY_ENTITY = {"unique_id", "name", "device", "origin", "availability"}
DEVICE_ROOT = {"device", "origin", "availability", "components"}
EVERY_COMPONENT = {"platform", "unique_id", "name"}


@pytest.mark.parametrize("info", [INFO, NO_DOOR, FULL], ids=["door", "no_door", "full"])
def test_required_keys_of_each_platform_entity_form(info: DiscoveryInfo) -> None:
    for (component, object_id), payload in payloads(info).items():
        missing = (REQUIRED[component] | EVERY_ENTITY) - set(payload)
        assert not missing, f"{component}/{object_id} lacks {sorted(missing)}"
        assert "platform" not in payload  # the topic names it in this form


@pytest.mark.parametrize("info", [INFO, NO_DOOR, FULL], ids=["door", "no_door", "full"])
def test_required_keys_of_each_platform_device_form(info: DiscoveryInfo) -> None:
    payload = json.loads(device_message(info)[1])
    assert set(payload) == DEVICE_ROOT
    for object_id, config in payload["components"].items():
        if set(config) == {"platform"}:
            continue  # a removal, see test_open_door_removed_in_the_device_form
        missing = (REQUIRED[config["platform"]] | EVERY_COMPONENT) - set(config)
        assert not missing, f"{object_id} lacks {sorted(missing)}"
        # device and origin are root-only in device discovery; availability is shared there.
        assert not {"device", "origin", "availability"} & set(config)


def test_ring_is_an_event_type() -> None:
    assert "ring" in EVENT_TYPES
    assert "ring" in payloads(INFO)["event", "doorbell"]["event_types"]
    assert payloads(INFO)["event", "doorbell"]["device_class"] == "doorbell"


def test_event_types_and_options_are_unique_lists() -> None:
    for values in (EVENT_TYPES, CALL_STATES, LAST_RESULTS):
        assert len(set(values)) == len(values)
        assert all(re.fullmatch(r"[a-z_]+", v) for v in values)


def test_call_states_are_the_controllers() -> None:
    assert list(CALL_STATES) == ["idle", "calling", "ringing", "in_call", "ended", "error"]
    assert CALL_STATES == CONTROLLER_CALL_STATES
    assert payloads(INFO)["sensor", "call_state"]["options"] == list(CALL_STATES)


#: End reasons that only an answered call can have; such a call reports "answered".
AFTER_ANSWER = {"remote_hangup", "max_duration", "rtp_timeout"}


def test_last_results_cover_every_end_reason_of_an_unanswered_call() -> None:
    assert AFTER_ANSWER <= END_REASONS
    assert set(LAST_RESULTS) == (END_REASONS - AFTER_ANSWER) | {"answered"}
    assert payloads(INFO)["sensor", "last_call"]["options"] == list(LAST_RESULTS)


@pytest.mark.parametrize("reason", sorted(END_REASONS))
def test_last_call_result(reason: str) -> None:
    assert last_call_result(reason, answered=True) == "answered"
    if reason in AFTER_ANSWER:
        with pytest.raises(ValueError, match="LAST_RESULTS"):
            last_call_result(reason, answered=False)
    else:
        assert last_call_result(reason, answered=False) == reason


def test_last_call_reads_the_result_and_keeps_the_rest_as_attributes() -> None:
    last = payloads(INFO)["sensor", "last_call"]
    assert last["value_template"] == "{{ value_json.result }}"
    assert last["state_topic"] == last["json_attributes_topic"] == INFO.topics.call_last


# -- Tiny schemas, one per platform ---------------------------------------------------------------

Check = Callable[[Any], bool]
TOPIC = re.compile(r"[a-zA-Z0-9_/-]+")
UNIQUE_ID = re.compile(r"intercom_[a-zA-Z0-9_-]+")


def text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def topic(value: Any) -> bool:
    return isinstance(value, str) and TOPIC.fullmatch(value) is not None


def one_of(*allowed: str) -> Check:
    return lambda value: value in allowed


def names(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(text(v) for v in value)
        and len(set(value)) == len(value)
    )


def template(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("{{") and value.endswith("}}")


def url(value: Any) -> bool:
    return (
        isinstance(value, str) and re.match(r"(https?://[^/]+|homeassistant://)", value) is not None
    )


def shaped(schema: dict[str, Check], required: set[str]) -> Check:
    def check(value: Any) -> bool:
        return (
            isinstance(value, dict)
            and required <= set(value) <= set(schema)
            and all(schema[k](v) for k, v in value.items())
        )

    return check


DEVICE = shaped(
    {
        "identifiers": names,
        "name": text,
        "manufacturer": text,
        "model": text,
        "sw_version": text,
        "configuration_url": url,
        "suggested_area": text,
    },
    {"identifiers", "name", "manufacturer", "model", "sw_version"},
)
ORIGIN = shaped({"name": one_of("pi-intercom"), "sw_version": text, "support_url": url}, {"name"})


def availability(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 1 and value[0] == {"topic": INFO.topics.status}


COMMON: dict[str, Check] = {
    "name": text,
    "unique_id": lambda v: isinstance(v, str) and UNIQUE_ID.fullmatch(v) is not None,
    "icon": lambda v: isinstance(v, str) and v.startswith("mdi:"),
    "device": DEVICE,
    "origin": ORIGIN,
    "availability": availability,
}

#: Per platform: the keys it may have (beyond COMMON) and a check of each value.
PLATFORM_KEYS: dict[str, dict[str, Check]] = {
    "event": {
        "state_topic": topic,
        "event_types": names,
        "device_class": one_of("doorbell", "button", "motion"),
    },
    "button": {
        "command_topic": topic,
        "payload_press": text,
        "entity_category": one_of("config", "diagnostic"),
    },
    "sensor": {
        "state_topic": topic,
        "device_class": one_of("enum"),
        "options": names,
        "value_template": template,
        "json_attributes_topic": topic,
        "entity_category": one_of("diagnostic"),  # "config" is not allowed on sensors
    },
    "binary_sensor": {
        "state_topic": topic,
        "device_class": one_of("connectivity"),
        "entity_category": one_of("diagnostic"),
        "payload_on": text,
        "payload_off": text,
    },
}


def schema_errors(component: str, payload: dict[str, Any]) -> list[str]:
    schema = {**COMMON, **PLATFORM_KEYS[component]}
    errors = [f"unknown key {k!r}" for k in payload if k not in schema]
    errors += [f"bad {k}: {v!r}" for k, v in payload.items() if k in schema and not schema[k](v)]
    errors += [f"missing {k!r}" for k in sorted(REQUIRED[component] - set(payload))]
    if component == "sensor" and payload.get("device_class") == "enum":
        if "options" not in payload:
            errors.append("an enum sensor needs options")
        forbidden = ("unit_of_measurement", "state_class")
        errors += [f"{k} is not allowed with enum" for k in forbidden if k in payload]
    if "options" in payload and payload.get("device_class") != "enum":
        errors.append("options without device_class enum")
    return errors


@pytest.mark.parametrize("info", [INFO, NO_DOOR, FULL], ids=["door", "no_door", "full"])
def test_entity_payloads_fit_their_platform_schema(info: DiscoveryInfo) -> None:
    for (component, object_id), payload in payloads(info).items():
        assert schema_errors(component, payload) == [], f"{component}/{object_id}"


@pytest.mark.parametrize("info", [INFO, NO_DOOR, FULL], ids=["door", "no_door", "full"])
def test_device_payload_fits_the_schemas(info: DiscoveryInfo) -> None:
    payload = json.loads(device_message(info)[1])
    assert DEVICE(payload["device"]) and ORIGIN(payload["origin"])
    assert availability(payload["availability"])
    for object_id, config in payload["components"].items():
        config = dict(config)
        component = config.pop("platform")
        if not config:
            continue
        assert schema_errors(component, config) == [], object_id


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


def test_the_schemas_catch_bad_payloads() -> None:
    good = payloads(INFO)
    call_state, doorbell = good["sensor", "call_state"], good["event", "doorbell"]
    ring, sip = good["button", "ring"], good["binary_sensor", "sip_registered"]
    assert schema_errors("sensor", {**call_state, "unit_of_measurement": "x"})
    assert schema_errors("sensor", {**call_state, "state_class": "measurement"})
    assert schema_errors("sensor", without(call_state, "options"))
    assert schema_errors("sensor", without(call_state, "state_topic"))
    assert schema_errors("event", without(doorbell, "event_types"))
    assert schema_errors("event", {**doorbell, "event_types": []})
    assert schema_errors("button", without(ring, "command_topic"))
    assert schema_errors("button", {**ring, "stat_t": "x"})
    assert schema_errors("button", {**ring, "retain": True})
    assert schema_errors("binary_sensor", {**sip, "state_topic": "a/+"})
    assert schema_errors("binary_sensor", {**sip, "unique_id": "random-1234"})
    assert schema_errors("binary_sensor", {**sip, "device": {"identifiers": ["x"]}})


def test_entity_and_device_forms_describe_the_same_entities() -> None:
    components = json.loads(device_message(INFO)[1])["components"]
    for (component, object_id), payload in payloads(INFO).items():
        shared = {"device", "origin", "availability"}
        expected = {k: v for k, v in payload.items() if k not in shared}
        assert components[object_id] == {**expected, "platform": component}
    entity = json.loads(entity_messages(INFO)[0][1])
    device = json.loads(device_message(INFO)[1])
    assert {k: entity[k] for k in ("device", "origin", "availability")} == {
        k: device[k] for k in ("device", "origin", "availability")
    }


# -- Abbreviations --------------------------------------------------------------------------------

#: Home Assistant's abbreviations for the keys this door could use (and some it doesn't).
ABBREVIATIONS = {
    "avty", "avty_t", "avty_mode", "pl_avail", "pl_not_avail", "cmd_t", "cmd_tpl", "stat_t",
    "stat_tpl", "val_tpl", "json_attr_t", "json_attr_tpl", "dev", "dev_cla", "ent_cat",
    "evt_typ", "uniq_id", "obj_id", "pl_prs", "pl_on", "pl_off", "ops", "ic", "unit_of_meas",
    "stat_cla", "o", "cmp", "cmps", "p", "ids", "mf", "mdl", "sw", "cu", "sa", "hw", "sn", "url",
    "migr_discvry",
}  # fmt: skip


def keys_of(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from keys_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_of(item)


def test_no_abbreviated_keys() -> None:
    for info in (INFO, NO_DOOR, FULL):
        for _, payload, _ in all_messages(info):
            if payload:
                used = set(keys_of(json.loads(payload)))
                assert not used & ABBREVIATIONS, sorted(used & ABBREVIATIONS)
                assert all(len(key) > 3 for key in used), sorted(used)


# -- Identity -------------------------------------------------------------------------------------


def unique_ids(info: DiscoveryInfo) -> dict[str, str]:
    return {object_id: p["unique_id"] for (_, object_id), p in payloads(info).items()}


def test_unique_ids_are_derived_from_the_device_id() -> None:
    assert unique_ids(INFO) == {o: f"intercom_frontdoor_{o}" for _, o in ENTITY_IDS}
    assert len(set(unique_ids(INFO).values())) == len(ENTITY_IDS)


def test_unique_ids_are_stable() -> None:
    again = make_info()
    assert again == INFO and again is not INFO
    assert entity_messages(again) == entity_messages(INFO)
    assert device_message(again) == device_message(INFO)
    for mode in MODES:
        assert discovery_messages(again, mode) == discovery_messages(INFO, mode)
    # Names, topics, prefix and versions may change; the identity may not.
    moved = make_info(
        name="Back door",
        topics=Topics("house/doors/front"),
        prefix="ha",
        sw_version="9.9.9",
        suggested_area="Garden",
    )
    assert unique_ids(moved) == unique_ids(INFO)
    device_components = json.loads(device_message(INFO)[1])["components"]
    assert {o: c["unique_id"] for o, c in device_components.items()} == unique_ids(INFO)


def test_unique_ids_differ_between_doors() -> None:
    back = make_info(device_id="backdoor", topics=Topics(default_base("backdoor")))
    assert not set(unique_ids(back).values()) & set(unique_ids(INFO).values())
    assert json.loads(entity_messages(back)[0][1])["device"]["identifiers"] == ["intercom_backdoor"]
    assert device_topic(back) != device_topic(INFO)


# -- Topics -------------------------------------------------------------------------------------

#: Home Assistant's own matcher for what follows "<prefix>/" in a discovery topic.
HA_TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def topic_values(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("topic") and isinstance(item, str):
                yield item
            yield from topic_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from topic_values(item)


def test_topics_use_only_safe_characters() -> None:
    for info in (INFO, NO_DOOR, FULL):
        for topic_, payload, _ in all_messages(info):
            assert TOPIC.fullmatch(topic_), topic_
            rest = topic_.removeprefix(f"{info.prefix}/")
            assert HA_TOPIC_MATCHER.fullmatch(rest), topic_
            if payload:
                for value in topic_values(json.loads(payload)):
                    assert TOPIC.fullmatch(value), value


def test_entity_topics_use_the_device_id_as_node_id() -> None:
    assert [m[0] for m in entity_messages(INFO)] == [
        f"homeassistant/{c}/frontdoor/{o}/config" for c, o in ENTITY_IDS
    ]


def test_device_topic() -> None:
    assert device_topic(INFO) == "homeassistant/device/intercom_frontdoor/config"
    assert device_message(INFO)[0] == device_topic(INFO)
    assert discovery_messages(INFO, "device")[-1] == device_message(INFO)


def test_prefix_is_configurable() -> None:
    info = make_info(prefix="ha/discovery")
    for topic_, _, _ in all_messages(info):
        assert topic_.startswith("ha/discovery/"), topic_
    assert device_topic(info) == "ha/discovery/device/intercom_frontdoor/config"
    assert entity_topic(info, "event", "doorbell") == "ha/discovery/event/frontdoor/doorbell/config"


def test_payload_topics_follow_the_base_topic() -> None:
    info = make_info(topics=Topics("house/door"))
    found = {v for _, p, _ in entity_messages(info) for v in topic_values(json.loads(p))}
    assert found == {
        "house/door/status",
        "house/door/event",
        "house/door/call/ring",
        "house/door/call/hangup",
        "house/door/door/open",
        "house/door/call/state",
        "house/door/call/last",
        "house/door/sip/registered",
    }


def test_availability_is_the_status_topic_with_default_payloads() -> None:
    # online/offline are Home Assistant's defaults, so the payloads leave them out.
    assert (ONLINE, OFFLINE) == ("online", "offline")
    for payload in payloads(INFO).values():
        assert payload["availability"] == [{"topic": "intercom/frontdoor/status"}]
        assert "payload_available" not in payload and "payload_not_available" not in payload


# -- Retained, removals and modes -----------------------------------------------------------------


def test_everything_is_retained() -> None:
    for info in (INFO, NO_DOOR, FULL):
        for message in all_messages(info):
            assert message[2] is True, message[0]
        for mode in MODES:
            assert all(m[2] is True for m in migration_messages(info, mode))


def test_buttons_never_ask_for_retained_commands() -> None:
    for (component, _), payload in payloads(INFO).items():
        if component == "button":
            assert payload.get("retain", False) is False
            assert payload["payload_press"] == "PRESS"


def test_open_door_exists_only_when_enabled() -> None:
    assert ("button", "open_door") in payloads(INFO)
    assert payloads(INFO)["button", "open_door"]["command_topic"] == "intercom/frontdoor/door/open"
    assert ("button", "open_door") not in payloads(NO_DOOR)
    assert all("door/open" not in p for _, p, _ in entity_messages(NO_DOOR))


def test_open_door_removed_with_an_empty_payload_when_disabled() -> None:
    topic_ = "homeassistant/button/frontdoor/open_door/config"
    assert (topic_, "", True) in removal_messages(NO_DOOR, "entity")
    assert (topic_, "", True) in discovery_messages(NO_DOOR, "entity")
    assert (topic_, "", True) not in discovery_messages(INFO, "entity")
    assert topic_ in {m[0] for m in entity_messages(INFO)}


def test_open_door_removed_in_the_device_form() -> None:
    components = json.loads(device_message(NO_DOOR)[1])["components"]
    assert components["open_door"] == {"platform": "button"}  # HA: platform alone removes it
    assert "door/open" not in device_message(NO_DOOR)[1]
    assert json.loads(device_message(INFO)[1])["components"]["open_door"]["platform"] == "button"


def test_entity_mode() -> None:
    messages = discovery_messages(NO_DOOR, "entity")
    assert messages == removal_messages(NO_DOOR, "entity") + entity_messages(NO_DOOR)
    assert removal_messages(NO_DOOR, "entity") == [
        ("homeassistant/button/frontdoor/open_door/config", "", True),
    ]
    # No empty payload on the device topic: Home Assistant would warn about it at every start.
    assert removal_messages(INFO, "entity") == []


def test_device_mode_removes_every_entity_topic_first() -> None:
    for info in (INFO, NO_DOOR):
        messages = discovery_messages(info, "device")
        removals = [(entity_topic(info, c, o), "", True) for c, o in ENTITY_IDS]
        assert messages == [*removals, device_message(info)]


def test_removals_come_before_configs() -> None:
    for info in (INFO, NO_DOOR):
        for mode in MODES:
            empties = [bool(m[1]) for m in discovery_messages(info, mode)]
            assert empties == sorted(empties), mode


def test_off_mode_only_removes_everything() -> None:
    every_config_topic = {m[0] for m in entity_messages(INFO)} | {device_topic(INFO)}
    for info in (INFO, NO_DOOR):
        messages = discovery_messages(info, "off")
        assert messages == removal_messages(info, "off")
        assert all(payload == "" and retain for _, payload, retain in messages)
        assert {m[0] for m in messages} == every_config_topic
        assert len(messages) == len(every_config_topic)


def test_unknown_mode_is_refused() -> None:
    for function in (discovery_messages, removal_messages, migration_messages):
        with pytest.raises(ValueError, match="'Entity' is unknown; use one of entity, device, off"):
            function(INFO, "Entity")  # type: ignore[arg-type]


def test_migration_messages() -> None:
    marker = '{"migrate_discovery":true}'
    assert migration_messages(NO_DOOR, "device") == [
        (entity_topic(NO_DOOR, c, o), marker, True) for c, o in ENTITY_IDS if o != "open_door"
    ]
    assert migration_messages(INFO, "entity") == [(device_topic(INFO), marker, True)]
    assert migration_messages(INFO, "off") == []


# -- The device block and the inputs --------------------------------------------------------------


def test_optional_device_fields_only_when_set() -> None:
    device = payloads(INFO)["event", "doorbell"]["device"]
    assert device == {
        "identifiers": ["intercom_frontdoor"],
        "name": "Front door",
        "manufacturer": "pi-intercom",
        "model": "Raspberry Pi SIP intercom",
        "sw_version": "0.1.0",
    }
    assert payloads(INFO)["event", "doorbell"]["origin"] == {
        "name": "pi-intercom",
        "sw_version": "0.1.0",
    }
    full = payloads(FULL)["event", "doorbell"]
    assert full["device"]["configuration_url"] == "http://frontdoor.local/"
    assert full["device"]["suggested_area"] == "Entrance"
    assert full["origin"]["support_url"] == "https://example.org/pi-intercom"


def test_names_outside_ascii_are_sent_as_utf8_text() -> None:
    info = make_info(name="Haustür")
    payload = entity_messages(info)[0][1]
    assert '"name":"Haustür"' in payload
    assert json.loads(payload)["device"]["name"] == "Haustür"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device_id": "front door"}, "device id 'front door'"),
        ({"device_id": "a/b"}, "device id 'a/b'"),
        ({"device_id": ""}, "device id ''"),
        ({"name": "  "}, "device name is empty"),
        ({"prefix": "home/+"}, "discovery prefix 'home/\\+' contains the wildcard"),
        ({"prefix": "/homeassistant"}, "starts or ends with '/'"),
        ({"prefix": ""}, "discovery prefix is empty"),
        ({"configuration_url": "frontdoor.local"}, "configuration_url 'frontdoor.local'"),
        ({"support_url": "ftp://x.org/"}, "support_url 'ftp://x.org/'"),
        ({"support_url": "https://"}, "support_url 'https://'"),
    ],
)
def test_bad_info_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_info(**changes)


def test_homeassistant_urls_are_accepted() -> None:
    info = make_info(configuration_url="homeassistant://config/devices")
    assert payloads(info)["event", "doorbell"]["device"]["configuration_url"].startswith("home")


def test_info_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        INFO.name = "x"  # type: ignore[misc]
    assert replace(INFO, name="Back").name == "Back"


# -- Topics (intercom.mqtt.topics) ----------------------------------------------------------------


def test_topics_of_a_door() -> None:
    t = Topics(default_base("frontdoor"))
    assert t.base == "intercom/frontdoor"
    assert t.status == "intercom/frontdoor/status"
    assert t.call_state == "intercom/frontdoor/call/state"
    assert t.call_last == "intercom/frontdoor/call/last"
    assert t.sip_registered == "intercom/frontdoor/sip/registered"
    assert t.event == "intercom/frontdoor/event"
    assert t.call_ring == "intercom/frontdoor/call/ring"
    assert t.call_hangup == "intercom/frontdoor/call/hangup"
    assert t.door_open == "intercom/frontdoor/door/open"
    assert t.commands == (t.call_ring, t.call_hangup, t.door_open)


def test_state_and_command_topics_are_distinct() -> None:
    t = Topics("x")
    states = {t.status, t.call_state, t.call_last, t.sip_registered, t.event}
    assert len(states) == 5 and not states & set(t.commands) and len(set(t.commands)) == 3


def test_default_base() -> None:
    assert default_base("frontdoor") == "intercom/frontdoor"
    assert default_base("Door-2_b") == "intercom/Door-2_b"
    for bad in ("", "a/b", "a+b", "a#", "front door"):
        with pytest.raises(ValueError, match="can't name an MQTT topic"):
            default_base(bad)


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("", "MQTT base topic is empty"),
        ("intercom/+", "contains the wildcard '\\+'"),
        ("intercom/#", "contains the wildcard '#'"),
        ("#", "wildcard"),
        ("/intercom", "starts or ends with '/'"),
        ("intercom/", "starts or ends with '/'"),
        ("intercom//front", "has an empty level"),
        ("$SYS/intercom", "reserved for the broker"),
        ("intercom/\0", "NUL"),
    ],
)
def test_bad_base_is_refused(base: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topics(base)


def test_topics_are_frozen_and_compare_by_base() -> None:
    assert Topics("a/b") == Topics("a/b") and hash(Topics("a/b")) == hash(Topics("a/b"))
    with pytest.raises(FrozenInstanceError):
        Topics("a").base = "b"  # type: ignore[misc]
