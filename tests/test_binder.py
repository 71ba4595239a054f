"""Binder installs what the quick start installs, with the same bounds, and opens on the package.

``binder/environment.yml`` lists pyproject.toml's runtime dependencies plus its ``lab`` extra
(what ``scripts/quickstart.sh`` installs), and ``postBuild`` adds streamkit itself without
dependencies, so a requirement missing there, or a cap left behind, breaks Binder alone.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _split(requirement: str) -> tuple[str, str]:
    """A requirement string's name as written, and the rest without spaces."""
    compact = re.sub(r"\s+", "", requirement)
    name = re.split(r"[<>=!~\[;]", compact, maxsplit=1)[0]
    return name, compact[len(name) :]


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (PEP 503)."""
    return re.sub(r"[-_.]+", "-", _split(requirement)[0]).lower()


def specifiers(requirement: str) -> frozenset[str]:
    """The version clauses of a requirement, in any order: ``{">=0.2", "<0.3"}``."""
    return frozenset(clause for clause in _split(requirement)[1].split(",") if clause)


def expand(requirements: list[str], extras: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    """Name to version clauses, with self-references (``streamkit[a,b]``) replaced by the extras."""
    out: dict[str, frozenset[str]] = {}
    for requirement in requirements:
        if requirement_name(requirement) == "streamkit":
            named = re.search(r"\[([^\]]+)\]", requirement)
            assert named, f"{requirement!r} names no extra"
            for extra in named.group(1).split(","):
                out.update(expand(extras[extra.strip()], extras))
        else:
            out[requirement_name(requirement)] = specifiers(requirement)
    return out


def quick_start_requirements() -> dict[str, frozenset[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return expand([*project["dependencies"], "streamkit[lab]"], project["optional-dependencies"])


def binder_requirements() -> dict[str, frozenset[str]]:
    env = (ROOT / "binder" / "environment.yml").read_text()
    pip_section = env.split("- pip:", 1)[1]
    lines = re.findall(r"^\s+- (\S+)\s*$", pip_section, re.M)
    return {requirement_name(line): specifiers(line) for line in lines}


def test_expand_reads_bounds_and_extras() -> None:
    extras = {"x": ["a-b>=1", "streamkit[y]"], "y": ["C__d >= 0.2, <0.3"]}
    assert expand(["streamkit[x]", "E"], extras) == {
        "a-b": frozenset({">=1"}),
        "c-d": frozenset({">=0.2", "<0.3"}),
        "e": frozenset(),
    }


def test_environment_matches_the_quick_start() -> None:
    needed = quick_start_requirements()
    listed = binder_requirements()
    assert "jupyterlab" in needed and "openai" in needed  # the parsing found both halves
    missing = sorted(needed.keys() - listed.keys())
    extra = sorted(listed.keys() - needed.keys())
    assert not missing, f"binder/environment.yml misses {missing}"
    assert not extra, (
        f"binder/environment.yml lists {extra}, which the quick start does not install"
    )
    differ = {name: (sorted(listed[name]), sorted(needed[name])) for name in needed}
    differ = {name: pair for name, pair in differ.items() if pair[0] != pair[1]}
    assert not differ, f"bounds differ (binder, pyproject): {differ}"


def test_post_build_installs_the_package() -> None:
    post_build = (ROOT / "binder" / "postBuild").read_text()
    # environment.yml holds the dependencies; installing them again here would drift from it
    assert "pip install --no-deps -e ." in post_build
