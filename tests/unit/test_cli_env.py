"""What the command line sets up before any GPIO is touched."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from intercom import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "intercom.example.yaml"


def test_lgpio_gets_a_writable_directory_when_none_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sudo -u pi-intercom intercom doctor` from a home directory: lgpio must not try to make its
    pipes there (the service user cannot write it), so LG_WD points at the temp directory."""
    monkeypatch.delenv("LG_WD", raising=False)
    assert cli.main(["check-config", "-c", str(EXAMPLE)]) == 0
    assert os.environ["LG_WD"] == tempfile.gettempdir()


def test_an_lg_wd_already_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_WD", "/var/lib/pi-intercom")  # what the systemd unit sets
    cli.main(["check-config", "-c", str(EXAMPLE)])
    assert os.environ["LG_WD"] == "/var/lib/pi-intercom"
