"""The progress bar of a load run: a ``tqdm`` widget in a notebook, text on a terminal."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["Progress", "progress_bar"]

Progress = bool | Literal["auto"]


def progress_bar(progress: Progress, total: int) -> Any:
    """A bar of ``total`` requests, or None when ``progress`` is False."""
    if progress is False:
        return None
    from ..render import view_kind

    options: dict[str, Any] = {"total": total, "unit": "req", "desc": "streamkit bench"}
    if view_kind() == "widget":
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**options)
    from tqdm import tqdm

    # "auto" on a terminal draws the bar; in a pipe or a CI log (stderr not a terminal) it stays
    # quiet, as tqdm does with disable=None.
    return tqdm(**options, disable=None if progress == "auto" else False, dynamic_ncols=True)
