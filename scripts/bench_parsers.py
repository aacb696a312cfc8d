"""CPU per datagram of the SIP parser, for a typical message, the worst case within the caps and
garbage (issue 10, finding 9).

Each figure is the median over ``repeats`` runs of the mean time of one datagram, in
microseconds of process CPU time. Two layers are measured:

* ``parse``: ``parse_message`` and then the reads every request costs the stack (Call-ID, CSeq,
  From, To, the Vias and the top one parsed, Contact, Route, Record-Route, Content-Type...).
* ``agent_pbx``: ``UserAgent.receive_datagram`` as the transport calls it, from the PBX's own
  address (a buggy PBX: the datagram is parsed, then refused or dropped as malformed), with a
  fresh branch each time; ``agent_stranger``: the same from a stranger's address, dropped before
  it is parsed.

There is no reference system to run next to it here (no other stack's parser can be called on its
own); ``--suite hostile`` gives the end-to-end figures next to baresip.

The worst case is built from the caps in ``intercom.sip.message`` (when they exist: on older
code it falls back to the 13,000 one-letter headers of the finding), so it follows the caps.

Run through ``scripts/bench --suite parsers``; it prints JSON.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intercom.errors import ProtocolError  # noqa: E402
from intercom.sip import message  # noqa: E402
from intercom.sip.address import NameAddr, Via  # noqa: E402
from tests.unit.sipnet import make_agent  # noqa: E402

DATA = ROOT / "tests" / "data" / "sip"
STRANGER = ("127.0.0.2", 5060)
PBX = ("127.0.0.1", 5060)


TYPICAL = (DATA / "kamailio_invite_from_baresip.sip").read_bytes()
BRANCH = b"branch=z9hG4bK56fb.a5dda76edc7a44d385c54f3816ffab40.0"


def _invite(extra: list[bytes]) -> bytes:
    """The typical INVITE with ``extra`` header lines after its request line."""
    start, rest = TYPICAL.split(b"\r\n", 1)
    return b"\r\n".join([start, *extra, rest])


def cases() -> dict[str, bytes]:
    limit = getattr(message, "MAX_MESSAGE", 65535)
    max_headers = getattr(message, "MAX_HEADERS", None)
    max_line = getattr(message, "MAX_HEADER_LINE", None)
    max_hops = getattr(message, "MAX_HOPS", None)
    out = {"typical_invite": TYPICAL}
    # The finding's datagram: one-letter headers up to 64 KB, parsed and looked up one by one.
    out["many_headers"] = _invite([b"a:b"] * ((65535 - len(TYPICAL)) // 5))
    if max_headers is not None and max_line is not None and max_hops is not None:
        # The worst accepted: every cap at its limit. Vias (split, the top one parsed) and
        # Record-Routes up to MAX_HOPS, then Supported lines (a list header, split on lookup)
        # filling the header count and the size, each as long as the budget allows.
        vias = [b"Via: SIP/2.0/UDP 10.0.0.%d;branch=z9hG4bK-%d" % (i, i) for i in range(14)]
        rr = [b"Record-Route: <sip:10.0.0.%d;lr>" % i for i in range(max_hops - 1)]
        base = len(_invite(vias + rr))
        room = max_headers - 14 - len(vias) - len(rr)
        per = min(max_line, (limit - base) // room - 2)
        supported = [b"Supported: " + (b"x," * ((per - 11) // 2)).rstrip(b",")] * room
        out["worst_within_caps"] = _invite(vias + rr + supported)
        assert len(out["worst_within_caps"]) <= limit, len(out["worst_within_caps"])
    rng = random.Random(10)
    out["garbage_random"] = bytes(rng.randrange(256) for _ in range(65535))
    out["garbage_lines"] = b"INVITE sip:x SIP/2.0\r\n" + b"X-Junk: \xff\r\n" * (65535 // 11)
    return {k: v[:65535] for k, v in out.items()}


def _reads(data: bytes) -> None:
    try:
        msg = message.parse_message(data)
        _ = (msg.call_id, msg.cseq, msg.from_, msg.to)
        vias = msg.vias
        Via.parse(vias[0])
        NameAddr.parse(msg.from_)
        NameAddr.parse(msg.to)
        for name in ("Contact", "Content-Type", "Max-Forwards", "Expires", "Require"):
            msg.headers.get(name)
        for name in ("Route", "Record-Route", "Supported", "Allow"):
            msg.headers.get_all(name)
    except ProtocolError:
        pass


def _timed(fn: Callable[[int], None], count: int, repeats: int) -> float:
    means = []
    for _ in range(repeats):
        start = time.process_time()
        for i in range(count):
            fn(i)
        means.append((time.process_time() - start) / count)
    return round(statistics.median(means) * 1e6, 1)


def run(repeats: int = 5) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, data in cases().items():
        count = 2000 if len(data) < 4000 else 50
        entry: dict[str, Any] = {"bytes": len(data), "lines": data.count(b"\n")}
        entry["parse_us"] = _timed(lambda _i, d=data: _reads(d), count, repeats)
        variants = [data.replace(BRANCH, b"branch=z9hG4bK-%06d" % i, 1) for i in range(count)]
        for key, source in (("agent_pbx_us", PBX), ("agent_stranger_us", STRANGER)):
            agent = make_agent(5062, 5060, domain="127.0.0.1")

            def feed(
                i: int, agent: Any = agent, variants: list[bytes] = variants, source: Any = source
            ) -> None:
                agent.receive_datagram(variants[i], source, 0.0)
                agent.datagrams_to_send()

            entry[key] = _timed(feed, count, 1)
        result[name] = entry
    return result


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)
    print(json.dumps({"cpu": os.cpu_count(), "per_datagram": run()}, indent=2))
