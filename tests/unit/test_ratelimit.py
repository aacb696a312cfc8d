import logging

import pytest

from intercom.ratelimit import LogLimiter


def test_one_line_per_kind_per_interval_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="t")
    limits = LogLimiter(logging.getLogger("t"), 60.0)
    for i in range(1000):  # a flood: one datagram every 10 ms
        limits.warning("malformed", i * 0.01, "dropped %s", i)
    limits.warning("other", 1.0, "another kind")
    limits.warning("malformed", 61.0, "dropped %s", "late")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dropped 0",
        "another kind",
        "dropped late (and 999 more like it in the last 60 s)",
    ]
    assert limits.held_back == 999
