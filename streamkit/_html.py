"""Small HTML tables for notebook reprs (``_repr_html_``), with every value escaped.

Model text, model names and server error messages are untrusted: JupyterLab trusts the HTML a
running session outputs, so an unescaped ``<img onerror=...>`` in a reply would run. Everything
that goes through here is escaped, so a repr cannot inject markup whatever its values hold.
No I/O, no notebook imports: plain strings in, one HTML string out.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

__all__ = [
    "MISSING",
    "MUTED_STYLE",
    "escape",
    "grid",
    "key_value_table",
    "ms",
    "one_line",
    "text_block",
    "truncate",
    "usd",
    "wrap",
]

MUTED_STYLE = "color:var(--jp-ui-font-color2,#616161)"
# JupyterLab right-aligns table cells; labels and text read better on the left.
_LEFT = "text-align:left"
_RIGHT = "text-align:right"
_PRE = (
    "white-space:pre-wrap;word-break:normal;overflow-wrap:break-word;margin:0.4em 0 0 0;"
    "max-height:16em;overflow-y:auto"
)
MISSING = "—"
"""What a table shows for an undefined value (no TTFT yet, no usage reported)."""


def escape(value: object) -> str:
    """``str(value)`` escaped for HTML text and attribute values (``None`` shows as a dash)."""
    return html.escape(MISSING if value is None else str(value), quote=True)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def one_line(text: str, limit: int) -> str:
    """``text`` with every run of whitespace (newlines too) as one space, then truncated."""
    return truncate(" ".join(text.split()), limit)


def ms(seconds: float | None, digits: int = 1) -> str:
    """Seconds as milliseconds (``85.2 ms``), or a dash when undefined."""
    return MISSING if seconds is None else f"{seconds * 1000:.{digits}f} ms"


def usd(amount: float | None) -> str:
    """USD with six decimals (a request often costs a fraction of a cent), or a dash."""
    return MISSING if amount is None else f"${amount:.6f}"


def _title(title: str, note: str | None) -> str:
    extra = f' <span style="{MUTED_STYLE}">{escape(note)}</span>' if note else ""
    return f'<caption style="{_LEFT}"><b>{escape(title)}</b>{extra}</caption>'


def key_value_table(
    title: str, rows: Iterable[tuple[str, object]], *, note: str | None = None
) -> str:
    """A two-column table, one ``(label, value)`` per row; rows whose value is ``None`` are
    shown with a dash (leave them out to hide them).

    Args:
        title: the caption (e.g. the class name).
        rows: labels and values; both are escaped.
        note: a muted remark after the title (e.g. the status).
    """
    body = "".join(
        f'<tr><th style="{_LEFT}">{escape(label)}</th><td style="{_LEFT}">{escape(value)}</td></tr>'
        for label, value in rows
    )
    return f"<table>{_title(title, note)}<tbody>{body}</tbody></table>"


def grid(
    title: str,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    note: str | None = None,
    footer: Sequence[object] | None = None,
    align: str | None = None,
) -> str:
    """A table with a header row. Every cell is escaped.

    Args:
        title: the caption.
        header: the column names.
        rows: one sequence of cells per row.
        note: a muted remark after the title.
        footer: an optional last row in bold (e.g. totals).
        align: one letter per column, ``l`` (text) or ``r`` (numbers); default: the first
            column left (the label), the rest right.
    """
    letters = align or "l" + "r" * (len(header) - 1)
    styles = [_LEFT if a == "l" else _RIGHT for a in letters]

    def row(cells: Sequence[object], tag: str) -> str:
        return (
            "<tr>"
            + "".join(
                f'<{tag} style="{styles[i] if i < len(styles) else _RIGHT}">{escape(c)}</{tag}>'
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )

    head = row(header, "th")
    body = "".join(row(cells, "td") for cells in rows)
    foot = f"<tfoot>{row(footer, 'th')}</tfoot>" if footer is not None else ""
    return f"<table>{_title(title, note)}<thead>{head}</thead><tbody>{body}</tbody>{foot}</table>"


def text_block(text: str, limit: int) -> str:
    """``text`` in a wrapping ``<pre>``, escaped, cut to ``limit`` characters with a note
    saying how much was left out."""
    shown = truncate(text, limit)
    note = ""
    if len(text) > limit:
        note = (
            f'<div style="{MUTED_STYLE}">showing {len(shown) - 1:,} of {len(text):,} characters'
            "</div>"
        )
    return f'<pre style="{_PRE}">{escape(shown)}</pre>{note}'


def wrap(*parts: str) -> str:
    """The parts in one ``<div class="streamkit-repr">`` (a hook for styling and tests)."""
    return '<div class="streamkit-repr">' + "".join(parts) + "</div>"
