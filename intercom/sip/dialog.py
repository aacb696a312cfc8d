"""SIP dialogs (RFC 3261 section 12): tags, route set, remote target and CSeq.

A dialog is what lets a BYE reach the right phone through a record-routing PBX. Getting it wrong is
the classic failure of small SIP stacks: an ACK with a made-up To tag, or sent past the proxy, and
the handset drops the call after 32 seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from intercom.errors import RemoteProtocolError
from intercom.sip.address import NameAddr, SipUri
from intercom.sip.message import SipRequest, SipResponse

DialogKey = tuple[str, str, str]  # Call-ID, local tag, remote tag


def _route_set(msg: SipRequest | SipResponse, *, reverse: bool) -> list[str]:
    """The Record-Route entries, each checked now: the dialog parses them at every request it
    sends, so a malformed one must refuse the dialog at its start, not break it later."""
    routes = msg.headers.get_all("Record-Route")
    for route in routes:
        NameAddr.parse(route)  # raises ParseError
    return list(reversed(routes)) if reverse else list(routes)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_header: str  # our side, with our tag: From in our requests
    remote_header: str  # their side, with their tag: To in our requests
    local_seq: int
    remote_seq: int | None
    remote_target: SipUri
    route_set: list[str] = field(default_factory=list)

    @property
    def key(self) -> DialogKey:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uac(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """The dialog a 2xx (or a tagged 1xx) to our INVITE creates (section 12.1.2)."""
        remote_tag = NameAddr.parse(response.to).tag
        local_tag = NameAddr.parse(invite.from_).tag
        if not remote_tag or not local_tag:
            raise RemoteProtocolError("dialog-creating response without tags")
        contacts = response.headers.get_all("Contact")
        if not contacts:
            raise RemoteProtocolError("2xx to INVITE without Contact")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_header=invite.from_,
            remote_header=response.to,
            local_seq=invite.cseq[0],
            remote_seq=None,
            remote_target=NameAddr.parse(contacts[0]).uri,
            route_set=_route_set(response, reverse=True),
        )

    @classmethod
    def from_uas(cls, invite: SipRequest, local_tag: str) -> Dialog:
        """The dialog our 2xx to an incoming INVITE creates (section 12.1.1)."""
        remote_tag = NameAddr.parse(invite.from_).tag
        contacts = invite.headers.get_all("Contact")
        if not remote_tag or not contacts:
            raise RemoteProtocolError("INVITE without From tag or Contact")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_header=f"{invite.to};tag={local_tag}",
            remote_header=invite.from_,
            local_seq=0,
            remote_seq=invite.cseq[0],
            remote_target=NameAddr.parse(contacts[0]).uri,
            route_set=_route_set(invite, reverse=False),
        )

    def update_target(self, request_or_response: SipRequest | SipResponse) -> None:
        """A target refresh (re-INVITE or its 2xx) may move the remote Contact."""
        contacts = request_or_response.headers.get_all("Contact")
        if contacts:
            self.remote_target = NameAddr.parse(contacts[0]).uri

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """Section 12.2.2: a lower CSeq than the last one is out of order and gets a 500."""
        seq = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def _loose(self) -> bool:
        return not self.route_set or "lr" in NameAddr.parse(self.route_set[0]).uri.params

    def request(self, method: str, *, cseq: int | None = None) -> SipRequest:
        """A request inside the dialog, without Via (the agent adds it), section 12.2.1.1."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        if self._loose():
            uri = str(self.remote_target)
            routes = list(self.route_set)
        else:  # strict routing: the first route becomes the Request-URI
            uri = str(NameAddr.parse(self.route_set[0]).uri)
            routes = [*self.route_set[1:], f"<{self.remote_target}>"]
        req = SipRequest(method=method, uri=uri)
        for route in routes:
            req.headers.add("Route", route)
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", self.local_header)
        req.headers.add("To", self.remote_header)
        req.headers.add("Call-ID", self.call_id)
        req.headers.add("CSeq", f"{cseq} {method}")
        return req

    def next_hop(self) -> SipUri:
        """Where a request of this dialog is sent: the first route, or the remote target."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0]).uri
        return self.remote_target
