"""Views: where a stream is shown, chosen like ``tqdm.auto`` (a widget in Jupyter, text elsewhere).

``view_kind()`` decides, and ``STREAMKIT_VIEW`` overrides it: ``widget``, ``console`` or ``auto``
(the default). ``auto`` picks the widget only inside an IPython *kernel* (a notebook or JupyterLab
console, where a frontend can render widgets) and plain text everywhere else: terminals, pipes, CI
logs, and IPython in a terminal.

:class:`WidgetView` is imported on first use (as are :class:`DeltaView`, :func:`delta_view` and
:class:`ControlsPanel`), so scripts and the command line never pay for importing ipywidgets.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Literal

from ..errors import UsageError
from ._base import BufferedView, View
from .console import ConsoleView

if TYPE_CHECKING:
    from .controls import ControlsPanel
    from .delta import DeltaView, delta_view
    from .widget import WidgetView

__all__ = [
    "BufferedView",
    "ConsoleView",
    "ControlsPanel",
    "DeltaView",
    "View",
    "WidgetView",
    "auto_view",
    "delta_view",
    "view_kind",
]

ViewKind = Literal["widget", "console"]

ENV_VAR = "STREAMKIT_VIEW"
"""The environment variable that overrides the automatic choice of view."""


def __getattr__(name: str) -> object:
    # PEP 562: import the widget module (and ipywidgets with it) only when someone asks for it.
    if name == "WidgetView":
        from .widget import WidgetView

        return WidgetView
    if name in ("DeltaView", "delta_view"):
        from . import delta

        return getattr(delta, name)
    if name == "ControlsPanel":
        from .controls import ControlsPanel

        return ControlsPanel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def auto_view(*, max_tokens: int = 4, max_delay: float = 0.05) -> View:
    """A new view of the kind :func:`view_kind` picks.

    Args:
        max_tokens: update the screen after this many tokens are waiting.
        max_delay: update the screen once the first waiting token has waited this long (seconds).

    Raises:
        UsageError: ``STREAMKIT_VIEW`` is invalid, or a setting is out of range.
    """
    if view_kind() == "widget":
        from .widget import WidgetView

        return WidgetView(max_tokens=max_tokens, max_delay=max_delay)
    return ConsoleView(max_tokens=max_tokens, max_delay=max_delay)
