"""Loading and validating the configuration file (``intercom.yaml``).

The door station has no screen: this file is its whole user interface, and the person editing it
is usually on an SSH session next to a half-mounted intercom. That shapes the module:

* Every problem is reported at once, one line each, in the form
  ``<key path>: <problem>; got <value>; <what is allowed or the fix>``, so a restart loop of
  "fix one thing, see the next error" never happens. Pydantic does the validation; its
  multi-line, type-centric messages are translated into those lines (:func:`_translate`).
* Unknown keys are errors (``extra="forbid"``), with a "did you mean" hint, because a silently
  ignored misspelled ``ring_timout`` is worse than a refused start.
* YAML 1.1 surprises are defused in the loader: ``0620`` stays the text ``"0620"`` instead of
  becoming the octal number 400, ``1:30`` is not read as 90, and duplicate keys (where PyYAML
  would silently keep the last one) are errors.
* The SIP password never appears in an error line, a ``repr`` or the redacted dump; it is held as
  :class:`pydantic.SecretStr` and handed out only by :meth:`SipConfig.secret`.

All models are frozen: the configuration is read once at start-up and shared between the SIP,
media and MQTT tasks, so nobody may change it under the others' feet.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticKnownError

from intercom import __version__
from intercom.errors import ConfigError

__all__ = [
    "DEFAULT_TARGETS",
    "MAX_PULSE",
    "PASSWORD_ENV",
    "REDACTED",
    "AudioConfig",
    "CallConfig",
    "ChimeConfig",
    "Config",
    "DoorConfig",
    "DoorbellConfig",
    "IncomingConfig",
    "LedConfig",
    "LogConfig",
    "MediaConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "SipConfig",
    "check_address",
    "describe",
    "load_config",
    "parse_config",
]

PASSWORD_ENV = "INTERCOM_SIP_PASSWORD"
MQTT_PASSWORD_ENV = "INTERCOM_MQTT_PASSWORD"
"""Environment variable consulted when the file gives neither a password nor a password file."""

REDACTED = "***"
"""What :meth:`Config.redacted_dict` shows instead of a password."""

DEFAULT_TARGETS: tuple[str, ...] = ("**9",)
"""``**9`` is the FRITZ!Box "ring all telephones" number, the most common home PBX."""

_HIDDEN = "<hidden>"
_CUSTOM = "intercom_config"  # error type of the PydanticCustomErrors raised below
_EXAMPLE_FILE = "config/intercom.example.yaml"


# --------------------------------------------------------------------------------------------
# Field types. Each one exists because YAML or users hand us something pydantic would otherwise
# reject (or, worse, accept) in a surprising way.


def _fail(problem: str, fix: str = "") -> PydanticCustomError:
    """Build an error whose message is already in our wording, so _translate passes it through."""
    return PydanticCustomError(_CUSTOM, problem, {"fix": fix})


def _number_to_text(value: object) -> object:
    """Accept ``username: 620``: YAML reads the extension as an int, but a SIP user is text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _reject_bool(value: object) -> object:
    """Refuse ``ring_timeout: yes``; pydantic's lax mode would quietly turn it into 1 second."""
    if isinstance(value, bool):
        raise PydanticKnownError("int_type")
    return value


def _lower(value: object) -> object:
    """Let ``transport: UDP`` or ``level: INFO`` through; case carries no meaning there."""
    return value.lower() if isinstance(value, str) else value


def _scalar_to_list(value: object) -> object:
    """Accept ``targets: "**9"`` for the one-target case instead of demanding list syntax."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [value]
    return value


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _check_host(value: str) -> str:
    """Accept a host name or an IP address, and catch the usual "URI instead of host" mix-ups.

    The host is put into Request-URIs and used as the outbound proxy, so a scheme or a port in
    it would produce broken SIP messages much later and far from the cause.
    """
    if not value:
        raise _fail("must not be empty", "give a host name or an IP address")
    if any(ch.isspace() for ch in value):
        raise _fail("must not contain spaces", "give a host name or an IP address")
    if "://" in value or value.lower().startswith(("sip:", "sips:")):
        raise _fail("must be a bare host name or IP address, without a scheme", "e.g. fritz.box")
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if ":" in value:
        raise _fail("must not include a port", "put the port number into sip.port")
    if re.fullmatch(r"[0-9.]+", value):
        raise _fail("is not a valid IPv4 address", "e.g. 192.168.178.1")
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _fail(
            "is not a valid host name or IP address",
            "use letters, digits, '-' and '.', e.g. fritz.box",
        )
    return value


def _check_user(value: str) -> str:
    """A SIP user part (``620``, ``**610``): no spaces, no ``@``, which belongs to the domain."""
    if not value:
        raise _fail("must not be empty")
    if any(ch.isspace() for ch in value):
        raise _fail("must not contain spaces")
    if "@" in value:
        raise _fail("must be only the user part, without '@'", "put the host into sip.domain")
    return value


def check_address(value: str) -> str:
    """A number to dial or a caller to allow: an extension (``**9``) or a SIP URI.

    The one check for every address the door dials or admits: ``call.targets``,
    ``incoming.allow`` and the targets named in an MQTT ``call/ring`` command. A target ends up
    in an INVITE's request line and its To header, so a control character (CR/LF above all) or a
    space would let one value write SIP of its own. A bare ``620@fritz.box`` is refused with a
    hint rather than guessed at, so the file always says exactly what is sent on the wire.

    Raises :class:`ValueError` (pydantic's custom error, so that the config's messages keep
    their form): ``str(exc)`` is the problem, ``exc.context["fix"]`` the fix.
    """
    example = "an extension like **9 or a SIP URI like sip:620@fritz.box"
    if not value:
        raise _fail("must not be empty", f"give {example}")
    if not value.isprintable():
        raise _fail("must be one line without control characters", f"give {example}")
    if any(ch.isspace() for ch in value) or any(ch in value for ch in '<>"'):
        raise _fail("must not contain spaces, '<', '>' or '\"'", f"give {example}")
    scheme, sep, rest = value.partition(":")
    if sep:
        if scheme.lower() not in ("sip", "sips"):
            raise _fail(f"has the unsupported URI scheme '{scheme}'", f"give {example}")
        if not rest:
            raise _fail("is a SIP URI without a user or host", f"give {example}")
        return value
    if "@" in value:
        raise _fail("looks like a SIP address without 'sip:'", f"write it as 'sip:{value}'")
    return value


def _check_printable(value: str) -> str:
    """Header values must not carry CR/LF, or one config line could inject a SIP header."""
    if not value or not value.isprintable():
        raise _fail("must be non-empty printable text on one line")
    return value


def _no_duplicates(values: tuple[str, ...]) -> tuple[str, ...]:
    """Listing a target twice would ring the same phone twice in a parallel call."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise _fail(f"lists '{value}' twice", "remove the duplicate")
        seen.add(value)
    return values


_Int = Annotated[int, BeforeValidator(_reject_bool)]
_Text = Annotated[str, BeforeValidator(_number_to_text)]
_Host = Annotated[str, AfterValidator(_check_host)]
_User = Annotated[str, BeforeValidator(_number_to_text), AfterValidator(_check_user)]
_Address = Annotated[str, BeforeValidator(_number_to_text), AfterValidator(check_address)]
_AddressList = Annotated[
    tuple[_Address, ...], BeforeValidator(_scalar_to_list), AfterValidator(_no_duplicates)
]
_Secret = Annotated[SecretStr, BeforeValidator(_number_to_text)]

_MODEL_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    # Defence in depth: should anyone print a raw ValidationError, the password stays out of it.
    hide_input_in_errors=True,
)

_SECONDS: JsonDict = {"unit": "seconds"}  # read back by _int_problem for the messages


# --------------------------------------------------------------------------------------------
# The schema. Field names are a public interface (they are the keys of intercom.yaml).


# ``register`` is a public key name, and pydantic warns that it shadows ABCMeta.register. The
# field only shadows it on instances; the class keeps the metaclass method, so nothing breaks.
warnings.filterwarnings(
    "ignore", message='Field name "register" in "SipConfig" shadows', category=UserWarning
)


class SipConfig(BaseModel):
    """Registration with the PBX and the identity the door uses in SIP.

    ``password`` holds the *resolved* password, whichever source it came from
    (``sip.password``, ``sip.password_file`` or ``$INTERCOM_SIP_PASSWORD``); read it with
    :meth:`secret`. ``password_file``, when set, is the absolute path it was read from.
    """

    model_config = _MODEL_CONFIG

    server: _Host = Field(
        description="the registrar and outbound proxy, a host name or IP address",
        examples=["192.168.1.1"],
    )
    port: _Int = Field(default=5060, ge=1, le=65535, description="the server's SIP port")
    transport: Annotated[Literal["udp", "tcp"], BeforeValidator(_lower)] = "udp"
    username: _User = Field(
        description="the SIP user name the door registers as (often its extension)",
        examples=['"620"'],
    )
    password: _Secret | None = None
    password_file: Path | None = None
    auth_username: _User | None = None
    domain: _Host | None = None
    local_port: _Int = Field(
        default=5060, ge=0, le=65535, description="the local SIP port, 0 = any"
    )
    register: bool = True
    expires: _Int = Field(default=300, ge=60, le=86400, json_schema_extra=_SECONDS)
    trusted_sources: Annotated[
        tuple[_Host, ...], BeforeValidator(_scalar_to_list), AfterValidator(_no_duplicates)
    ] = Field(
        default=(),
        description="more addresses (besides the server's own) that may send calls and requests",
    )
    user_agent: Annotated[str, AfterValidator(_check_printable)] = f"pi-intercom/{__version__}"

    _password_source: str | None = PrivateAttr(None)

    @field_validator("password")
    @classmethod
    def _password_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty password is always a mistake; the PBX would answer with 403 much later."""
        if value is not None and not value.get_secret_value():
            raise _fail(
                "must not be empty",
                f"remove the key to use sip.password_file or ${PASSWORD_ENV} instead",
            )
        return value

    def secret(self) -> str | None:
        """The SIP password in clear text, or None when no source gave one.

        This is the only way to get at the password, so a grep for ``secret()`` finds every
        place it is used (digest authentication, nothing else).
        """
        return None if self.password is None else self.password.get_secret_value()

    @property
    def password_source(self) -> str | None:
        """Where the password came from: ``sip.password``, ``sip.password_file``, the
        environment variable name, or None; shown by ``intercom check-config``."""
        return self._password_source

    @property
    def effective_domain(self) -> str:
        """The SIP domain for AORs and digest realms: ``domain``, else ``server``.

        Kept as a property instead of filling in ``domain`` so the model still says what the
        file said, and a dump of it round-trips.
        """
        return self.domain if self.domain is not None else self.server

    @property
    def effective_auth_username(self) -> str:
        """The user name for digest authentication: ``auth_username``, else ``username``."""
        return self.auth_username if self.auth_username is not None else self.username


class CallConfig(BaseModel):
    """What happens when the bell button is pressed."""

    model_config = _MODEL_CONFIG

    targets: _AddressList = Field(
        default=DEFAULT_TARGETS,
        description="the extensions or SIP URIs to ring",
        examples=['["**9"]'],
    )
    strategy: Annotated[Literal["parallel", "sequential"], BeforeValidator(_lower)] = "parallel"
    ring_timeout: _Int = Field(default=30, ge=1, le=600, json_schema_extra=_SECONDS)
    max_duration: _Int = Field(default=300, ge=10, le=86400, json_schema_extra=_SECONDS)

    @field_validator("targets")
    @classmethod
    def _at_least_one(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """A bell that calls nobody is a mistake. Checked here rather than with ``min_length``,
        which pydantic also reports when the only entries are invalid, doubling the error."""
        if not value:
            raise _fail("must list at least one target", 'e.g. targets: ["**9"]')
        return value


class IncomingConfig(BaseModel):
    """Who may call the door, and when it picks up. Empty ``allow`` means nobody may."""

    model_config = _MODEL_CONFIG

    allow: _AddressList = ()
    answer_after: _Int | None = Field(default=2, ge=0, le=60, json_schema_extra=_SECONDS)


_CODECS = ("G722", "PCMA", "PCMU")


def _check_codecs(value: tuple[str, ...]) -> tuple[str, ...]:
    upper = tuple(v.upper() for v in value)
    for name in upper:
        if name not in _CODECS:
            raise _fail(f"unknown codec {name!r}", f"allowed: {', '.join(_CODECS)}")
    if not upper:
        raise _fail("must list at least one codec", "e.g. codecs: [G722, PCMA, PCMU]")
    if len(set(upper)) != len(upper):
        raise _fail("lists a codec twice", "name each codec once, in order of preference")
    return upper


def _check_audio_spec(value: str) -> str:
    """``default``, a device index, a device name (substring), or ``file:PATH``."""
    value = value.strip()
    if not value:
        raise _fail("must not be empty", "use default, a device index or name, or file:PATH")
    if value.startswith("file:") and len(value) == len("file:"):
        raise _fail("file: needs a path", "e.g. file:/var/lib/pi-intercom/greeting.wav")
    return value


_AudioSpec = Annotated[str, BeforeValidator(_number_to_text), AfterValidator(_check_audio_spec)]
_GainDb = Annotated[float, BeforeValidator(_reject_bool)]


class AudioConfig(BaseModel):
    """The sound card (or files) and the codecs, in order of preference."""

    model_config = _MODEL_CONFIG

    input: _AudioSpec = Field(
        default="default", description="microphone: default, an index, a name or file:PATH"
    )
    output: _AudioSpec = Field(
        default="default", description="speaker: default, an index, a name or file:PATH"
    )
    codecs: Annotated[
        tuple[str, ...], BeforeValidator(_scalar_to_list), AfterValidator(_check_codecs)
    ] = ("G722", "PCMA", "PCMU")
    input_gain_db: _GainDb = Field(default=0.0, ge=-40, le=40)
    output_gain_db: _GainDb = Field(default=0.0, ge=-40, le=40)


class MediaConfig(BaseModel):
    """RTP: the port range the PBX sends audio to, the silence time-out and the jitter buffer."""

    model_config = _MODEL_CONFIG

    rtp_port_min: _Int = Field(default=16384, ge=1024, le=65534)
    rtp_port_max: _Int = Field(default=16482, ge=1025, le=65535)
    rtp_timeout: _Int = Field(default=30, ge=5, le=3600, json_schema_extra=_SECONDS)
    jitter_ms: _Int = Field(default=60, ge=20, le=500)

    @field_validator("rtp_port_max")
    @classmethod
    def _range(cls, value: int, info: Any) -> int:
        low = info.data.get("rtp_port_min")
        if isinstance(low, int) and value < low + 1:
            raise _fail(
                f"must be above rtp_port_min ({low})",
                "each call needs an even port and the odd one above it",
            )
        return value


class MqttTlsConfig(BaseModel):
    """TLS to the broker: the server's certificate is verified unless ``insecure`` is set."""

    model_config = _MODEL_CONFIG

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


def _check_topic_base(value: str) -> str:
    if any(ch in value for ch in "+#") or value.startswith("/") or value.endswith("/"):
        raise _fail("must be a plain topic", "no + or #, no leading or trailing /")
    if "//" in value or not value:
        raise _fail("must not have empty levels", "e.g. intercom/frontdoor")
    return value


_TopicBase = Annotated[str, AfterValidator(_check_topic_base)]


class MqttConfig(BaseModel):
    """The MQTT broker, for Home Assistant and automations. Without this section: no MQTT."""

    model_config = _MODEL_CONFIG

    host: _Host = Field(
        description="the broker's host name or IP address", examples=["homeassistant.local"]
    )
    port: _Int = Field(default=1883, ge=1, le=65535)
    username: _Text | None = None
    password: _Secret | None = None
    password_file: Path | None = None
    tls: MqttTlsConfig | None = None
    client_id: _Text | None = None
    base_topic: _TopicBase | None = None
    discovery_prefix: _TopicBase = "homeassistant"
    discovery: Annotated[Literal["entity", "device", "off"], BeforeValidator(_lower)] = "entity"
    ring_any_target: bool = False

    _password_source: str | None = PrivateAttr(None)

    def secret(self) -> str | None:
        """The broker password in clear text, for the MQTT client only."""
        return None if self.password is None else self.password.get_secret_value()

    @property
    def password_source(self) -> str | None:
        return self._password_source


# --------------------------------------------------------------------------------------------
# GPIO devices. Key names follow gpiozero's (``pull_up``, ``bounce_time``, ``active_high``) so
# that its documentation applies word for word. Pins are BCM numbers, as gpiozero takes them.

_PIN: JsonDict = {"unit": "(BCM numbering)"}
MAX_PULSE = 10
"""Seconds. Longer than any door needs, shorter than it takes a strike's or chime's coil to
overheat. The config refuses more, and :mod:`intercom.devices` caps every pulse at it too."""


def _reject_bool_number(value: object) -> object:
    """Refuse ``pulse: yes``: pydantic would read it as 1.0 second without a word."""
    if isinstance(value, bool):
        raise PydanticKnownError("float_type")
    return value


_Seconds = Annotated[float, BeforeValidator(_reject_bool_number)]
_DTMF_KEYS = "0123456789*ABCD"


def _check_dtmf_code(value: SecretStr) -> SecretStr:
    """1 to 8 keys, upper-cased so ``a`` matches the ``A`` a phone sends. ``#`` is refused
    because DoorRules reads it as "end of code"; a code containing it could never match."""
    code = value.get_secret_value().upper()
    if "#" in code:
        raise _fail("must not contain '#'", "'#' ends a code early, so it cannot be part of one")
    if len(code) > 8 or any(ch not in _DTMF_KEYS for ch in code):
        raise _fail(
            "must be 1 to 8 of the keys 0-9, *, A, B, C and D",
            'or "" for no opening by DTMF',
        )
    return SecretStr(code)


_DtmfCode = Annotated[SecretStr, BeforeValidator(_number_to_text), AfterValidator(_check_dtmf_code)]


class DoorbellConfig(BaseModel):
    """The bell button. ``bounce_time`` is gpiozero's debounce; ``min_press`` drops spikes that
    long wires pick up; ``cooldown`` stops one impatient visitor from placing ten calls."""

    model_config = _MODEL_CONFIG

    pin: _Int = Field(default=17, ge=2, le=27, json_schema_extra=_PIN)
    pull_up: bool = True
    bounce_time: _Seconds = Field(default=0.05, ge=0, le=1, json_schema_extra=_SECONDS)
    min_press: _Seconds = Field(default=0.1, ge=0, le=5, json_schema_extra=_SECONDS)
    cooldown: _Seconds = Field(default=10.0, ge=0, le=600, json_schema_extra=_SECONDS)
    while_calling: Annotated[Literal["ignore", "hangup_and_ring"], BeforeValidator(_lower)] = (
        "ignore"
    )


class ChimeConfig(BaseModel):
    """A bell or buzzer switched by a relay; pulsed on every ring, whatever the network does."""

    model_config = _MODEL_CONFIG

    pin: _Int = Field(default=27, ge=2, le=27, json_schema_extra=_PIN)
    pulse: _Seconds = Field(default=1.0, ge=0.05, le=MAX_PULSE, json_schema_extra=_SECONDS)


class LedConfig(BaseModel):
    """The light in the button: blinks while ringing, on during a call."""

    model_config = _MODEL_CONFIG

    pin: _Int = Field(default=22, ge=2, le=27, json_schema_extra=_PIN)


class DoorConfig(BaseModel):
    """The door strike relay, and who may pulse it.

    With an empty ``dtmf_code`` and ``mqtt_open`` false nothing opens the door, even with the
    section present: opening is a decision the owner makes key by key. The code is held as a
    :class:`pydantic.SecretStr` so that no ``repr``, dump or error line shows it; read it with
    :meth:`secret`.
    """

    model_config = _MODEL_CONFIG

    pin: _Int = Field(default=23, ge=2, le=27, json_schema_extra=_PIN)
    active_high: bool = True
    pulse: _Seconds = Field(default=3.0, ge=0.1, le=MAX_PULSE, json_schema_extra=_SECONDS)
    dtmf_code: _DtmfCode = SecretStr("")
    digit_timeout: _Seconds = Field(default=5.0, ge=1, le=60, json_schema_extra=_SECONDS)
    max_attempts: _Int = Field(default=3, ge=1, le=20)
    lockout: _Seconds = Field(default=300.0, ge=1, le=86400, json_schema_extra=_SECONDS)
    hangup_after_open: _Seconds | None = Field(
        default=None, ge=0, le=300, json_schema_extra=_SECONDS
    )
    mqtt_open: bool = False

    def secret(self) -> str:
        """The DTMF code in clear text ("" for none), for DoorRules only; like
        :meth:`SipConfig.secret`, one greppable way in."""
        return self.dtmf_code.get_secret_value()

    @property
    def can_open(self) -> bool:
        """Whether anything at all may open the door."""
        return bool(self.secret()) or self.mqtt_open


class LogConfig(BaseModel):
    """Logging. ``sip_trace`` is opt-in because traces are long and name the callers."""

    model_config = _MODEL_CONFIG

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    sip_trace: bool = False


class Config(BaseModel):
    """The whole configuration file. Build it with :func:`load_config` or :func:`parse_config`,
    which resolve the password; ``Config.model_validate`` alone does not."""

    model_config = _MODEL_CONFIG

    device_id: Annotated[str, BeforeValidator(_number_to_text)] = Field(
        default="frontdoor",
        pattern=r"^[a-z0-9_-]{1,32}$",
        description="names this door in logs and MQTT topics",
    )
    sip: SipConfig = Field(description="the connection to the PBX")
    call: CallConfig = CallConfig()
    incoming: IncomingConfig = IncomingConfig()
    audio: AudioConfig = AudioConfig()
    media: MediaConfig = MediaConfig()
    mqtt: MqttConfig | None = None
    doorbell: DoorbellConfig | None = None
    chime: ChimeConfig | None = None
    led: LedConfig | None = None
    door: DoorConfig | None = None
    log: LogConfig = LogConfig()

    def redacted_dict(self) -> dict[str, Any]:
        """The configuration as plain data with the password replaced by ``"***"``.

        Meant for ``intercom check-config`` and bug reports: it shows what the intercom will use
        (defaults filled in) without leaking the one secret in the file.
        """
        data = self.model_dump(mode="json")
        data["sip"]["password"] = None if self.sip.password is None else REDACTED
        if self.mqtt is not None:
            data["mqtt"]["password"] = None if self.mqtt.password is None else REDACTED
        if self.door is not None:
            data["door"]["dtmf_code"] = REDACTED if self.door.secret() else ""
        return data

    @property
    def mqtt_base_topic(self) -> str:
        """``mqtt.base_topic``, by default ``intercom/<device_id>``."""
        base = self.mqtt.base_topic if self.mqtt is not None else None
        return base or f"intercom/{self.device_id}"


def describe(config: Config) -> str:
    """The redacted configuration as YAML, with where the password came from as a comment."""
    text = yaml.safe_dump(config.redacted_dict(), sort_keys=False, default_flow_style=False)
    source = config.sip.password_source
    note = f"# SIP password: from {source}" if source else "# SIP password: none"
    return f"{note}\n{text}"


# --------------------------------------------------------------------------------------------
# Reading the file.


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps YAML 1.1 number oddities as text and records duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, yaml.Mark, yaml.Mark]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Record repeated keys: PyYAML would keep the last silently, hiding half a section."""
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                self.duplicates.append((key_node.value, seen[key_node.value], key_node.start_mark))
            else:
                seen[key_node.value] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    """Only plain decimals are numbers. ``0620`` (octal 400 in YAML 1.1), ``1:30`` (90) and
    ``0x1f`` stay text: an extension with a leading zero then keeps it, and an int field gets
    the text, which pydantic either parses as written or reports."""
    text = str(loader.construct_scalar(node))
    return int(text) if _DECIMAL.fullmatch(text) else text


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)

_PASSWORD_LINE = re.compile(r"\s*(?:-\s*)?[\"']?password[\"']?\s*:")
# The door code, also in flow style (``door: {dtmf_code: *12}``): a code starting with '*' is a
# YAML alias, and PyYAML's message would quote it.
_CODE_LINE = re.compile(r"(?:^|[\s{,])[\"']?dtmf_code[\"']?\s*:")


def _yaml_error(source: str, text: str, exc: yaml.YAMLError) -> str:
    """One line ``file:line:column: problem`` for a YAML syntax error, never quoting a password.

    PyYAML's own message embeds a snippet of the offending line; on the password line that
    would print the password, so the snippet is never used and, on that line, neither is the
    problem text (it can quote an alias name, i.e. a password starting with '*').
    """
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"{source}: not valid YAML: {problem}"
    lines = text.splitlines()
    line_text = lines[mark.line] if mark.line < len(lines) else ""
    hint = ""
    secret_line = bool(_PASSWORD_LINE.match(line_text) or _CODE_LINE.search(line_text))
    if _PASSWORD_LINE.match(line_text):
        problem = "cannot parse the password line"
        hint = "; put the password in quotes"
    elif secret_line:
        problem = "cannot parse the dtmf_code line"
        hint = '; put the code in quotes, e.g. dtmf_code: "*1234"'
    elif "'*'" in problem or "alias" in problem or "'&'" in problem or "anchor" in problem:
        hint = '; quote values that start with * or &, e.g. "**9"'
    elif "'\\t'" in problem:
        hint = "; indent with spaces, not tabs"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and not secret_line:
        problem = f"{problem} ({context} at line {context_mark.line + 1})"
    return f"{source}:{mark.line + 1}:{mark.column + 1}: {problem}{hint}"


def _load_yaml(text: str, source: str) -> object:
    """Parse the YAML text; syntax errors and duplicate keys become a ConfigError."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_error(source, text, exc)]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            [
                f"{source}:{mark.line + 1}:{mark.column + 1}: duplicate key '{key}'; "
                f"it is already set at line {first.line + 1}; keep only one of them"
                for key, first, mark in sorted(loader.duplicates, key=lambda d: d[2].index)
            ]
        )
    return data


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the configuration file at ``path``.

    ``env`` defaults to ``os.environ`` (for ``INTERCOM_SIP_PASSWORD``); a relative
    ``sip.password_file`` is taken relative to the configuration file's directory, so the pair
    can be moved together. Raises :class:`ConfigError` listing every problem found.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{source}: no such file; copy {_EXAMPLE_FILE} there and edit it"]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: not UTF-8 text; save the file as UTF-8"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {_os_reason(exc)}"]) from None
    data = _load_yaml(text, source)
    return _build(data, base_dir=path.absolute().parent, env=env, source=source)


def parse_config(
    data: Mapping[str, Any] | None,
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate already-parsed configuration data; the pure half of :func:`load_config`.

    ``base_dir`` anchors a relative ``sip.password_file``; ``env`` defaults to ``os.environ``.
    Raises :class:`ConfigError` listing every problem found.
    """
    return _build(data, base_dir=base_dir, env=env, source="configuration")


# --------------------------------------------------------------------------------------------
# Validation and password resolution.


def _build(data: object, *, base_dir: Path, env: Mapping[str, str] | None, source: str) -> Config:
    """Resolve the password, validate, and raise one ConfigError carrying every problem."""
    required = ", ".join(_required_paths(Config))
    if data is None:
        raise ConfigError(
            [f"{source}: the file is empty; it needs at least {required}; see {_EXAMPLE_FILE}"]
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            [
                f"{source}: the top level must be a mapping of keys; got {_kind(data)}; "
                f"allowed keys: {', '.join(Config.model_fields)}"
            ]
        )
    env = os.environ if env is None else env
    data = dict(data)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    secrets: list[str] = []
    source_name: str | None = None
    sip = data.get("sip")
    if isinstance(sip, Mapping):
        sip = dict(sip)
        source_name, password_problems = _resolve_password(sip, base_dir, env, secrets)
        problems.extend(password_problems)
        data["sip"] = sip
    mqtt = data.get("mqtt")
    mqtt_source: str | None = None
    if isinstance(mqtt, Mapping):
        mqtt = dict(mqtt)
        mqtt_source, mqtt_problems = _resolve_password(
            mqtt, base_dir, env, secrets, section="mqtt", env_name=MQTT_PASSWORD_ENV, required=False
        )
        problems.extend(mqtt_problems)
        for key in ("ca_file", "cert_file", "key_file"):
            tls = mqtt.get("tls")
            if isinstance(tls, Mapping) and isinstance(tls.get(key), str) and tls[key]:
                tls = dict(tls)
                tls[key] = str(base_dir / Path(tls[key]).expanduser())
                mqtt["tls"] = tls
        data["mqtt"] = mqtt
    problems.extend(_pin_clashes(data))
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_translate(exc, secrets))
    if problems:
        problems.sort(key=lambda item: _order_key(item[0]))
        raise ConfigError([line for _, line in problems])
    assert config is not None
    config.sip._password_source = source_name
    if config.mqtt is not None:
        config.mqtt._password_source = mqtt_source
    return config


def _resolve_password(
    sip: dict[str, Any],
    base_dir: Path,
    env: Mapping[str, str],
    secrets: list[str],
    *,
    section: str = "sip",
    env_name: str = PASSWORD_ENV,
    required: bool | None = None,
) -> tuple[str | None, list[tuple[tuple[str | int, ...], str]]]:
    """Find the password (file key, then password file, then environment) and put it into
    ``sip["password"]`` for pydantic to validate. Works on the raw mapping, before pydantic,
    so a missing password file is reported together with every other mistake.

    Returns where the password came from and the problems found; every password seen is
    appended to ``secrets`` so no error line can quote it.
    """
    password = sip.get("password")
    password_file = sip.get("password_file")
    if isinstance(password, str | int) and not isinstance(password, bool):
        secrets.append(str(password))
    file_loc: tuple[str | int, ...] = (section, "password_file")
    if password is not None and password_file is not None:
        line = (
            f"{section}.password_file: cannot be used together with {section}.password; "
            f"got {_show(password_file, secrets)}; keep only one of the two"
        )
        return None, [(file_loc, line)]
    if password is not None:
        return f"{section}.password", []
    if isinstance(password_file, str) and password_file:
        path = base_dir / Path(password_file).expanduser()
        sip["password_file"] = str(path)
        got = _show(password_file, secrets)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problem, fix = f"cannot read {path}: no such file", "create it or fix the path"
        except UnicodeDecodeError:
            problem, fix = f"cannot read {path}: not UTF-8 text", "save it as UTF-8"
        except OSError as exc:
            problem, fix = f"cannot read {path}: {_os_reason(exc)}", "check the path and rights"
        else:
            value = text.rstrip("\r\n")
            if value:
                secrets.append(value)
                sip["password"] = value
                return f"{section}.password_file", []
            problem, fix = f"the file {path} is empty", "write the password into it"
        return None, [(file_loc, f"{section}.password_file: {problem}; got {got}; {fix}")]
    if password_file == "":
        line = f"{section}.password_file: must not be empty; got ''; give a path or remove the key"
        return None, [(file_loc, line)]
    if password_file is not None:
        return None, []  # not text: pydantic reports the type
    from_env = env.get(env_name)
    if from_env:
        secrets.append(from_env)
        sip["password"] = from_env
        return env_name, []
    if required if required is not None else _is_true(sip.get("register", True)):
        line = (
            f"{section}.password: no password given; set {section}.password, "
            f"{section}.password_file or the environment variable {env_name}"
        )
        return None, [((section, "password"), line)]
    return None, []


def _pin_clashes(data: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Two devices on one GPIO: gpiozero would refuse the second at start-up with a
    traceback, or worse, a relay would click with every press of the button. Checked on the raw
    data (defaults filled in) so that it is reported together with every other problem; a pin
    pydantic will refuse anyway (out of range, not a number) is left to pydantic."""
    sections: dict[str, type[BaseModel]] = {
        "doorbell": DoorbellConfig,
        "chime": ChimeConfig,
        "led": LedConfig,
        "door": DoorConfig,
    }
    used: dict[int, str] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for section, model in sections.items():
        raw = data.get(section)
        if not isinstance(raw, Mapping):
            continue  # absent or null: no device; anything else is pydantic's to report
        given = raw.get("pin", model.model_fields["pin"].default)
        if isinstance(given, bool) or not isinstance(given, int | str):
            continue
        try:
            pin = int(given)
        except ValueError:
            continue
        if not 2 <= pin <= 27:
            continue
        if pin in used:
            problems.append(
                (
                    (section, "pin"),
                    f"{section}.pin: GPIO {pin} is already used by {used[pin]}; "
                    f"got {given!r}; give each device its own pin",
                )
            )
        else:
            used[pin] = f"{section}.pin"
    return problems


def _is_true(value: object) -> bool:
    """``register`` as pydantic will read it; an invalid value counts as false here because
    pydantic reports it anyway, and one error for one mistake is enough."""
    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        return False


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return reason[:1].lower() + reason[1:]


# --------------------------------------------------------------------------------------------
# Turning pydantic's errors into one friendly line each.

_SECRET_LOCS = {("sip", "password"), ("mqtt", "password"), ("door", "dtmf_code")}
_INT_ERRORS = {
    "int_type",
    "int_parsing",
    "int_from_float",
    "int_parsing_size",
    "greater_than_equal",
    "less_than_equal",
    "greater_than",
    "less_than",
    "float_type",
    "float_parsing",
}
_SIMPLE_PROBLEMS = {
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "path_type": "must be a file path",
    "invalid_key": "keys must be text",
}


def _translate(exc: ValidationError, secrets: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
    """One ``<key path>: <problem>; got <value>; <fix>`` line per pydantic error."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = _path(loc)
        kind = error["type"]
        ctx = error.get("ctx") or {}
        info = _field_at(loc)
        if kind == "extra_forbidden":
            lines.append((loc, _unknown_key(loc)))
            continue
        if kind == "missing":
            lines.append((loc, f"{path}: required key is missing; {_describe_field(loc, info)}"))
            continue
        fix = ""
        if kind == _CUSTOM:
            problem, fix = error["msg"], str(ctx.get("fix", ""))
        elif kind in _INT_ERRORS:
            problem = _int_problem(kind, info)
        elif kind == "literal_error":
            problem = f"must be one of {', '.join(_choices(info))}"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            model = _model_at(loc)
            problem = "must be a section of keys"
            if model is not None:
                fix = f"indent its keys below it, e.g. {', '.join(model.model_fields)}"
        elif kind == "string_pattern_mismatch" and loc == ("device_id",):
            problem = "must be 1 to 32 characters of a-z, 0-9, '_' and '-'"
            fix = "e.g. frontdoor"
        else:
            problem = _SIMPLE_PROBLEMS.get(kind) or _decapitalize(error["msg"])
        hidden = loc in _SECRET_LOCS
        got = _HIDDEN if hidden else _show(error.get("input"), secrets)
        parts = [f"{path}: {problem}", f"got {got}"] + ([fix] if fix else [])
        lines.append((loc, "; ".join(parts)))
    return lines


def _int_problem(kind: str, info: FieldInfo | None) -> str:
    """``must be between 1 and 600 seconds`` for range errors and wrong types alike, so the
    user learns the allowed range on the first try."""
    low = high = None
    unit = ""
    if info is not None:
        for meta in info.metadata:
            low = getattr(meta, "ge", low)
            high = getattr(meta, "le", high)
        if isinstance(info.json_schema_extra, dict):
            unit = str(info.json_schema_extra.get("unit", ""))
    whole = "a number " if kind.startswith("float") else "a whole number "
    whole = "" if kind in ("greater_than_equal", "less_than_equal") else whole
    if low is None or high is None:
        return f"must be {whole}".rstrip()
    unit = f" {unit}" if unit else ""
    return f"must be {whole}between {low} and {high}{unit}"


def _choices(info: FieldInfo | None) -> list[str]:
    return [str(arg) for arg in get_args(info.annotation)] if info is not None else []


def _unknown_key(loc: tuple[str | int, ...]) -> str:
    """``sip.colour: unknown key; allowed keys here: ...; did you mean '...'?``

    The suggestion is the closest allowed key, or else the same key in another section, since
    putting ``ring_timeout`` under ``sip:`` is a more common slip than a typo.
    """
    model = _model_at(loc[:-1]) or Config
    key = str(loc[-1])
    allowed = list(model.model_fields)
    line = f"{_path(loc)}: unknown key; allowed keys here: {', '.join(allowed)}"
    by_lower = {name.lower(): name for name in allowed}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"{line}; did you mean '{by_lower[close[0]]}'?"
    for section, field in Config.model_fields.items():
        sub = _submodel(field)
        if sub is not None and key in sub.model_fields and sub is not model:
            return f"{line}; did you mean '{section}.{key}'?"
    if model is not Config and key in Config.model_fields:
        return f"{line}; did you mean the top-level '{key}'?"
    return line


def _describe_field(loc: tuple[str | int, ...], info: FieldInfo | None) -> str:
    """What a missing key is for, and an example line to add."""
    if info is None:
        return f"see {_EXAMPLE_FILE}"
    sub = _submodel(info)
    if sub is not None:
        needed = ", ".join(_required_paths(sub, prefix=_path(loc)))
        return f"{info.description}; it needs at least {needed}"
    example = f", e.g. {loc[-1]}: {info.examples[0]}" if info.examples else ""
    return f"{info.description}{example}"


def _required_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of the keys a user must write, for "empty file" and "missing" messages."""
    paths = []
    for name, info in model.model_fields.items():
        if not info.is_required():
            continue
        full = f"{prefix}.{name}" if prefix else name
        sub = _submodel(info)
        paths.extend(_required_paths(sub, full) if sub is not None else [full])
    return paths


def _submodel(info: FieldInfo) -> type[BaseModel] | None:
    """The section model of a field, also of an optional one (``mqtt: MqttConfig | None``), so
    that errors inside optional sections get ranges and key lists like the others."""
    candidates = get_args(info.annotation) or (info.annotation,)
    for ann in candidates:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
    return None


def _field_at(loc: tuple[str | int, ...]) -> FieldInfo | None:
    """The FieldInfo a pydantic error location points at (list indices skipped)."""
    model: type[BaseModel] | None = Config
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _submodel(info)
    return info


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class of the section at ``loc``; ``()`` is the top level."""
    if not loc:
        return Config
    info = _field_at(loc)
    return _submodel(info) if info is not None else None


def _order_key(loc: tuple[str | int, ...]) -> tuple[int, ...]:
    """Sort errors in the order of the schema (which is the order of the example file)."""
    key: list[int] = []
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):
            key.append(part)
            continue
        fields = list(model.model_fields) if model is not None else []
        key.append(fields.index(part) if part in fields else len(fields))
        info = model.model_fields.get(part) if model is not None else None
        model = _submodel(info) if info is not None else None
    return tuple(key)


def _path(loc: tuple[str | int, ...]) -> str:
    """``("call", "targets", 0)`` -> ``call.targets[0]``.

    An int is a list index only below a list field; elsewhere it is a YAML key that happened to
    be a number (``620:`` at the top level) and is shown as a key.
    """
    text = ""
    for index, part in enumerate(loc):
        info = _field_at(loc[:index]) if index else None
        below_list = info is not None and get_origin(info.annotation) in (tuple, list)
        if isinstance(part, int) and below_list:
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _show(value: object, secrets: list[str]) -> str:
    """``repr`` of an offending value, shortened, and ``<hidden>`` if it holds a password."""
    if _holds_secret(value, secrets):
        return _HIDDEN
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _holds_secret(value: object, secrets: list[str]) -> bool:
    if isinstance(value, str):
        return any(s == value or (len(s) >= 4 and s in value) for s in secrets if s)
    if isinstance(value, Mapping):
        return any(_holds_secret(v, secrets) for v in value.values())
    if isinstance(value, list | tuple | set):
        return any(_holds_secret(v, secrets) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _holds_secret(str(value), secrets)
    return False


def _kind(value: object) -> str:
    """Name a wrong top-level value without quoting it: it may be a whole file's worth."""
    return "a list" if isinstance(value, list) else f"a single value of type {type(value).__name__}"


def _decapitalize(msg: str) -> str:
    return msg[:1].lower() + msg[1:]
