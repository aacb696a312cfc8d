"""The hostile datagram mix of ``scripts/bench --suite hostile``, and the flooder that sends it.

One fixed mix, the same for the door and for baresip, cycled in this order (:data:`KINDS`):
garbage bytes, a truncated INVITE, an oversized one (about 64 KB of SDP), one with 10,000
headers, ``²`` (a digit to ``str.isdigit``, not to ``int``) as the CSeq number, the
Content-Length and a Contact port, a forged INVITE whose From looks allowed (extension 620 at
the wrong host), a stray 200 OK, a BYE and a CANCEL for dialogs that do not exist, a scanner's
OPTIONS, and header lines without a colon. Every request goes to the target's SIP URI as the door
would be called (``sip:door@HOST:PORT``), so baresip, which knows no user ``door``, refuses the
INVITEs instead of ringing. Each datagram carries a fresh number in its branch, Call-ID and
tags: nothing is a retransmission of an earlier one.

The flooder runs in its own process (so that its CPU is not the measured process's), from one or
more source addresses (127.0.0.2, a stranger on the LAN; 127.0.0.1, the PBX's own address), whole
mix cycles alternating between them, in one of two modes:

* ``--rate R --seconds S``: R datagrams a second for S seconds, sent in 1 ms batches (the load
  of the pacing figure);
* ``--count N --follow-receiver``: N datagrams, a batch of at most 64 KB each time the
  receiver's socket queue (``/proc/net/udp``) is empty, so that the receiver never drops one
  and always has work (the CPU per datagram figure); with ``--kinds`` only some kinds of the
  mix, and with ``--until-cpu PID:S`` only until the receiver has used S more CPU seconds (so
  that a cheap kind gets enough datagrams to be measured and a costly one does not take
  minutes).

It prints ``{"go": true}`` when it starts sending and, once the receiver has read the last
datagram, one JSON line with what it sent, the receiver's kernel drops (``/proc/net/udp``) and
what came back (answers and their bytes: how much a refusal amplifies). Run as
``python scripts/hostile_mix.py HOST PORT ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Where a datagram's own number goes (branch, Call-ID, tags): eight digits, so that every
#: datagram of one kind has the same length and Content-Length stays right.
TOKEN = b"\x00#\x00"
#: The largest UDP payload over IPv4.
MAX_UDP = 65507

#: A receiver that has not read its queue for this long is reported as stalled.
STALL_S = 20.0

STRANGER = "127.0.0.2"
PBX = "127.0.0.1"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str = "door"


@dataclass(frozen=True)
class Source:
    host: str
    port: int


def _sdp(host: str, pad: int = 0) -> str:
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
    ]
    if pad:
        lines += ["a=x-pad:" + "p" * 1000] * (pad // 1012)
    return "\r\n".join(lines) + "\r\n"


def _request(
    method: str,
    t: Target,
    s: Source,
    *,
    from_: str = "<sip:666@{host}>",
    to_tag: bool = False,
    cseq: str = "1",
    contact: str = "<sip:620@{host}:{port}>",
    extra: str = "",
    body: str = "",
    length: str | None = None,
) -> str:
    tok = TOKEN.decode("latin-1")
    fmt = {"host": s.host, "port": s.port}
    lines = [
        f"{method} sip:{t.user}@{t.host}:{t.port} SIP/2.0",
        f"Via: SIP/2.0/UDP {s.host}:{s.port};rport;branch=z9hG4bK-h{tok}",
        "Max-Forwards: 70",
        f"From: {from_.format(**fmt)};tag=f{tok}",
        f"To: <sip:{t.user}@{t.host}>" + (f";tag=t{tok}" if to_tag else ""),
        f"Call-ID: h{tok}@{s.host}",
        f"CSeq: {cseq} {method}",
        f"Contact: {contact.format(**fmt)}",
        "User-Agent: hostile-mix",
    ]
    if extra:
        lines.append(extra.rstrip("\r\n"))
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def _garbage(t: Target, s: Source) -> bytes:
    noise = random.Random(10).randbytes(1200)
    return noise[:600] + TOKEN + noise[600:]


def _truncated(t: Target, s: Source) -> bytes:
    # Cut in the middle of the SDP, as a datagram cut short on the way would be: the
    # Content-Length promises more than came.
    whole = _request("INVITE", t, s, body=_sdp(s.host))
    return whole[: whole.index("m=audio") + 10].encode("latin-1")


def _oversized(t: Target, s: Source) -> bytes:
    return _request("INVITE", t, s, body=_sdp(s.host, pad=63_000)).encode("latin-1")


def _many_headers(t: Target, s: Source) -> bytes:
    return _request("INVITE", t, s, extra="X: a\r\n" * 10_000).encode("latin-1")


def _cseq_superscript(t: Target, s: Source) -> bytes:
    return _request("INVITE", t, s, cseq="\u00b2", body=_sdp(s.host)).encode()


def _length_superscript(t: Target, s: Source) -> bytes:
    return _request("INVITE", t, s, body=_sdp(s.host), length="\u00b2").encode()


def _contact_superscript(t: Target, s: Source) -> bytes:
    return _request("INVITE", t, s, contact="<sip:620@{host}:\u00b2>", body=_sdp(s.host)).encode()


def _forged_invite(t: Target, s: Source) -> bytes:
    # Extension 620 is allowed at the PBX (sip:620@127.0.0.1); this one only looks like it.
    forged = '"620" <sip:620@evil.example>'
    return _request("INVITE", t, s, from_=forged, body=_sdp(s.host)).encode("latin-1")


def _stray_response(t: Target, s: Source) -> bytes:
    tok = TOKEN.decode("latin-1")
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP {t.host}:{t.port};branch=z9hG4bK-s{tok}\r\n"
        f"From: <sip:{t.user}@{t.host}>;tag=a{tok}\r\n"
        f"To: <sip:621@{s.host}>;tag=b{tok}\r\n"
        f"Call-ID: s{tok}@{t.host}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:621@{s.host}:{s.port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode("latin-1")


def _bye_no_dialog(t: Target, s: Source) -> bytes:
    return _request("BYE", t, s, to_tag=True, cseq="2").encode("latin-1")


def _cancel_no_call(t: Target, s: Source) -> bytes:
    return _request("CANCEL", t, s).encode("latin-1")


def _scanner_options(t: Target, s: Source) -> bytes:
    extra = "Accept: application/sdp\r\nUser-Agent: friendly-scanner"
    return _request("OPTIONS", t, s, extra=extra).encode("latin-1")


def _near_cap_headers(t: Target, s: Source) -> bytes:
    # What a capped parser still has to read: 100 long headers, about 10 KB.
    extra = "".join(f"X-Long-{i}: {'v' * 90}\r\n" for i in range(100))
    return _request("INVITE", t, s, extra=extra, body=_sdp(s.host)).encode("latin-1")


def _many_vias(t: Target, s: Source) -> bytes:
    # A response copies every Via: the more there are, the more a refusal amplifies.
    # Loopback addresses only, even here: nothing may ever be answered off this machine.
    hops = (
        f"SIP/2.0/UDP 127.1.{i // 250}.{i % 250 + 1}:5060;branch=z9hG4bK{i}" for i in range(300)
    )
    vias = ",".join(hops)
    return _request("INVITE", t, s, extra=f"Via: {vias}", body=_sdp(s.host)).encode("latin-1")


def _bad_header_lines(t: Target, s: Source) -> bytes:
    extra = "this line has no colon\r\nX-Fine: 1\r\n: empty name"
    return _request("INVITE", t, s, extra=extra, body=_sdp(s.host)).encode("latin-1")


#: The mix, in the order it is cycled: (name, builder of one datagram's template).
KINDS: tuple[tuple[str, Callable[[Target, Source], bytes]], ...] = (
    ("garbage", _garbage),
    ("truncated_invite", _truncated),
    ("oversized_invite", _oversized),
    ("many_headers", _many_headers),
    ("near_cap_headers", _near_cap_headers),
    ("many_vias", _many_vias),
    ("cseq_superscript", _cseq_superscript),
    ("content_length_superscript", _length_superscript),
    ("contact_port_superscript", _contact_superscript),
    ("forged_invite_allowed_looking_from", _forged_invite),
    ("stray_response", _stray_response),
    ("bye_without_dialog", _bye_no_dialog),
    ("cancel_without_call", _cancel_no_call),
    ("scanner_options", _scanner_options),
    ("header_lines_without_colon", _bad_header_lines),
)


class Mix:
    """The datagrams of the mix for one target, from each source: ``datagram(n)`` is the
    n-th one sent, with its source's index (whole cycles alternate between the sources)."""

    def __init__(
        self, target: Target, sources: list[Source], kinds: list[str] | None = None
    ) -> None:
        chosen = [(n, b) for n, b in KINDS if kinds is None or n in kinds]
        if not chosen:
            raise ValueError(f"no such kind: {kinds}")
        self.sources = sources
        self.names = [name for name, _ in chosen]
        self._parts = [[build(target, s).split(TOKEN) for _, build in chosen] for s in sources]
        self._sizes = [
            [sum(len(p) for p in parts) + 8 * (len(parts) - 1) for parts in per_source]
            for per_source in self._parts
        ]
        for per_source in self._sizes:
            for name, size in zip(self.names, per_source, strict=True):
                if size > MAX_UDP:
                    raise ValueError(f"{name}: {size} bytes do not fit a UDP datagram")

    def datagram(self, n: int) -> tuple[int, int, bytes]:
        """(kind index, source index, bytes) of the n-th datagram."""
        kinds = len(self.names)
        kind = n % kinds
        source = (n // kinds) % len(self.sources)
        return kind, source, (b"%08d" % (n % 100_000_000)).join(self._parts[source][kind])

    def size(self, n: int) -> int:
        """The length of the n-th datagram (each kind's is fixed), without building it."""
        kinds = len(self.names)
        return self._sizes[(n // kinds) % len(self.sources)][n % kinds]


def receiver_queue(port: int, host: str = "127.0.0.1") -> tuple[int, int] | None:
    """(bytes queued, datagrams dropped so far) of the UDP socket bound to ``host:port``, from
    ``/proc/net/udp``; None when nothing is bound there."""
    packed = socket.inet_aton(host)[::-1].hex().upper()  # little-endian, as the kernel prints
    wanted = f"{packed}:{port:04X}"
    with Path("/proc/net/udp").open() as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == wanted:
                return int(fields[4].split(":")[1], 16), int(fields[-1])
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process and all its threads (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(
    target: Target,
    source_hosts: list[str],
    *,
    count: int | None = None,
    rate: float | None = None,
    seconds: float | None = None,
    follow_receiver: bool = False,
    kinds: list[str] | None = None,
    until_cpu: tuple[int, float] | None = None,
    on_go: Callable[[], None] = lambda: None,
) -> dict[str, object]:
    """Send the mix (or only ``kinds`` of it) to ``target``; returns what was sent and the
    receiver's drops meanwhile. ``until_cpu`` (pid, seconds): stop early once that process
    has used that much more CPU."""
    socks = []
    for host in source_hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setblocking(False)
        socks.append(sock)
    mix = Mix(target, [Source(*s.getsockname()) for s in socks], kinds)
    cpu_limit = None if until_cpu is None else cpu_seconds(until_cpu[0]) + until_cpu[1]
    dest = (target.host, target.port)
    queue0 = receiver_queue(target.port, target.host)
    by_kind = [0] * len(mix.names)
    by_source = [0] * len(socks)
    sent = sent_bytes = errors = 0
    answers = [0] * len(socks)
    answer_bytes = [0] * len(socks)
    buf = bytearray(65536)

    def read_answers() -> None:
        """What the target sent back (refusals, 200s to OPTIONS): the amplification."""
        for i, sock in enumerate(socks):
            while True:
                try:
                    n = sock.recv_into(buf)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                answers[i] += 1
                answer_bytes[i] += n

    limit = count if count is not None else sys.maxsize
    end = None if seconds is None else time.monotonic() + seconds

    def send_one() -> None:
        nonlocal sent, sent_bytes, errors
        kind, source, data = mix.datagram(sent)
        try:
            socks[source].sendto(data, dest)
        except OSError:
            errors += 1
        sent += 1
        sent_bytes += len(data)
        by_kind[kind] += 1
        by_source[source] += 1

    on_go()
    start = progress = time.monotonic()
    stalled = False
    while sent < limit:
        now = time.monotonic()
        if end is not None and now >= end:
            break
        if follow_receiver:
            queued = receiver_queue(target.port, target.host)
            if queued is None:
                raise RuntimeError(f"nothing listens on {target.host}:{target.port}")
            if queued[0] > 0:
                if now - progress > STALL_S:
                    stalled = True  # the receiver reads nothing: report it, do not hang
                    break
                read_answers()
                time.sleep(0.0001)
                continue
            progress = now
            if until_cpu and cpu_limit and cpu_seconds(until_cpu[0]) >= cpu_limit:
                break
            batch = 0
            while sent < limit and (batch == 0 or batch + mix.size(sent) <= 65536):
                batch += mix.size(sent)
                send_one()
        elif rate is not None:
            due = min(limit, int((now - start) * rate) + 1)
            while sent < due:
                send_one()
            read_answers()
            time.sleep(0.0005)
        else:
            send_one()
    elapsed = time.monotonic() - start
    # Until the receiver has read the last datagram, and a little longer for its answer.
    settle = time.monotonic() + STALL_S
    while (queued := receiver_queue(target.port, target.host)) and queued[0] > 0:
        if time.monotonic() > settle:
            break
        read_answers()
        time.sleep(0.0002)
    quiet = time.monotonic() + 0.1
    while time.monotonic() < quiet:
        read_answers()
        time.sleep(0.002)
    queue1 = receiver_queue(target.port, target.host)
    for sock in socks:
        sock.close()
    drops = None if queue0 is None or queue1 is None else queue1[1] - queue0[1]
    return {
        "sent": sent,
        "send_errors": errors,
        "bytes": sent_bytes,
        "seconds": round(elapsed, 3),
        "rate_per_s": round(sent / elapsed, 1) if elapsed > 0 else None,
        "receiver_drops": drops,
        "receiver_stalled": stalled,
        "answers": sum(answers),
        "answer_bytes": sum(answer_bytes),
        "by_kind": dict(zip(mix.names, by_kind, strict=True)),
        "by_source": dict(zip(source_hosts, by_source, strict=True)),
        "answers_by_source": dict(zip(source_hosts, answers, strict=True)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--user", default="door", help="the user part of the target's URI")
    parser.add_argument("--sources", default=f"{STRANGER},{PBX}", help="comma-separated")
    parser.add_argument("--count", type=int, help="datagrams to send")
    parser.add_argument("--rate", type=float, help="datagrams a second")
    parser.add_argument("--seconds", type=float, help="how long to send")
    parser.add_argument("--follow-receiver", action="store_true", help="never overrun it")
    parser.add_argument("--kinds", help="only these kinds of the mix, comma-separated")
    parser.add_argument(
        "--until-cpu", metavar="PID:SECONDS", help="stop once PID has used SECONDS more CPU"
    )
    args = parser.parse_args(argv)
    if args.count is None and args.seconds is None:
        parser.error("give --count or --seconds")
    pid, _, secs = (args.until_cpu or "").partition(":")

    def go() -> None:
        print(json.dumps({"go": True}), flush=True)

    result = flood(
        Target(args.host, args.port, args.user),
        args.sources.split(","),
        count=args.count,
        rate=args.rate,
        seconds=args.seconds,
        follow_receiver=args.follow_receiver,
        kinds=args.kinds.split(",") if args.kinds else None,
        until_cpu=(int(pid), float(secs)) if args.until_cpu else None,
        on_go=go,
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
