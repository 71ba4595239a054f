"""Binder's environment installs what pyproject.toml needs, and opens on the package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement_names(lines: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower() for line in lines}


def test_environment_lists_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = requirement_names(project["dependencies"])
    env = (ROOT / "binder" / "environment.yml").read_text()
    pip_lines = [m.group(1) for m in re.finditer(r"^\s+- ([A-Za-z0-9_.\-\[\]]+[^\n]*)$", env, re.M)]
    listed = requirement_names(pip_lines)
    assert needed <= listed, f"binder/environment.yml misses {sorted(needed - listed)}"


def test_post_build_installs_the_package() -> None:
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install" in post_build and " -e ." in post_build
