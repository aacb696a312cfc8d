"""pytest fixtures that start real SIP peers on loopback.

Loaded from tests/conftest.py with `pytest_plugins = ["tests.peers.fixtures"]`. Every fixture is
function-scoped: a test gets a PBX that has never seen another test, and every process it started
is gone when it ends. When a test fails, the logs of its peers are attached to the report.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.peers import find_program
from tests.peers.baresip import BARESIP, AnswerMode, Baresip
from tests.peers.kamailio import KAMAILIO, KAMCMD, Kamailio
from tests.peers.linphone import LINPHONEC, Linphonec

#: The accounts of the test PBX: the intercom itself and three handsets.
PBX_USERS: dict[str, str] = {"door": "doorpass", "620": "pw620", "621": "pw621", "622": "pw622"}

_LOG_TAIL_LINES = 300


class _HasLog(Protocol):
    def log_text(self) -> str: ...


_PEERS_KEY = pytest.StashKey[list[tuple[str, _HasLog]]]()


def in_ci() -> bool:
    """True when the CI variable is set (to anything but an empty, 0 or false value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_binaries(*names: str) -> None:
    """Skip the test when a peer program is missing, but fail under CI.

    A developer without Kamailio installed can still run the unit tests; in CI, where
    `scripts/test` installs the packages, a missing program means the setup broke and the
    acceptance tests must not silently vanish.
    """
    missing = [name for name in names if find_program(name) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed; scripts/test installs what the tests need"
    if in_ci():
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


def _remember(request: pytest.FixtureRequest, name: str, peer: _HasLog) -> None:
    """Keep `peer` on the test item so that its log can be attached if the test fails."""
    request.node.stash.setdefault(_PEERS_KEY, []).append((name, peer))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every peer's log to the report of a failed setup or test call."""
    report = yield
    if report.when in ("setup", "call") and report.failed:
        for name, peer in item.stash.get(_PEERS_KEY, []):
            try:
                text = peer.log_text()
            except Exception as exc:  # a log that cannot be read must not hide the failure
                text = f"(log unavailable: {exc})"
            tail = "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])
            report.sections.append((f"{name} log (last {_LOG_TAIL_LINES} lines)", tail))
    return report


def _start_kamailio(
    request: pytest.FixtureRequest, workdir: Path, *, qop: bool
) -> Generator[Kamailio, None, None]:
    require_binaries(KAMAILIO, KAMCMD)
    pbx = Kamailio(PBX_USERS, qop=qop, workdir=workdir)
    _remember(request, "kamailio" if qop else "kamailio (no qop)", pbx)
    try:
        pbx.start()
        yield pbx
    finally:
        pbx.close()


@pytest.fixture
def kamailio(request: pytest.FixtureRequest, tmp_path: Path) -> Generator[Kamailio, None, None]:
    """A fresh Kamailio PBX (qop=auth) with the users in PBX_USERS, on a free loopback port."""
    yield from _start_kamailio(request, tmp_path / "kamailio", qop=True)


@pytest.fixture
def kamailio_noqop(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Generator[Kamailio, None, None]:
    """The same PBX, but its digest challenges carry no qop (RFC 2069 style, as old PBXs do)."""
    yield from _start_kamailio(request, tmp_path / "kamailio-noqop", qop=False)


class HandsetFactory(Protocol):
    """`handset("621", answer="busy")` starts a registered baresip handset."""

    def __call__(
        self,
        user: str,
        answer: AnswerMode = "auto",
        *,
        pbx: Kamailio | None = None,
        password: str | None = None,
        wait: bool = True,
        **options: Any,
    ) -> Baresip: ...


@pytest.fixture
def handset(
    request: pytest.FixtureRequest, kamailio: Kamailio, tmp_path: Path
) -> Generator[HandsetFactory, None, None]:
    """Factory of baresip handsets registered with `kamailio` (or with `pbx=`).

    The handset's password comes from the PBX's user table unless `password=` is given; with
    `wait=True` (the default) the factory returns only once the handset is registered. Extra
    keyword arguments go to `Baresip` (tone_hz, record, transport, answer_delay, ...). All
    handsets are stopped at teardown, before the PBX.
    """
    require_binaries(BARESIP)
    started: list[Baresip] = []

    def make(
        user: str,
        answer: AnswerMode = "auto",
        *,
        pbx: Kamailio | None = None,
        password: str | None = None,
        wait: bool = True,
        **options: Any,
    ) -> Baresip:
        server = pbx or kamailio
        secret = server.users[user] if password is None else password
        workdir = tmp_path / f"baresip-{user}-{len(started)}"
        phone = Baresip(user, secret, server.host, server.port, workdir, answer=answer, **options)
        started.append(phone)
        _remember(request, f"baresip {user}", phone)
        phone.start()
        if wait:
            phone.wait_registered()
        return phone

    try:
        yield make
    finally:
        for phone in reversed(started):
            phone.close()


class LinphoneFactory(Protocol):
    """`linphone_handset("622")` starts a registered linphonec handset that answers by itself."""

    def __call__(
        self,
        user: str,
        *,
        pbx: Kamailio | None = None,
        password: str | None = None,
        wait: bool = True,
        **options: Any,
    ) -> Linphonec: ...


@pytest.fixture
def linphone_handset(
    request: pytest.FixtureRequest, kamailio: Kamailio, tmp_path: Path
) -> Generator[LinphoneFactory, None, None]:
    """Factory of linphonec handsets registered with `kamailio` (or `pbx=`), stopped at teardown."""
    require_binaries(LINPHONEC)
    started: list[Linphonec] = []

    def make(
        user: str,
        *,
        pbx: Kamailio | None = None,
        password: str | None = None,
        wait: bool = True,
        **options: Any,
    ) -> Linphonec:
        server = pbx or kamailio
        secret = server.users[user] if password is None else password
        workdir = tmp_path / f"linphonec-{user}-{len(started)}"
        phone = Linphonec(user, secret, server.host, server.port, workdir, **options)
        started.append(phone)
        _remember(request, f"linphonec {user}", phone)
        phone.start()
        if wait:
            phone.wait_registered()
            server.wait_registered(user, timeout=5)
        return phone

    try:
        yield make
    finally:
        for phone in reversed(started):
            phone.close()


__all__: list[str] = [
    "PBX_USERS",
    "HandsetFactory",
    "LinphoneFactory",
    "handset",
    "in_ci",
    "kamailio",
    "kamailio_noqop",
    "linphone_handset",
    "require_binaries",
]


# -- MQTT: a real mosquitto broker and synchronous test clients ---------------------------------
# Imported here rather than at the top so that this section stays one appended block.

from tests.peers.mosquitto import MOSQUITTO, MOSQUITTO_PASSWD, OPENSSL, Mosquitto  # noqa: E402
from tests.peers.mqtt_client import MqttProbe  # noqa: E402

#: The accounts of the authenticated test broker: the intercom itself and Home Assistant.
MQTT_USERS: dict[str, str] = {"intercom": "mqttpass", "ha": "hapass"}


def _start_mosquitto(
    request: pytest.FixtureRequest,
    workdir: Path,
    name: str,
    *,
    users: dict[str, str] | None = None,
    tls: bool = False,
) -> Generator[Mosquitto, None, None]:
    require_binaries(MOSQUITTO, MOSQUITTO_PASSWD, *([OPENSSL] if tls else []))
    broker = Mosquitto(workdir, users=users, tls=tls)
    _remember(request, name, broker)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mosquitto(request: pytest.FixtureRequest, tmp_path: Path) -> Generator[Mosquitto, None, None]:
    """A fresh anonymous mosquitto broker on a free loopback port; nothing retained, no users."""
    yield from _start_mosquitto(request, tmp_path / "mosquitto", "mosquitto")


@pytest.fixture
def mosquitto_auth(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Generator[Mosquitto, None, None]:
    """A broker that refuses anonymous clients and knows the users in MQTT_USERS."""
    yield from _start_mosquitto(
        request, tmp_path / "mosquitto-auth", "mosquitto (auth)", users=dict(MQTT_USERS)
    )


@pytest.fixture
def mosquitto_tls(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Generator[Mosquitto, None, None]:
    """A TLS-only anonymous broker with a certificate of its own private CA (`ca_file`)."""
    yield from _start_mosquitto(request, tmp_path / "mosquitto-tls", "mosquitto (tls)", tls=True)


class ProbeFactory(Protocol):
    """`mqtt_probe(broker, username="ha")` returns a connected MqttProbe."""

    def __call__(
        self,
        broker: Mosquitto,
        *,
        username: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> MqttProbe: ...


@pytest.fixture
def mqtt_probe() -> Generator[ProbeFactory, None, None]:
    """Factory of connected MQTT test clients for a broker; all are closed at teardown.

    The password defaults to the broker's own entry for `username`, and a TLS broker's CA is
    trusted unless `ca_file=` says otherwise. Other keyword arguments go to MqttProbe
    (client_id, protocol, client_cert, reconnect_delay, ...). A refused connection raises
    (MqttConnectError, ssl.SSLCertVerificationError) and the probe is still closed at teardown.
    """
    probes: list[MqttProbe] = []

    def make(
        broker: Mosquitto,
        *,
        username: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> MqttProbe:
        if username is not None and password is None and broker.users:
            password = broker.users.get(username)
        if broker.tls:
            options.setdefault("ca_file", broker.ca_file)
        probe = MqttProbe(broker.host, broker.port, username=username, password=password, **options)
        probes.append(probe)
        probe.connect()
        return probe

    try:
        yield make
    finally:
        for probe in reversed(probes):
            probe.close()


__all__ += [
    "MQTT_USERS",
    "ProbeFactory",
    "mosquitto",
    "mosquitto_auth",
    "mosquitto_tls",
    "mqtt_probe",
]
