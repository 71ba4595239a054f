"""Committed notebooks are clean: no widget state, small outputs, no secrets or machine paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
SECRET = re.compile(r"sk-[A-Za-z0-9_-]{16,}|Bearer [A-Za-z0-9._-]{8,}")
MACHINE_PATH = re.compile(r"(/(home|root|tmp|work|Users)/[^\s\"']+)|([A-Z]:\\\\Users)")


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    assert "widgets" not in nb.get("metadata", {}), "strip the widget state before committing"
    assert len(text) < 100_000, f"{path.name} is {len(text)} bytes: strip large outputs"
    assert not SECRET.search(text), "something that looks like an API key is stored"
    assert not MACHINE_PATH.search(text), "a path of this machine is stored"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            size = len(json.dumps(cell.get("outputs", [])))
            assert size < 20_000, f"a cell stores {size} bytes of output"
