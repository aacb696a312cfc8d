"""The hostile mix of ``scripts/bench --suite hostile`` is what it says, and its flooder sends it.

The benchmark's figures mean something only if each kind of datagram carries the fault it is
named for, if none of them is a call the door would take (a legitimate INVITE in the mix would
measure a call, not an attack), if nothing names an address off this machine, and if the flooder
really sends what it reports, never overrunning the receiver when told not to.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from intercom.errors import ProtocolError
from intercom.sip.message import SipRequest, SipResponse, parse_message

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import hostile_mix  # type: ignore[import-not-found]  # noqa: E402
from hostile_mix import KINDS, MAX_UDP, TOKEN, Mix, Source, Target  # noqa: E402

DOOR = Target("127.0.0.1", 5999)
SOURCES = [Source("127.0.0.2", 4000), Source("127.0.0.1", 4002)]


def datagrams(mix: Mix, cycles: int = 2) -> Iterator[tuple[str, int, bytes]]:
    for n in range(cycles * len(mix.names)):
        kind, source, data = mix.datagram(n)
        yield mix.names[kind], source, data


def by_kind(source: int = 1) -> dict[str, bytes]:
    mix = Mix(DOOR, SOURCES)
    return {name: data for name, s, data in datagrams(mix) if s == source}


def header(data: bytes, name: str) -> str:
    match = re.search(rb"\r\n" + name.encode() + rb": ([^\r]*)", data)
    assert match, f"no {name} header"
    return match.group(1).decode()


def test_each_kind_carries_its_fault() -> None:
    d = by_kind()
    assert set(d) == {name for name, _ in KINDS}
    assert header(d["cseq_superscript"], "CSeq").startswith("\u00b2 ")
    assert header(d["content_length_superscript"], "Content-Length") == "\u00b2"
    assert header(d["contact_port_superscript"], "Contact").endswith(":\u00b2>")
    assert d["many_headers"].count(b"\r\nX: a") == 10_000
    assert 60_000 < len(d["oversized_invite"]) <= MAX_UDP
    assert d["many_vias"].count(b";branch=") == 301  # its own Via, then 300 on one line
    head, body = d["truncated_invite"].split(b"\r\n\r\n", 1)
    assert int(header(head, "Content-Length")) > len(body)
    assert not d["garbage"].startswith((b"SIP/", b"INVITE"))
    assert b"no colon" in d["header_lines_without_colon"]


def test_the_well_formed_kinds_parse_so_they_reach_the_deep_code() -> None:
    d = by_kind()
    for name in (
        "forged_invite_allowed_looking_from",
        "bye_without_dialog",
        "cancel_without_call",
        "scanner_options",
    ):
        msg = parse_message(d[name])
        assert isinstance(msg, SipRequest), name
        assert msg.uri == "sip:door@127.0.0.1:5999"
    assert isinstance(parse_message(d["stray_response"]), SipResponse)
    for name in ("garbage", "truncated_invite", "content_length_superscript"):
        with pytest.raises(ProtocolError):
            parse_message(d[name])


def test_no_datagram_is_a_call_the_door_would_take() -> None:
    """The door allows sip:620@127.0.0.1 in the benchmark; only the forged INVITE names 620,
    at a host that is not the PBX's. Every other request comes from an unknown 666."""
    for name, _source, data in datagrams(Mix(DOOR, SOURCES)):
        if not data.startswith((b"INVITE", b"BYE", b"CANCEL", b"OPTIONS")):
            continue
        from_ = header(data, "From")
        if name == "forged_invite_allowed_looking_from":
            assert "sip:620@evil.example" in from_
        else:
            assert from_.startswith("<sip:666@"), (name, from_)


def test_every_address_is_on_loopback_and_every_datagram_is_new() -> None:
    seen = set()
    for name, _source, data in datagrams(Mix(DOOR, SOURCES), cycles=3):
        assert TOKEN not in data
        assert len(data) <= MAX_UDP
        for quad in re.findall(rb"(?<![\d.])(\d{1,3})\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])", data):
            assert quad == b"127", name
        if name != "garbage":
            assert data not in seen, name  # a new branch and Call-ID each time
        seen.add(data)


def test_whole_cycles_alternate_between_the_sources() -> None:
    mix = Mix(DOOR, SOURCES)
    kinds = len(mix.names)
    assert {mix.datagram(n)[1] for n in range(kinds)} == {0}
    assert {mix.datagram(n)[1] for n in range(kinds, 2 * kinds)} == {1}
    # and each source's datagrams carry its own address in the Via
    assert b"Via: SIP/2.0/UDP 127.0.0.2:4000" in mix.datagram(1)[2]
    assert b"Via: SIP/2.0/UDP 127.0.0.1:4002" in mix.datagram(kinds + 1)[2]
    assert mix.size(kinds + 3) == len(mix.datagram(kinds + 3)[2])


class Sink:
    """A receiver on loopback that reads in a thread and answers each datagram with 10 bytes."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[bytes, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.got.append((data, addr[0]))
            self.sock.sendto(b"answer....", addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def run_flooder(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/hostile_mix.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    lines = out.stdout.splitlines()
    assert json.loads(lines[0]) == {"go": True}
    return dict(json.loads(lines[-1]))


def test_the_flooder_never_overruns_a_receiver_it_follows() -> None:
    """300 datagrams (about 20 oversized ones among them) at a receiver with the default
    socket buffer: all arrive, from both sources, and the answers are counted."""
    sink = Sink()
    try:
        result = run_flooder("127.0.0.1", str(sink.port), "--count", "300", "--follow-receiver")
    finally:
        sink.close()
    assert result["sent"] == 300 and result["receiver_drops"] == 0
    assert len(sink.got) == 300
    assert {host for _data, host in sink.got} == {"127.0.0.1", "127.0.0.2"}
    assert result["answers"] == 300 and result["answer_bytes"] == 3000
    assert result["by_source"] == {"127.0.0.2": 150, "127.0.0.1": 150}  # 20 whole cycles


def test_the_flooder_keeps_its_rate_and_can_send_one_kind() -> None:
    sink = Sink()
    try:
        result = run_flooder(
            "127.0.0.1", str(sink.port), "--rate", "2000", "--seconds", "0.5",
            "--kinds", "stray_response", "--sources", "127.0.0.2",
        )  # fmt: skip
    finally:
        sink.close()
    assert 800 <= int(result["sent"]) <= 1100  # type: ignore[call-overload]
    assert result["by_kind"] == {"stray_response": result["sent"]}
    assert all(data.startswith(b"SIP/2.0 200 OK") for data, _host in sink.got)


def test_receiver_queue_reads_the_kernel_table() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert hostile_mix.receiver_queue(port) == (0, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"x" * 100, ("127.0.0.1", port))
        queued = hostile_mix.receiver_queue(port)
        assert queued is not None and queued[0] > 0
    assert hostile_mix.receiver_queue(port) is None
