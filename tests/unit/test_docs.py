"""The generated state diagrams match the transition tables in the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_states_md_is_generated_from_the_tables() -> None:
    spec = importlib.util.spec_from_file_location("draw_states", ROOT / "scripts/draw_states.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.render()
    assert "calling --> ringing : ringing" in text
    assert (ROOT / "docs/states.md").read_text() == text, "run scripts/draw_states.py"
