"""``scripts/bench --suite hostile`` in miniature: every piece runs and its figures add up.

Not a timing test (speed is the benchmark's business): 600 datagrams, one rate, three calls,
so that a change that breaks the harness (the door process, the flooder, the baresip driving)
shows here and not only when someone runs the full suite. What is asserted is what the
figures must say whatever the machine's speed: a stranger gets no answer from the door (baresip
answers everybody), the kernel dropped nothing when the flooder followed the receiver, every
call was answered, and each figure is there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_hostile  # type: ignore[import-not-found]  # noqa: E402

from tests.peers.baresip import BARESIP  # noqa: E402
from tests.peers.fixtures import require_binaries  # noqa: E402
from tests.peers.kamailio import KAMAILIO, KAMCMD  # noqa: E402

pytestmark = pytest.mark.peers


def test_the_hostile_suite_in_miniature(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    require_binaries(KAMAILIO, KAMCMD, BARESIP)
    monkeypatch.setattr(bench_hostile, "IDLE_SAMPLE_S", 0.3)
    monkeypatch.setattr(bench_hostile, "QUIET_S", 0.2)
    result = bench_hostile.run(
        datagrams=600, calls=3, rates=[500], window=0.5, per_kind=0, progress=None, keep=tmp_path
    )
    door, baresip = result["pi_intercom"], result["baresip"]
    for side in (door, baresip):
        load = side["hostile_datagrams"]
        for source in ("stranger_127_0_0_2", "pbx_address_127_0_0_1"):
            assert load[source]["datagrams"] == 300
            assert load[source]["kernel_drops"] == 0
            assert load[source]["cpu_s_per_1000_datagrams"] >= 0
        assert load["rss_before_kib"] > 0 and load["rss_after_kib"] > 0
        pacing = side["pacing_under_flood"]
        assert [row["rate_per_s"] for row in pacing["by_rate"]] == [0, 500]
        assert all(row["gaps"] >= 15 for row in pacing["by_rate"])  # about 25 in 0.5 s
        calls = side["many_calls"]
        assert calls["outcomes"] == {"answered_then_local_hangup": 3}
        assert calls["rss_after_3_calls_kib"] > 0 and calls["rss_after_quiet_kib"] > 0
    # The door drops a stranger's datagrams unanswered and unread; baresip answers them.
    assert door["hostile_datagrams"]["stranger_127_0_0_2"]["answers"] == 0
    assert door["hostile_datagrams"]["sip_core_counters"]["untrusted"] >= 300
    assert door["hostile_datagrams"]["pbx_address_127_0_0_1"]["answers"] > 0
    assert baresip["hostile_datagrams"]["stranger_127_0_0_2"]["answers"] > 0
    assert door["many_calls"]["log_errors_written"] == 0
    assert (tmp_path / "door-calls" / "door.log").is_file()
    assert door["many_calls"]["sip_core_counters"]["calls"] == 0
