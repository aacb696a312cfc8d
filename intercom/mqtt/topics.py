"""The MQTT topics of one door, all under one base (``intercom/<device_id>`` by default).

They are named in one place so that the bridge, the discovery payloads and the tests can't drift
apart: Home Assistant only finds a state or reaches a command if the topic in its discovery
config is byte for byte the one the bridge uses.

The base is checked when a :class:`Topics` is built, because a bad base fails late and quietly:
``+`` or ``#`` in a topic we publish to is refused by the broker (paho raises only at publish
time), a leading or trailing ``/`` or an empty level (``a//b``) creates a topic that a human
reading ``intercom/frontdoor/...`` will never subscribe to, and a ``$`` topic is reserved for the
broker (``$SYS``), which drops what clients publish there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Payloads on :attr:`Topics.status`. They are Home Assistant's defaults for
#: ``payload_available`` and ``payload_not_available``, which is why the discovery payloads can
#: list the status topic without naming them.
ONLINE = "online"
OFFLINE = "offline"

_ID = re.compile(r"[a-zA-Z0-9_-]+")


def default_base(device_id: str) -> str:
    """``intercom/<device_id>``: one subtree per door, so several doors can share a broker."""
    if not _ID.fullmatch(device_id):
        raise ValueError(
            f"device id {device_id!r} can't name an MQTT topic: use only letters, digits, "
            "'_' and '-'"
        )
    return f"intercom/{device_id}"


def check_topic(topic: str, what: str = "topic") -> str:
    """``topic`` if it is a plain topic to publish to; otherwise a ValueError naming the fault.

    Shared with the discovery prefix, which has the same rules.
    """
    if not topic:
        raise ValueError(f"{what} is empty")
    for char in "+#":
        if char in topic:
            raise ValueError(
                f"{what} {topic!r} contains the wildcard {char!r}; wildcards are for "
                "subscribing, a topic to publish to can't have them"
            )
    if "\0" in topic:
        raise ValueError(f"{what} {topic!r} contains a NUL character")
    if topic.startswith("/") or topic.endswith("/"):
        raise ValueError(f"{what} {topic!r} starts or ends with '/'; remove it")
    if "//" in topic:
        raise ValueError(f"{what} {topic!r} has an empty level ('//')")
    if topic.startswith("$"):
        raise ValueError(f"{what} {topic!r} starts with '$', which is reserved for the broker")
    return topic


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of one door, derived from ``base``.

    States (``status``, ``call/state``, ``call/last``, ``sip/registered``) are published
    retained so they come back after a restart of Home Assistant; ``event`` is not retained, or
    a ring would replay at every restart; the command topics are only subscribed to.
    """

    base: str

    def __post_init__(self) -> None:
        check_topic(self.base, "MQTT base topic")

    def _sub(self, path: str) -> str:
        return f"{self.base}/{path}"

    @property
    def status(self) -> str:
        """``online``/``offline`` (retained, also the last will): the availability of it all."""
        return self._sub("status")

    @property
    def call_state(self) -> str:
        """One of the call states (``idle``, ``calling``...), retained."""
        return self._sub("call/state")

    @property
    def call_last(self) -> str:
        """JSON about the last call, with its ``result``, retained."""
        return self._sub("call/last")

    @property
    def sip_registered(self) -> str:
        """``ON``/``OFF``: whether the PBX accepted our REGISTER, retained."""
        return self._sub("sip/registered")

    @property
    def event(self) -> str:
        """JSON events with an ``event_type`` (``ring``, ``answered``...), never retained."""
        return self._sub("event")

    @property
    def call_ring(self) -> str:
        """Command: ring the configured targets, as the doorbell button does."""
        return self._sub("call/ring")

    @property
    def call_hangup(self) -> str:
        """Command: end the current call, ringing or established."""
        return self._sub("call/hangup")

    @property
    def door_open(self) -> str:
        """Command: pulse the door strike. Obeyed only when the door opener is enabled."""
        return self._sub("door/open")

    @property
    def commands(self) -> tuple[str, ...]:
        """The topics the bridge subscribes to; anything else that arrives is ignored."""
        return (self.call_ring, self.call_hangup, self.door_open)
