"""The docs hold together: generated diagrams match the tables, links lead somewhere."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_states_md_is_generated_from_the_tables() -> None:
    spec = importlib.util.spec_from_file_location("draw_states", ROOT / "scripts/draw_states.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.render()
    assert "calling --> ringing : ringing" in text
    assert (ROOT / "docs/states.md").read_text() == text, "run scripts/draw_states.py"


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _docs() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *(ROOT / "hardware").glob("*.md"),
    ]


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_picture_exists(doc: Path) -> None:
    """A newcomer follows these links first; a moved file must not leave them dead."""
    for target in _LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"


def test_the_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "scripts/demo" in first_block and "scripts/test" in first_block
    for script in ("scripts/demo", "scripts/test"):
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"
