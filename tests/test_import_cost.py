"""``import streamkit`` stays cheap: the heavy dependencies load on first use of a name.

A module list, not a stopwatch: the clock is noisy on a shared machine, a module that loads
is not.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "openai",
    "httpx2",
    "uvicorn",
    "websockets",
    "pandas",
    "numpy",
    "plotly",
    "ipywidgets",
    "anywidget",
    "IPython",
    "tqdm",
    "genai_prices",
    "streamkit.server",
    "streamkit.client",
]


def loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_streamkit_loads_nothing_heavy() -> None:
    modules = loaded_after("import streamkit")
    assert not {m for m in HEAVY if m in modules}
    assert len(modules) < 150, len(modules)  # a bare interpreter has ~60 here


def test_errors_and_events_need_no_import_of_the_rest() -> None:
    modules = loaded_after("from streamkit import StreamkitError, TokenDelta, UsageError")
    assert not {m for m in HEAVY if m in modules}


def test_a_name_loads_its_module_on_first_use() -> None:
    modules = loaded_after("import streamkit\nstreamkit.RetryPolicy")
    assert "streamkit.retry" in modules
    assert "uvicorn" not in modules and "pandas" not in modules
    assert "plotly" not in loaded_after("import streamkit\nstreamkit.Client")
