"""Kamailio as the PBX that the intercom and the test handsets register with.

A real registrar and proxy catches what a hand-written fake would not: digest challenges with and
without qop, 401 for REGISTER and 407 for INVITE, Record-Route and loose routing, 404/480/486
answers, CANCEL handling and a registrar that forgets everything when it restarts. Only stock
Debian modules are used and no database: the users live in an `htable` filled at start.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from tests.peers import LoggedPeer, require_program
from tests.peers.ports import LOOPBACK, free_udp_tcp_port

KAMAILIO = "kamailio"
KAMCMD = "kamcmd"

_USER_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
# A password goes into a double-quoted Kamailio string; these characters would need escaping or
# would be read as pseudo-variables, so the fixture refuses them instead.
_BAD_PASSWORD_CHARS = set('"\\$\n\r')

# The routing logic; the header written by `_render_config` defines the socket, the realm, the
# challenge flags and the users. Written for Kamailio 5.6 with stock modules only.
_ROUTING = r"""
####### Modules #######
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "htable.so"
loadmodule "auth.so"
loadmodule "nathelper.so"

modparam("ctl", "binrpc", CTL_SOCKET)
modparam("htable", "htable", "users=>size=4;")
# qop is chosen per challenge through CHALLENGE_FLAGS; nonces may be reused (no one-time nonce),
# as on most PBXs, so that handsets can cache credentials.
modparam("tm", "failure_reply_mode", 3)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 60000)
modparam("rr", "enable_full_lr", 0)
modparam("rr", "append_fromtag", 1)
modparam("registrar", "method_filtering", 1)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("registrar", "received_avp", "$avp(RECEIVED)")
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "nat_bflag", FLB_NATB)

####### Routing #######
request_route {
    route(REQINIT);
    route(NATDETECT);

    if (is_method("CANCEL")) {
        # Relay a CANCEL only when it matches a transaction; tm answers it and cancels the branch.
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }

    if (!is_method("ACK")) {
        # Absorb retransmissions of requests already being handled.
        if (t_precheck_trans()) {
            t_check_trans();
            exit;
        }
        t_check_trans();
    }

    route(WITHINDLG);

    # Initial requests from here on.
    remove_hf("Route");
    route(REGISTRAR);
    route(AUTH);

    if (is_method("INVITE|SUBSCRIBE")) {
        record_route();
    }
    if ($rU == $null) {
        sl_send_reply("484", "Address Incomplete");
        exit;
    }
    route(LOCATION);
}

route[REQINIT] {
    force_rport();
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    # Keepalive/health check addressed to the PBX itself: no authentication.
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {
        sl_send_reply("200", "Keepalive");
        exit;
    }
    if (!sanity_check("17895", "7")) {
        xlog("L_WARN", "PBX: malformed $rm from $si:$sp\n");
        exit;
    }
}

route[NATDETECT] {
    # On loopback nothing is behind NAT, but a TCP client sends from an ephemeral port; treating it
    # as NAT makes Kamailio reuse that connection instead of connecting to the Contact.
    if ($pr == "tcp" || nat_uac_test("18")) {
        if (is_method("REGISTER")) {
            fix_nated_register();
        } else if (is_first_hop()) {
            set_contact_alias();
        }
        setflag(FLT_NATS);
    }
}

route[WITHINDLG] {
    if (!has_totag()) {
        return;
    }
    if (loose_route()) {
        if (!isdsturiset()) {
            handle_ruri_alias();
        }
        xlog("L_INFO", "PBX: in-dialog $rm $ru ci=$ci\n");
        if (is_method("ACK")) {
            route(NATMANAGE);
        } else if (is_method("NOTIFY")) {
            record_route();
        }
        route(RELAY);
        exit;
    }
    if (is_method("ACK")) {
        # ACK for a non-2xx answer is hop by hop: tm absorbs it; a stray ACK is dropped.
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    xlog("L_INFO", "PBX: 404 in-dialog $rm without route ci=$ci\n");
    sl_send_reply("404", "Not here");
    exit;
}

route[REGISTRAR] {
    if (!is_method("REGISTER")) {
        return;
    }
    if (!is_present_hf("Authorization")) {
        xlog("L_INFO", "PBX: 401 challenge REGISTER $tu from $si:$sp ci=$ci\n");
        www_challenge(REALM, CHALLENGE_FLAGS);
        exit;
    }
    if ($sht(users=>$au) == $null) {
        xlog("L_NOTICE", "PBX: 403 REGISTER unknown user $au ci=$ci\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }
    $var(password) = $sht(users=>$au);
    pv_www_authenticate(REALM, "$var(password)", "0");
    $var(rc) = $rc;
    if ($var(rc) == -2) {
        xlog("L_NOTICE", "PBX: 403 REGISTER wrong password for $au ci=$ci\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }
    if ($var(rc) == -4 || $var(rc) == -6) {
        xlog("L_INFO", "PBX: 401 stale nonce REGISTER $tu ci=$ci\n");
        www_challenge(REALM, STALE_FLAGS);
        exit;
    }
    if ($var(rc) < 0) {
        xlog("L_INFO", "PBX: 401 challenge REGISTER $tu rc=$var(rc) ci=$ci\n");
        www_challenge(REALM, CHALLENGE_FLAGS);
        exit;
    }
    if ($au != $tU) {
        xlog("L_NOTICE", "PBX: 403 REGISTER $tu by other user $au ci=$ci\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }
    if (isflagset(FLT_NATS)) {
        setbflag(FLB_NATB);
    }
    if (!save("location")) {
        xlog("L_ERR", "PBX: save location failed for $tu ci=$ci\n");
        sl_reply_error();
        exit;
    }
    xlog("L_INFO", "PBX: REGISTER ok $tu contact=$ct ci=$ci\n");
    exit;
}

route[AUTH] {
    # Every initial request (INVITE, MESSAGE, OPTIONS to a user, ...) must come from a local user.
    if (!is_present_hf("Proxy-Authorization")) {
        xlog("L_INFO", "PBX: 407 challenge $rm $ru from $fu ci=$ci\n");
        proxy_challenge(REALM, CHALLENGE_FLAGS);
        exit;
    }
    if ($sht(users=>$au) == $null) {
        xlog("L_NOTICE", "PBX: 403 $rm unknown user $au ci=$ci\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }
    $var(password) = $sht(users=>$au);
    pv_proxy_authenticate(REALM, "$var(password)", "0");
    $var(rc) = $rc;
    if ($var(rc) == -2) {
        xlog("L_NOTICE", "PBX: 403 $rm wrong password for $au ci=$ci\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }
    if ($var(rc) == -4 || $var(rc) == -6) {
        xlog("L_INFO", "PBX: 407 stale nonce $rm from $fu ci=$ci\n");
        proxy_challenge(REALM, STALE_FLAGS);
        exit;
    }
    if ($var(rc) < 0) {
        xlog("L_INFO", "PBX: 407 challenge $rm from $fu rc=$var(rc) ci=$ci\n");
        proxy_challenge(REALM, CHALLENGE_FLAGS);
        exit;
    }
    if ($au != $fU) {
        xlog("L_NOTICE", "PBX: 403 $rm from $fU by other user $au ci=$ci\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }
    consume_credentials();
}

route[LOCATION] {
    if ($sht(users=>$rU) == $null) {
        xlog("L_INFO", "PBX: 404 $rm to unknown user $rU ci=$ci\n");
        send_reply("404", "Not Found");
        exit;
    }
    if (!lookup("location")) {
        $var(rc) = $rc;
        t_newtran();
        if ($var(rc) == -2) {
            xlog("L_INFO", "PBX: 405 $rm to $rU ci=$ci\n");
            send_reply("405", "Method Not Allowed");
            exit;
        }
        xlog("L_INFO", "PBX: 480 $rm to unregistered $rU ci=$ci\n");
        send_reply("480", "Temporarily Unavailable");
        exit;
    }
    xlog("L_INFO", "PBX: relay $rm to $rU at $ru ci=$ci\n");
    route(RELAY);
}

route[RELAY] {
    if (is_method("INVITE|BYE|SUBSCRIBE|UPDATE")) {
        if (!t_is_set("branch_route")) {
            t_on_branch("MANAGE_BRANCH");
        }
    }
    if (is_method("INVITE|SUBSCRIBE|UPDATE")) {
        if (!t_is_set("onreply_route")) {
            t_on_reply("MANAGE_REPLY");
        }
    }
    if (is_method("INVITE")) {
        if (!t_is_set("failure_route")) {
            t_on_failure("MANAGE_FAILURE");
        }
    }
    if (!t_relay()) {
        xlog("L_ERR", "PBX: relay of $rm to $ru failed ci=$ci\n");
        sl_reply_error();
    }
    exit;
}

route[NATMANAGE] {
    if (is_request() && has_totag() && check_route_param("nat=yes")) {
        setbflag(FLB_NATB);
    }
    if (!(isflagset(FLT_NATS) || isbflagset(FLB_NATB))) {
        return;
    }
    if (is_request() && !has_totag() && t_is_branch_route()) {
        add_rr_param(";nat=yes");
    }
    if (is_reply() && isbflagset(FLB_NATB) && is_first_hop()) {
        set_contact_alias();
    }
}

branch_route[MANAGE_BRANCH] {
    route(NATMANAGE);
}

onreply_route[MANAGE_REPLY] {
    xlog("L_INFO", "PBX: reply $rs $rr for $rm ci=$ci\n");
    if (status =~ "[12][0-9][0-9]") {
        route(NATMANAGE);
    }
}

failure_route[MANAGE_FAILURE] {
    xlog("L_INFO", "PBX: failure $T_reply_code for $rm ci=$ci\n");
    if (t_is_canceled()) {
        exit;
    }
}
"""


class KamailioError(RuntimeError):
    """Kamailio did not start, or did not answer in time; the message carries its log."""


class Kamailio(LoggedPeer):
    """A Kamailio registrar and proxy on 127.0.0.1, on a free port, for UDP and TCP.

    Users and passwords are given to the constructor; REGISTER is challenged with 401 and other
    initial requests with 407, with `qop="auth"` unless `qop=False`. A bad digest gets 403, a call
    to an unknown user 404, to a known user with no registration 480. The registrations live only
    in memory, so `restart()` behaves like a PBX reboot.
    """

    host = LOOPBACK
    name = "kamailio"
    error = KamailioError

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        qop: bool = True,
        realm: str = "pbx.test",
        workdir: Path | None = None,
        port: int | None = None,
        log_level: int = 2,
        max_expires: int = 3600,
    ) -> None:
        for user, password in users.items():
            if not _USER_RE.match(user):
                raise ValueError(f"user name {user!r} is not usable in the Kamailio config")
            if _BAD_PASSWORD_CHARS & set(password):
                raise ValueError(f"password of {user!r} holds a character the config cannot hold")
        if not realm or _BAD_PASSWORD_CHARS & set(realm):
            raise ValueError(f"realm {realm!r} is not usable")
        self.users: dict[str, str] = dict(users)
        self.qop = qop
        self.realm = realm
        self.log_level = log_level
        # A registrar that grants short expiries makes clients refresh soon: a PBX restart test
        # then takes seconds, not minutes.
        self.max_expires = max_expires
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="kamailio-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A unix socket path must stay under ~108 bytes: pytest's tmp_path can be longer, so the
        # runtime dir (ctl socket, pid files) always lives in a short private dir under /tmp.
        self._rundir = Path(tempfile.mkdtemp(prefix="kam-run-"))
        self.port = port if port is not None else free_udp_tcp_port()
        self.config_path = self.workdir / "kamailio.cfg"
        self.log_path = self.workdir / "kamailio.log"
        self._ctl_socket = self._rundir / "ctl.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start Kamailio and return once it answers an OPTIONS over UDP.

        Waiting for a real SIP answer (not just for the process) means that a test never sends its
        first REGISTER into a socket that is not open yet.
        """
        if self.running:
            return
        require_program(KAMAILIO)
        self.config_path.write_text(self._render_config())
        self._check_config()
        self._spawn(self._command())
        self._wait_ready(lambda: self.ping(timeout=0.2), timeout, "answer OPTIONS")

    def restart(self) -> None:
        """Stop and start again on the same port: a PBX reboot that forgets every registration.

        The config is written anew, so `users` may be changed before calling it. The log file is
        appended to, so `log_text()` and `log_lines()` still show what happened before.
        """
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop Kamailio and remove the private runtime dir (and the workdir if it made one)."""
        self.stop()
        shutil.rmtree(self._rundir, ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- addressing --------------------------------------------------------------------------

    @property
    def hostport(self) -> str:
        """`127.0.0.1:<port>`, the domain part every handset uses."""
        return f"{self.host}:{self.port}"

    def uri(self, user: str | None = None, transport: str | None = None) -> str:
        """A SIP URI on this PBX: `sip:user@127.0.0.1:port`, or the PBX itself without a user."""
        uri = f"sip:{user}@{self.hostport}" if user else f"sip:{self.hostport}"
        return f"{uri};transport={transport}" if transport else uri

    # -- inspection --------------------------------------------------------------------------

    def ping(self, timeout: float = 1.0) -> bool:
        """Send an OPTIONS over UDP to the PBX itself and tell whether a 200 came back."""
        call_id = uuid.uuid4().hex
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            local_port = sock.getsockname()[1]
            request = (
                f"OPTIONS sip:{self.hostport} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch=z9hG4bK{call_id[:16]};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:probe@{LOOPBACK}:{local_port}>;tag={call_id[:8]}\r\n"
                f"To: <sip:{self.hostport}>\r\n"
                f"Call-ID: {call_id}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.settimeout(timeout)
            try:
                sock.sendto(request.encode(), (self.host, self.port))
                data, _ = sock.recvfrom(65535)
            except OSError:
                return False
        return data.startswith(b"SIP/2.0 200")

    def kamcmd(self, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        """Run `kamcmd` against this instance's own ctl socket."""
        return subprocess.run(
            [require_program(KAMCMD), "-s", f"unix:{self._ctl_socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def contacts(self, user: str) -> list[str]:
        """The contact URIs the registrar holds for `user` (empty when not registered)."""
        if not self.running:
            return []
        result = self.kamcmd("ul.lookup", "location", f"s:{user}")
        if result.returncode != 0:
            return []
        return re.findall(r"^\s*Address:\s*(\S+)", result.stdout, flags=re.MULTILINE)

    def registered(self, user: str) -> bool:
        """True when the registrar holds at least one contact for `user`."""
        return bool(self.contacts(user))

    def wait_registered(self, user: str, timeout: float = 10.0) -> None:
        """Wait until `user` is registered; raise TimeoutError with the log tail otherwise."""
        self._wait(lambda: self.registered(user), timeout, f"{user} did not register")

    def wait_unregistered(self, user: str, timeout: float = 10.0) -> None:
        """Wait until `user` has no registration left (after an un-REGISTER or expiry)."""
        self._wait(lambda: not self.registered(user), timeout, f"{user} stayed registered")

    # -- internals ---------------------------------------------------------------------------

    def _wait(self, check: object, timeout: float, what: str) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if time.monotonic() >= deadline:
                tail = "\n".join(self.log_text().splitlines()[-40:])
                raise TimeoutError(f"{what} within {timeout} s; kamailio log tail:\n{tail}")
            time.sleep(0.05)

    def _command(self) -> list[str]:
        # -DD: stay in the foreground (still forking the workers), -E: log to stderr,
        # -Y/-w: private runtime and working dirs, -m/-M: small shared and private memory (MB).
        return [
            require_program(KAMAILIO),
            "-DD",
            "-E",
            "-f",
            str(self.config_path),
            "-Y",
            str(self._rundir),
            "-w",
            str(self.workdir),
            "-m",
            "32",
            "-M",
            "8",
        ]

    def _check_config(self) -> None:
        """Syntax-check the config first (`-c`), so a broken template fails with a clear message."""
        result = subprocess.run(
            [require_program(KAMAILIO), "-c", "-f", str(self.config_path), "-Y", str(self._rundir)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if result.returncode != 0:
            raise KamailioError(f"kamailio rejected {self.config_path}:\n{result.stderr}")

    def _render_config(self) -> str:
        challenge = "1" if self.qop else "0"
        stale = "17" if self.qop else "16"
        users = "\n".join(
            f'    $sht(users=>{user}) = "{password}";' for user, password in self.users.items()
        )
        header = f"""#!KAMAILIO
# Written by tests/peers/kamailio.py for one test; do not edit.
#!define FLT_NATS 5
#!define FLB_NATB 6
#!define REALM "{self.realm}"
#!define CHALLENGE_FLAGS "{challenge}"
#!define STALE_FLAGS "{stale}"
#!define CTL_SOCKET "unix:{self._ctl_socket}"

debug={self.log_level}
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=off
tcp_connection_lifetime=3605
server_header="Server: pi-intercom test PBX (Kamailio)"
user_agent_header="User-Agent: pi-intercom test PBX (Kamailio)"

# Only loopback, only our port; aliases always carry the port (a port-less alias would make the
# handsets' own 127.0.0.1 contacts look like the PBX and loop in-dialog requests).
listen=udp:{self.host}:{self.port}
listen=tcp:{self.host}:{self.port}
alias="localhost:{self.port}"
"""
        init = f"""
event_route[htable:mod-init] {{
{users}
}}
"""
        routing = _ROUTING.replace(
            '"max_expires", 3600', f'"max_expires", {self.max_expires}'
        ).replace('"min_expires", 10', f'"min_expires", {min(10, self.max_expires)}')
        return header + routing + init
