"""Which kind of view fits where the code runs: a widget in a live Jupyter kernel, else text."""

from __future__ import annotations

import os
import sys
from typing import Literal

from ..errors import UsageError

__all__ = ["ENV_VAR", "ViewKind", "view_kind"]

ViewKind = Literal["widget", "console"]

ENV_VAR = "STREAMKIT_VIEW"
"""The environment variable that overrides the automatic choice of view."""


def _in_kernel() -> bool:
    # Only look if IPython is already imported: a plain script never is, and importing IPython
    # just to find that out costs ~80 ms.
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    # A ZMQInteractiveShell has a kernel; TerminalInteractiveShell has none and cannot show widgets.
    return getattr(shell, "kernel", None) is not None


def _widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def view_kind() -> ViewKind:
    """Which view fits here: ``"widget"`` in a Jupyter kernel with ipywidgets, else ``"console"``.

    ``STREAMKIT_VIEW=widget|console|auto`` (any case) overrides the choice; unset or empty means
    ``auto``.

    Raises:
        UsageError: ``STREAMKIT_VIEW`` holds anything else.
    """
    raw = os.environ.get(ENV_VAR, "")
    setting = raw.strip().lower() or "auto"
    if setting == "widget":
        return "widget"
    if setting == "console":
        return "console"
    if setting != "auto":
        raise UsageError(
            f"{ENV_VAR}={raw!r} is not a valid view: set it to widget, console or auto "
            f"(or unset it for auto)"
        )
    return "widget" if _in_kernel() and _widgets_available() else "console"
