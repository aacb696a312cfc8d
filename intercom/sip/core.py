"""What the parts of the user agent share, and nothing more.

The registration, the outgoing calls, the incoming calls and the sessions need a handful of
things from their surroundings: the settings, the timer queue, the outbox and transactions, the
digest client, a way to report events, fresh random identifiers, the headers that say who the
door is, the table of dialogs, and the trust rules. :class:`SipCore` holds exactly those. The
parts get a core, never the :class:`~intercom.sip.agent.UserAgent` that dispatches to them, so
no part imports the agent and none can reach into another part's state (after aioquic, whose
stream and recovery objects are handed what they need instead of the connection).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from intercom.ratelimit import LogLimiter
from intercom.sip.address import SipUri
from intercom.sip.auth import Challenge, Credentials, DigestClient
from intercom.sip.dialog import Dialog, DialogKey
from intercom.sip.events import Event
from intercom.sip.message import SipRequest
from intercom.sip.timers import Timers
from intercom.sip.transaction import (
    Addr,
    ClientTransaction,
    Outbox,
    ResponseHandler,
    TimeoutHandler,
    TransactionLayer,
)
from intercom.sip.trust import Trust

log = logging.getLogger("intercom.sip")

#: The methods the door answers, in every Allow header it sends.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"

#: Makes the local SDP for a call: (call handle, remote offer or None) -> SDP, or None to refuse.
SdpProvider = Callable[[int, bytes | None], bytes | None]

#: Bounds on what the core holds, whatever arrives (each also has a lifetime).
MAX_SESSIONS = 16
MAX_EVENTS = 1024
MAX_NAMES = 64


@dataclass(frozen=True)
class AgentSettings:
    username: str
    domain: str  # host[:port] of the SIP domain, used in From, To and the REGISTER URI
    proxy: Addr  # registrar and outbound proxy: every request out of a dialog goes there
    local_host: str  # the address that routes to the PBX (never 0.0.0.0)
    local_port: int
    transport: str = "udp"
    password: str | None = field(default=None, repr=False)
    auth_username: str | None = None
    display_name: str | None = None
    user_agent: str = "pi-intercom"
    expires: int = 300
    allow_incoming: tuple[str, ...] = ()
    answer_after: float | None = 2.0
    max_duration: float = 300.0
    #: ``sip.register``: shut out strangers (see :mod:`intercom.sip.trust`).
    register: bool = True
    #: ``sip.trusted_sources``: more addresses that may send requests, besides the proxy.
    trusted_sources: tuple[str, ...] = ()
    #: How long an incoming call that is never answered (``answer_after: null``) may ring.
    incoming_ring_limit: float = 180.0


class DialogParty(Protocol):
    """What the dialog table needs of what it holds (a session)."""

    @property
    def dialog(self) -> Dialog: ...

    @property
    def ended(self) -> bool: ...

    def peer_hosts(self) -> frozenset[str]: ...


def _random_token(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


class SipCore:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.timers = Timers()
        self.outbox = Outbox()
        self.txns = TransactionLayer(self.outbox, self.timers, reliable=settings.transport == "tcp")
        self.digest: DigestClient | None = None
        if settings.password is not None:
            user = settings.auth_username or settings.username
            self.digest = DigestClient(Credentials(user, settings.password))
        self.trust = Trust(
            closed=settings.register,
            names=frozenset({settings.proxy[0], *settings.trusted_sources}),
        )
        #: The realm of the registrar's challenge, once one came: the only realm answered.
        self.registrar_realm: str | None = None
        self.events: deque[Event] = deque()
        self.events_dropped = 0
        #: Established dialogs, by (Call-ID, local tag, remote tag).
        self.sessions: dict[DialogKey, DialogParty] = {}
        self.limits = LogLimiter(log)
        #: Host names of dialog peers and what they resolved to (the transport tells).
        self._names: dict[str, frozenset[str]] = {}
        self._public_host: str | None = None
        self._public_port: int | None = None
        self._tag_key = secrets.token_bytes(16)

    # ---------------------------------------------------------------- events
    def emit(self, event: Event) -> None:
        if len(self.events) >= MAX_EVENTS:
            # Nobody drains the queue (a driver that stopped pumping): drop the oldest.
            self.events.popleft()
            self.events_dropped += 1
        self.events.append(event)

    # ---------------------------------------------------------------- identifiers
    def new_call_id(self) -> str:
        return f"{_random_token(12)}@pi-intercom"

    def new_tag(self) -> str:
        return _random_token(6)

    def new_branch(self) -> str:
        return "z9hG4bK" + _random_token(10)

    def stateless_tag(self, req: SipRequest) -> str:
        """The To tag of a response sent without keeping state: the same for every copy of
        the request (RFC 3261 8.2.7), unguessable for anyone else, and nothing to store."""
        ids = f"{req.call_id}\0{req.from_}\0{req.vias[0] if req.vias else ''}"
        return hmac.new(self._tag_key, ids.encode(), hashlib.sha256).hexdigest()[:12]

    # ---------------------------------------------------------------- who the door is
    def via(self, branch: str | None = None) -> str:
        s = self.settings
        transport = s.transport.upper()
        branch = branch or self.new_branch()
        return f"SIP/2.0/{transport} {s.local_host}:{s.local_port};rport;branch={branch}"

    def contact_uri(self) -> SipUri:
        s = self.settings
        host = self._public_host or s.local_host
        port = self._public_port or s.local_port
        params: dict[str, str | None] = {}
        if s.transport == "tcp":
            params["transport"] = "tcp"
        return SipUri("sip", s.username, host, port, params)

    def contact(self) -> str:
        return f"<{self.contact_uri()}>"

    def learn_public_address(self, host: str | None, port: int | None) -> bool:
        """Take the address the registrar saw (Via received/rport); True when it changed."""
        new_host = host or self._public_host or self.settings.local_host
        new_port = port or self._public_port or self.settings.local_port
        old_host = self._public_host or self.settings.local_host
        old_port = self._public_port or self.settings.local_port
        if (new_host, new_port) == (old_host, old_port):
            return False
        log.info("the PBX sees this door at %s:%s; using it in Contact", new_host, new_port)
        self._public_host, self._public_port = new_host, new_port
        return True

    def from_header(self, tag: str) -> str:
        s = self.settings
        display = f'"{s.display_name}" ' if s.display_name else ""
        return f"{display}<sip:{s.username}@{s.domain}>;tag={tag}"

    def target_uri(self, target: str) -> str:
        target = target.strip()
        if target.startswith(("sip:", "sips:")):
            return target
        return f"sip:{target}@{self.settings.domain}"

    def add_common_headers(self, req: SipRequest) -> None:
        req.headers.add("User-Agent", self.settings.user_agent)
        if req.method in ("INVITE", "REGISTER", "OPTIONS", "UPDATE"):
            req.headers.add("Allow", ALLOW)

    # ---------------------------------------------------------------- where to send
    def proxy_addr(self) -> Addr:
        return self.settings.proxy

    @staticmethod
    def addr_of(uri: SipUri) -> Addr:
        """Where to send a request whose next hop is ``uri`` (no DNS SRV: the PBX is local)."""
        default = 5061 if uri.scheme == "sips" else 5060
        return (uri.host.strip("[]"), uri.port or default)

    def send_request(
        self,
        req: SipRequest,
        dest: Addr,
        now: float,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
    ) -> ClientTransaction:
        return self.txns.send_request(req, dest, now, on_response, on_timeout)

    # ---------------------------------------------------------------- digest
    def may_answer(self, challenge: Challenge, dest: Addr, now: float) -> bool:
        """Whether to answer a 401/407 to a request that went to ``dest``.

        Only the PBX gets a digest of the password, and only for the registrar's realm: a
        stranger who gets the door to send it a request (a BYE in a dialog it set up, say) and
        answers 401 with a nonce of its choosing would otherwise get a hash to crack offline.
        """
        if self.digest is None:
            return False
        if not self.trust.trusts(dest[0]):
            self.limits.warning(
                "challenge-dest",
                now,
                "not answering a challenge from %s: only the PBX gets the password's digest",
                dest[0],
            )
            return False
        realm = self.registrar_realm
        if realm is not None and challenge.realm != realm:
            self.limits.warning(
                "challenge-realm",
                now,
                "not answering a challenge for another realm than the registrar's (%r)",
                realm,
            )
            return False
        return True

    # ---------------------------------------------------------------- dialogs
    def add_session(self, party: DialogParty) -> bool:
        """Enter an established dialog into the table; False when it is full of live ones.

        An ended dialog stays in the table for 64*T1 to answer a retransmitted 2xx with its
        ACK; when the table is full the oldest of those makes room, so a caller who calls and
        hangs up again and again cannot crowd out the next call (only live dialogs count).
        """
        key = party.dialog.key
        if key not in self.sessions and len(self.sessions) >= MAX_SESSIONS:
            ended = next((k for k, p in self.sessions.items() if p.ended), None)
            if ended is None:
                return False
            del self.sessions[ended]
        self.sessions[key] = party
        return True

    def forget_session(self, party: DialogParty) -> None:
        key = party.dialog.key
        if self.sessions.get(key) is party:
            del self.sessions[key]

    def peer_hosts(self) -> frozenset[str]:
        """Addresses that may send the door SIP besides the trusted ones: the other ends of the
        dialogs and the destinations of our transactions (their responses come from there)."""
        hosts: set[str] = set()
        for party in self.sessions.values():
            hosts |= party.peer_hosts()
        hosts |= self.txns.destinations()
        for name in [h for h in hosts if h in self._names]:
            hosts |= self._names[name]
        return frozenset(hosts)

    def resolved(self, name: str, addresses: frozenset[str]) -> None:
        """A host name the transport looked up: a peer named by name sends from these."""
        self.trust.resolved(name, addresses)
        self._names.pop(name, None)
        self._names[name] = addresses
        while len(self._names) > MAX_NAMES:
            del self._names[next(iter(self._names))]
