"""Committed notebooks are clean: no widget state, small outputs, no secrets or machine paths.

Only cells marked ``# NBVAL_CHECK_OUTPUT`` store output: nbval compares those with a fresh run
(even under ``--nbval-lax``), so they must carry what a run prints, and an execution count (nbval
refuses outputs without one); the generators in ``tools/`` put both there. Every other cell stays
empty, so a notebook saved after running it in JupyterLab shows up here instead of in a commit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
SECRET = re.compile(r"sk-[A-Za-z0-9_-]{16,}|Bearer [A-Za-z0-9._-]{8,}")
MACHINE_PATH = re.compile(r"(/(home|root|tmp|work|Users)/[^\s\"']+)|([A-Z]:\\\\Users)")
PORT = re.compile(r"(localhost|127\.0\.0\.1|\[::1\]):\d+")
CHECK_OUTPUT = "# NBVAL_CHECK_OUTPUT"


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_store_output(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        outputs = cell.get("outputs", [])
        first_line = source.splitlines()[0] if source else ""
        if not source.startswith(CHECK_OUTPUT):
            assert not outputs, f"only {CHECK_OUTPUT} cells store output: {first_line}"
            assert cell["execution_count"] is None, f"an execution count is stored: {first_line}"
            continue
        # nbval would compare the run with nothing, or refuse the outputs: regenerate instead
        what = source.splitlines()[1]
        assert outputs, f"a {CHECK_OUTPUT} cell stores no output: {what}"
        assert isinstance(cell["execution_count"], int), f"no execution count stored: {what}"
        stored = json.dumps(outputs)
        assert not PORT.search(stored), f"a port is stored (it changes every run): {stored}"
        for output in outputs:
            assert output["output_type"] != "error", f"a stored error: {stored[:200]}"
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {}), (
                "a widget's output is stored: its state is not, so it would show nothing"
            )
