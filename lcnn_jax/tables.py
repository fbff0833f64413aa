"""Plain-text and markdown rendering of row tables (CLI output, experiment reports)."""

from __future__ import annotations

from typing import Sequence


def _cells(rows: Sequence[Sequence[object]]) -> list[list[str]]:
    return [["" if c is None else str(c) for c in row] for row in rows]


def text_table(
    headers: Sequence[str] | None, rows: Sequence[Sequence[object]], right: Sequence[bool] | None = None
) -> str:
    """A fixed-width table (no header lines when `headers` is None); `right` columns are right-aligned."""
    body = _cells(rows)
    ncols = len(headers) if headers is not None else len(body[0])
    right = list(right) if right is not None else [False] * ncols
    widths = [max([len(headers[i]) if headers else 0] + [len(r[i]) for r in body]) for i in range(ncols)]

    def line(cells):
        return "  ".join(c.rjust(w) if rt else c.ljust(w) for c, w, rt in zip(cells, widths, right)).rstrip()

    head = [line(headers), "  ".join("-" * w for w in widths)] if headers is not None else []
    return "\n".join(head + [line(r) for r in body])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured markdown table."""
    right = list(right) if right is not None else [False] * len(headers)
    align = ["---:" if rt else "---" for rt in right]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in _cells(rows)]
    return "\n".join(lines)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table with escaped cells; the first column is left-aligned."""
    import html

    left = ' style="text-align:left"'

    def line(tag: str, row: Sequence[str], first_left: bool) -> str:
        return "<tr>" + "".join(f"<{tag}{left if i == 0 and first_left else ''}>{html.escape(c)}</{tag}>"
                                for i, c in enumerate(row)) + "</tr>"

    body = "".join(line("td", r, True) for r in _cells(rows))
    return f"<table>{line('th', [str(h) for h in headers], False)}{body}</table>"
