"""Free loopback ports for the test peers.

Every peer (Kamailio, baresip, linphonec) listens on 127.0.0.1 only and on a port nobody else holds,
so that tests never collide with a real PBX on 5060 or with each other when run in parallel.
"""

from __future__ import annotations

import contextlib
import socket

LOOPBACK = "127.0.0.1"

_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    """Tell whether both a UDP and a TCP socket can be bound to `port` on loopback right now."""
    with contextlib.ExitStack() as stack:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
            if kind == socket.SOCK_STREAM:
                # The peer itself will set SO_REUSEADDR; mirror it so that a TIME_WAIT leftover of
                # an earlier test does not make a perfectly usable port look busy.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def free_udp_tcp_port(*, with_next: bool = False) -> int:
    """Return a port on 127.0.0.1 that is free for both UDP and TCP.

    SIP peers listen on the same number for both transports, so a port free for only one of them
    is useless. The kernel picks a free UDP port; we then check that TCP can have it too. Ports
    already handed out in this process are skipped, because a peer may not have bound its port yet
    when the next one is asked for. ``with_next`` also wants the port above free: baresip puts
    its SIP/TLS listener there and gives up entirely when it cannot bind it.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        wanted = [port, port + 1] if with_next else [port]
        if any(p in _handed_out or p > 65535 for p in wanted):
            continue
        if all(_bindable(p) for p in wanted):
            _handed_out.update(wanted)
            return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
