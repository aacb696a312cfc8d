"""The phone keeps what the demo, the doctor and the bench read of past calls, but not for ever
(review finding: one MediaStats per answered call, kept for the daemon's lifetime)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from intercom.config import parse_config
from intercom.media.session import MediaStats
from intercom.phone import MEDIA_STATS_KEPT, Phone
from intercom.sip.events import CallEnded


class _Media:
    def __init__(self) -> None:
        self.stats = MediaStats()

    async def stop(self) -> None:
        return None


def test_the_media_figures_of_past_calls_are_bounded() -> None:
    config = parse_config(
        {"sip": {"server": "127.0.0.1", "username": "door", "register": False}},
        base_dir=Path.cwd(),
        env={},
    )

    async def scenario() -> None:
        phone = Phone(config)
        for handle in range(1, 1001):
            phone.media[handle] = _Media()  # type: ignore[assignment]
            phone._on_event(CallEnded(handle, "remote_hangup"))
        await asyncio.sleep(0)
        assert len(phone.media_stats) == MEDIA_STATS_KEPT
        assert max(phone.media_stats) == 1000  # the newest are the ones kept
        assert phone.media == {}

    asyncio.run(scenario())
