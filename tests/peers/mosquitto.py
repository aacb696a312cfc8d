"""Mosquitto as the MQTT broker that the intercom and Home Assistant talk through.

A real broker catches what a fake would not: CONNACK refusals for bad credentials, TLS handshakes
against a private CA, retained messages, and a broker that crashes and comes back on the same port
with nothing retained (persistence is off, as on a broker whose disk was never written). Each
instance writes its own config, password file and certificates into its workdir and listens only
on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import signal
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.peers import LoggedPeer, require_program, terminate_group
from tests.peers.ports import LOOPBACK, free_udp_tcp_port

MOSQUITTO = "mosquitto"
MOSQUITTO_PASSWD = "mosquitto_passwd"
OPENSSL = "openssl"

# mosquitto_passwd refuses a ':' in a user name (it is the field separator of the password file),
# and a newline would end the line; refuse them here with a clear message instead.
_BAD_USER_CHARS = set(":\n\r")

# X.509 extensions for the private test CA and its two leaf certificates. They are strict enough
# for Python 3.13's default VERIFY_X509_STRICT (critical CA basicConstraints, keyUsage on the CA,
# authorityKeyIdentifier on the leaves), so the same files work for Home Assistant's client too.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


class MosquittoError(RuntimeError):
    """Mosquitto (or openssl, or mosquitto_passwd) failed; the message carries the output."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a private CA, a server certificate for 127.0.0.1/localhost and a client one."""

    ca_file: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    if result.returncode != 0:
        raise MosquittoError(f"{what} failed ({result.returncode}):\n{result.stderr}")


def make_certificates(directory: Path, *, days: int = 2) -> TlsFiles:
    """Generate a fresh CA, a server certificate and a client certificate with the openssl CLI.

    EC P-256 keys take milliseconds to generate where RSA keys take a good part of a second, so a
    TLS broker per test stays cheap. Call it with another directory to get an unrelated CA, which
    is what a "wrong CA" test needs.
    """
    openssl = require_program(OPENSSL)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl-ext.cnf"
    config.write_text(_OPENSSL_CONFIG)
    files = TlsFiles(
        ca_file=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _run(
        [
            openssl, "req", "-x509", *new_key, "-keyout", str(files.ca_key),
            "-out", str(files.ca_file), "-days", str(days),
            "-subj", f"/O=pi-intercom tests/CN=test CA {secrets.token_hex(4)}",
            "-config", str(config), "-extensions", "ca_ext",
        ],
        "openssl: CA",
    )  # fmt: skip
    leaves = (
        ("server", "/CN=127.0.0.1", files.server_key, files.server_cert),
        ("client", "/CN=pi-intercom test client", files.client_key, files.client_cert),
    )
    for kind, subject, key, cert in leaves:
        csr = directory / f"{kind}.csr"
        _run(
            [
                openssl, "req", "-new", *new_key, "-keyout", str(key), "-out", str(csr),
                "-subj", f"/O=pi-intercom tests{subject}", "-config", str(config),
            ],
            f"openssl: {kind} request",
        )  # fmt: skip
        _run(
            [
                openssl, "x509", "-req", "-in", str(csr), "-CA", str(files.ca_file),
                "-CAkey", str(files.ca_key), "-set_serial", str(secrets.randbits(63)),
                "-days", str(days), "-out", str(cert),
                "-extfile", str(config), "-extensions", f"{kind}_ext",
            ],
            f"openssl: {kind} certificate",
        )  # fmt: skip
    return files


class Mosquitto(LoggedPeer):
    """A Mosquitto 2.0 broker on 127.0.0.1 and a free port, with its own config and log file.

    Anonymous by default; with `users` it requires one of those user names and passwords. With
    `tls=True` it speaks MQTT over TLS only (on the same single listener) with a certificate of a
    private CA made for this instance (`ca_file`); client certificates are accepted but not
    required. Persistence is off: `restart()` and `kill()` lose every retained message and session.
    """

    host = LOOPBACK
    name = "mosquitto"
    error = MosquittoError

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        port: int | None = None,
    ) -> None:
        for user, password in (users or {}).items():
            if not user or _BAD_USER_CHARS & set(user) or "\n" in password:
                raise ValueError(f"user {user!r} or its password is not usable by mosquitto")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users: dict[str, str] | None = dict(users) if users is not None else None
        self.tls = tls
        self.port = port if port is not None else free_udp_tcp_port()
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.password_file = self.workdir / "passwd"
        # Made here rather than in start(): the paths are then usable before the broker runs,
        # for example to write the intercom's own config.
        self.tls_files: TlsFiles | None = make_certificates(self.workdir / "tls") if tls else None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> None:
        """Write the config, start mosquitto and return once its port accepts connections.

        With TLS, a full handshake against `ca_file` must succeed too, so that a test never
        connects to a listener whose certificate is not loaded yet. Takes about 20 ms.
        """
        if self.running:
            return
        mosquitto = require_program(MOSQUITTO)
        self._write_password_file()
        self.config_path.write_text(self._render_config())
        self._spawn([mosquitto, "-c", str(self.config_path)])
        self._wait_ready(self.accepts_connections, timeout, "accept connections")

    def kill(self) -> None:
        """SIGKILL the broker: a crash, with no DISCONNECT and no will handling left to it.

        The kernel resets the clients' TCP connections, so clients notice at once rather than
        after their keepalive; their last wills are lost with the broker's memory.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        terminate_group(proc)  # reaps it and closes the pipes

    def restart(self) -> None:
        """Stop (if still running) and start again on the SAME port, as after a broker reboot.

        Persistence is off, so every retained message and every session is gone: clients must
        subscribe again and re-publish their retained discovery and state messages. The config
        and password file are written anew, so `users` may be changed before calling it; the log
        file is appended to.
        """
        self.stop()
        self.start()

    # -- addressing and TLS material -----------------------------------------------------------

    @property
    def hostport(self) -> str:
        """`127.0.0.1:<port>`."""
        return f"{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the broker's certificate (TLS brokers only)."""
        return self._tls().ca_file

    @property
    def client_cert(self) -> Path:
        """A client certificate signed by the same CA (accepted, never required)."""
        return self._tls().client_cert

    @property
    def client_key(self) -> Path:
        """The unencrypted private key of `client_cert`."""
        return self._tls().client_key

    # -- inspection --------------------------------------------------------------------------

    def accepts_connections(self, timeout: float = 0.2) -> bool:
        """Tell whether the port accepts TCP now (and, for TLS, completes a verified handshake)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                if self.tls_files is None:
                    return True
                context = ssl.create_default_context(cafile=str(self.tls_files.ca_file))
                with context.wrap_socket(sock, server_hostname=self.host):
                    return True
        except OSError:  # ssl.SSLError is an OSError too
            return False

    # -- internals ---------------------------------------------------------------------------

    def _tls(self) -> TlsFiles:
        if self.tls_files is None:
            raise AttributeError("this broker was made without tls=True: it has no certificates")
        return self.tls_files

    def _write_password_file(self) -> None:
        if self.users is None:
            return
        passwd = require_program(MOSQUITTO_PASSWD)
        self.password_file.unlink(missing_ok=True)
        self.password_file.touch()  # stays empty for `users={}`: a broker nobody can log in to
        for index, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if index == 0 else []  # -c: a new file, as the mosquitto docs show
            _run(
                [passwd, "-b", *create, str(self.password_file), user, password],
                f"mosquitto_passwd for {user!r}",
            )

    def _render_config(self) -> str:
        lines = [
            "# Written by tests/peers/mosquitto.py for one test; do not edit.",
            "per_listener_settings true",
            "persistence false",
            # Run as root, mosquitto would switch to the `mosquitto` user, which cannot read
            # pytest's private tmp dirs; naming the current user keeps it as it is.
            f"user {getpass.getuser()}",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
            f"listener {self.port} {self.host}",
        ]
        # With per_listener_settings, the security options below belong to the listener above.
        if self.users is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls_files is not None:
            lines += [
                f"cafile {self.tls_files.ca_file}",
                f"certfile {self.tls_files.server_cert}",
                f"keyfile {self.tls_files.server_key}",
                "require_certificate false",
            ]
        return "\n".join(lines) + "\n"
