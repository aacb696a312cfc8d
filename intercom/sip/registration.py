"""Registration with the PBX (RFC 3261 section 10), sans-I/O.

What PBXs in homes need, learned from other projects' trackers: refresh at about half of what the
registrar granted; obey 423 Min-Expires; back off exponentially after 403s and time-outs, so that a
PBX running fail2ban does not ban the door; try again for ever, so that the door comes back by
itself after the PBX restarts; and a REGISTER Request-URI without a user part (FRITZ!Box ignores
the others).
"""

from __future__ import annotations

import enum

from intercom.ascii import uint
from intercom.errors import AuthError, LocalProtocolError, ProtocolError
from intercom.sip.address import NameAddr, Via
from intercom.sip.auth import parse_challenge
from intercom.sip.core import SipCore
from intercom.sip.events import RegistrationChanged
from intercom.sip.message import SipRequest, SipResponse


class RegState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKOFF = "backoff"
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


R = RegState
#: Allowed changes of the registration state, the single source for code and diagram.
TRANSITIONS: dict[RegState, frozenset[RegState]] = {
    R.IDLE: frozenset({R.REGISTERING, R.UNREGISTERED}),
    R.REGISTERING: frozenset({R.REGISTERING, R.REGISTERED, R.BACKOFF, R.UNREGISTERING}),
    R.REGISTERED: frozenset({R.REGISTERING, R.UNREGISTERING}),
    R.BACKOFF: frozenset({R.REGISTERING, R.UNREGISTERED}),
    R.UNREGISTERING: frozenset({R.UNREGISTERED}),
    R.UNREGISTERED: frozenset({R.REGISTERING}),
}

#: Back-off after failures: base seconds by kind, doubled per consecutive failure, capped.
BACKOFF_BASE_TIMEOUT = 5.0
BACKOFF_BASE_REFUSED = 30.0
BACKOFF_CAP = 900.0
#: A refresh never comes sooner than this after a success, whatever the registrar granted.
MIN_REFRESH = 5.0
#: Old contacts un-registered with the next REGISTER after the public address moved (NAT).
MAX_STALE_CONTACTS = 4


class Registration:
    def __init__(self, core: SipCore, expires: int) -> None:
        self.core = core
        self.requested = expires
        self.state = RegState.IDLE
        self.granted: int | None = None
        self.failures = 0
        self.auth_failures = 0
        self._cseq = 0
        self._call_id = core.new_call_id()
        self._tag = core.new_tag()
        self._timer: int | None = None
        self._auth_header: tuple[str, str] | None = None
        self._stale_contacts: list[str] = []
        self._expires_in_flight = expires
        self._announced = False  # "registered" is told once, not at every refresh
        #: When the PBX last answered (or a REGISTER last timed out): the watchdog's proof that
        #: the SIP stack itself still runs, whatever the PBX said.
        self.last_result: float | None = None
        self._generation = 0  # which REGISTER is the current one

    # -- state --------------------------------------------------------------------------------
    def _go(self, new: RegState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(
                f"registration: no transition {self.state.value} -> {new.value}"
            )
        self.state = new

    @property
    def registered(self) -> bool:
        """True while a binding is in force, refreshes included (the watchdog relies on it)."""
        return self.state is RegState.REGISTERED or (
            self.state is RegState.REGISTERING and self._announced
        )

    # -- commands -----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        # A new start replaces a pending refresh or back-off retry, and is announced afresh.
        self.core.timers.cancel(self._timer)
        self._timer = None
        self._announced = False
        self.auth_failures = 0
        self._send(now, self.requested, announce=True)

    def stop(self, now: float) -> None:
        """Un-REGISTER (expires 0); the state becomes ``unregistered`` on the answer or time-out."""
        if self.state is RegState.UNREGISTERING:
            return  # the un-REGISTER is already on its way
        self.core.timers.cancel(self._timer)
        if self.state in (RegState.REGISTERED, RegState.REGISTERING):
            self._go(RegState.UNREGISTERING)
            self._send(now, 0, announce=False)
        elif self.state is not RegState.UNREGISTERED:
            if self.state is RegState.REGISTERING:
                self._go(RegState.UNREGISTERING)
            self.state = RegState.UNREGISTERED
            self.core.emit(RegistrationChanged("unregistered", reason="stopped"))

    # -- wire ---------------------------------------------------------------------------------
    def _send(
        self, now: float, expires: int, *, announce: bool, authorization: str | None = None
    ) -> None:
        core = self.core
        if self.state is not RegState.UNREGISTERING:
            was_registering = self.state is RegState.REGISTERING
            self._go(RegState.REGISTERING)
            if announce and not was_registering:
                core.emit(RegistrationChanged("registering"))
        self._cseq += 1
        self._expires_in_flight = expires
        req = SipRequest(method="REGISTER", uri=self._uri())
        req.headers.add("Via", core.via())
        req.headers.add("Max-Forwards", "70")
        aor = f"<sip:{core.settings.username}@{core.settings.domain}>"
        req.headers.add("From", f"{aor};tag={self._tag}")
        req.headers.add("To", aor)
        req.headers.add("Call-ID", self._call_id)
        req.headers.add("CSeq", f"{self._cseq} REGISTER")
        req.headers.add("Contact", core.contact())
        for old in self._stale_contacts:
            req.headers.add("Contact", f"{old};expires=0")
        req.headers.add("Expires", str(expires))
        if self._auth_header is not None:
            # Reuse the last challenge (nonce count goes up) to spare a round trip.
            name, _ = self._auth_header
            answer = authorization or self._authorize_again(req)
            if answer is not None:
                req.headers.add(name, answer)
        core.add_common_headers(req)
        # Only the newest REGISTER speaks for the binding: the late answer to one it replaced
        # (a REGISTER overtaken by the un-REGISTER, say) is ignored.
        self._generation += 1
        gen = self._generation

        def on_response(resp: SipResponse, t: float) -> None:
            if gen == self._generation:
                self._on_response(resp, t)

        def on_timeout(t: float) -> None:
            if gen == self._generation:
                self._on_timeout(t)

        core.send_request(req, core.proxy_addr(), now, on_response, on_timeout)

    def _uri(self) -> str:
        """The REGISTER Request-URI: the domain without a user part (FRITZ!Box needs that)."""
        return f"sip:{self.core.settings.domain}"

    def _authorize_again(self, req: SipRequest) -> str | None:
        """The answer to the remembered challenge, or None when it cannot be answered."""
        assert self._auth_header is not None
        name, challenge_value = self._auth_header
        digest = self.core.digest
        if digest is None:
            return None
        try:
            challenge = parse_challenge(challenge_value, proxy=name == "Proxy-Authorization")
            return digest.authorize(challenge, "REGISTER", req.uri)
        except AuthError:
            return None

    def _on_response(self, resp: SipResponse, now: float) -> None:
        if resp.status < 200:
            return
        self.last_result = now
        if self.state is RegState.UNREGISTERING:
            if resp.status in (401, 407) and self.auth_failures == 0:
                self.auth_failures += 1
                if self._remember_challenge(resp):
                    self._send(now, 0, announce=False)
                    return
            self._go(RegState.UNREGISTERED)
            self.core.emit(RegistrationChanged("unregistered", code=resp.status, reason="stopped"))
            return
        if resp.status in (401, 407):
            self._handle_challenge(resp, now)
        elif 200 <= resp.status < 300:
            self._handle_ok(resp, now)
        elif resp.status == 423:
            min_expires = uint(resp.headers.get("Min-Expires") or "")
            if min_expires is not None and min_expires <= 86400:
                self.requested = max(self.requested, min_expires)
                self._send(now, self.requested, announce=False)
            else:
                self._fail(now, resp.status, "423 without a usable Min-Expires", refused=True)
        elif resp.status == 403:
            self._fail(now, 403, "forbidden: wrong user name or password?", refused=True)
        else:
            self._fail(now, resp.status, resp.reason or "refused", refused=resp.status < 500)

    def _remember_challenge(self, resp: SipResponse) -> bool:
        proxy = resp.status == 407
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        value = resp.headers.get(header)
        if value is None:
            return False
        try:
            challenge = parse_challenge(value, proxy=proxy)
        except AuthError:
            return False
        self._auth_header = ("Proxy-Authorization" if proxy else "Authorization", value)
        # The registrar's realm: the only one the door answers challenges for (see SipCore).
        self.core.registrar_realm = challenge.realm
        return True

    def _handle_challenge(self, resp: SipResponse, now: float) -> None:
        proxy = resp.status == 407
        value = resp.headers.get("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        digest = self.core.digest
        try:
            challenge = parse_challenge(value or "", proxy=proxy)
        except AuthError as exc:
            self._fail(now, resp.status, f"unusable challenge: {exc}", refused=True)
            return
        if digest is None:
            self._fail(
                now, resp.status, "the PBX asks for a password and none is set", refused=True
            )
            return
        if not digest.should_retry(challenge, self.auth_failures):
            self._fail(now, resp.status, "credentials refused: wrong user name or password?", True)
            return
        try:
            # Answered here, so what cannot be answered (an unsupported qop) fails here.
            answer = digest.authorize(challenge, "REGISTER", self._uri())
        except AuthError as exc:
            self._fail(now, resp.status, f"unusable challenge: {exc}", refused=True)
            return
        if not challenge.stale:
            self.auth_failures += 1
        self._remember_challenge(resp)
        self._send(now, self._expires_in_flight, announce=False, authorization=answer)

    def _handle_ok(self, resp: SipResponse, now: float) -> None:
        self.auth_failures = 0
        self.failures = 0
        self._stale_contacts = []
        if self._learn_public_address(resp):
            # Behind NAT: register the address the PBX sees, and drop the one it cannot reach.
            self._send(now, self._expires_in_flight, announce=False)
            return
        granted = self._granted_expires(resp)
        self.granted = granted
        self._go(RegState.REGISTERED)
        if not self._announced:
            self._announced = True
            self.core.emit(RegistrationChanged("registered", code=resp.status, expires=granted))
        refresh = max(MIN_REFRESH, granted / 2)
        self._arm(now + refresh, self._refresh)

    def _learn_public_address(self, resp: SipResponse) -> bool:
        try:
            via = Via.parse(resp.vias[0])
        except (IndexError, ProtocolError):
            return False
        received = via.params.get("received")
        port = uint(via.params.get("rport") or "", max_digits=5)
        host = received or None
        if port is not None and not 0 < port < 65536:
            port = None
        old = self.core.contact()
        changed = self.core.learn_public_address(host, port)
        if changed:
            self._stale_contacts = [*self._stale_contacts, old][-MAX_STALE_CONTACTS:]
        return changed

    def _granted_expires(self, resp: SipResponse) -> int:
        mine = self.core.contact_uri()
        for value in resp.headers.get_all("Contact"):
            try:
                contact = NameAddr.parse(value)
            except ProtocolError:
                continue
            if (contact.uri.user, contact.uri.host, contact.uri.port) == (
                mine.user,
                mine.host,
                mine.port,
            ):
                exp = uint(contact.params.get("expires") or "")
                if exp is not None:
                    return exp
        header = uint(resp.headers.get("Expires") or "")
        return header if header is not None else self._expires_in_flight

    def _refresh(self, now: float) -> None:
        self._send(now, self.requested, announce=False)

    def _on_timeout(self, now: float) -> None:
        self.last_result = now
        if self.state is RegState.UNREGISTERING:
            self._go(RegState.UNREGISTERED)
            self.core.emit(RegistrationChanged("unregistered", reason="no answer to un-REGISTER"))
            return
        self._fail(now, None, "no answer from the PBX", refused=False)

    def _fail(self, now: float, code: int | None, reason: str, refused: bool) -> None:
        self.failures += 1
        self.auth_failures = 0
        self._auth_header = None
        base = BACKOFF_BASE_REFUSED if refused else BACKOFF_BASE_TIMEOUT
        delay = min(BACKOFF_CAP, base * 2 ** (self.failures - 1))
        self._go(RegState.BACKOFF)
        self._announced = False
        self.core.emit(RegistrationChanged("failed", code=code, reason=reason, retry_in=delay))
        self._arm(now + delay, self._retry)

    def _retry(self, now: float) -> None:
        self._send(now, self.requested, announce=True)

    def _arm(self, when: float, callback: object) -> None:
        self.core.timers.cancel(self._timer)
        self._timer = self.core.timers.call_at(when, callback)  # type: ignore[arg-type]
