"""Who may talk to the door, decided by where a datagram came from, never by what it says.

Every address on a home LAN can reach the door, and a SIP message can claim any From, Via or
Contact. What a stranger cannot forge on a switched LAN is the source address its datagrams
arrive from, and what it cannot guess is the Call-ID, tags and branches the door drew at random.
So:

* With ``sip.register: true`` the door is *closed*: a request outside a dialog (INVITE, OPTIONS,
  MESSAGE...) is taken only from the PBX's addresses (every address its name resolves to) and the
  ones in ``sip.trusted_sources``. Anything else is dropped without an answer and counted: no
  403 to amplify, no state to hold, nothing that tells a scanner a SIP device is here.
* Inside a dialog, the other party's addresses (the first route or the remote target, and where
  the dialog's INVITE came from) are peers too, for as long as the dialog lives.
* A digest challenge is answered only for a request that went to a trusted address, and only
  when its realm is the registrar's: answering anyone else's 401 would hand over a hash of the
  SIP password for an offline dictionary attack.
* An ``incoming.allow`` entry without a host matches only a call that came from a trusted address
  (through the PBX): ``From: sip:620@evil`` sent straight to the door is not extension 620.

With ``register: false`` (a door that calls phones directly) requests are taken from anyone, but
the last two rules still hold. This module is pure data; the transport resolves the names and
hands the addresses in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass
class Trust:
    """The trusted addresses and names, and whether strangers are shut out."""

    #: Out-of-dialog requests only from trusted addresses (``sip.register: true``).
    closed: bool
    #: Host names or addresses as configured: the PBX (``sip.server``) and ``trusted_sources``.
    names: frozenset[str] = frozenset()
    #: The addresses those resolve to (IP literals are their own address).
    addresses: frozenset[str] = field(default=frozenset())
    _by_name: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.names = frozenset(n.strip("[]").lower() for n in self.names)
        self._literals = frozenset(n for n in self.names if is_ip(n)) | self.addresses
        self.addresses = self._literals

    def resolved(self, name: str, addresses: Iterable[str]) -> None:
        """What a configured name resolves to now (the transport calls this on each lookup);
        an address the name no longer resolves to is no longer trusted."""
        name = name.strip("[]").lower()
        if name not in self.names:
            return
        self._by_name[name] = frozenset(addresses)
        self.addresses = self._literals.union(*self._by_name.values())

    def trusts(self, host: str) -> bool:
        """Whether ``host`` (an address a datagram came from or goes to) is the PBX's."""
        host = host.strip("[]").lower()
        return host in self.addresses or host in self.names
