"""Building blocks of the gateway's HTML reports: one self-contained file, inline CSS and SVG.

No scripts and no external assets, so a report opens from disk, in a mail attachment or a CI
artifact viewer alike. Every function returns escaped HTML text; callers pass plain values and
the shared statistics (`gateway.stats`). The charts are in `gateway.render.charts`.

Example::

    html = page("Eval", "tagger-v1", [section("Mood", heading("confusion"), heatmap(matrix))])
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from gateway.stats import Confusion

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
margin:0;background:#f5f7fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
h3{font-size:14px;margin:16px 0 6px;color:#52606d}
section>h2:first-child{margin-top:0}
.sub{color:#52606d;margin-bottom:20px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:16px 20px;margin:16px 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{color:#52606d;font-weight:600}
td.cell{text-align:center;min-width:34px}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.muted{color:#9aa5b1}.bad{color:#dc2626}
.verdict{border-radius:8px;padding:16px 20px;margin:16px 0;color:#fff}
.verdict.pass{background:#047857}.verdict.fail{background:#b91c1c}
.verdict .word{font-size:52px;font-weight:800;letter-spacing:3px;line-height:1.1}
.verdict ul{margin:10px 0 0;padding-left:20px}.verdict li.no{font-weight:700}
table.texts td,table.texts th{white-space:pre-wrap;word-break:break-word;text-align:left;
vertical-align:top;max-width:460px}table.texts td{font:12px/1.4 ui-monospace,monospace}
svg text{font:12px system-ui,sans-serif;fill:#1f2933}
"""


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    """A whole HTML document."""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body><main><h1>{escape(title)}</h1>"
        f"<div class=sub>{escape(subtitle)}</div>{''.join(sections)}</main></body></html>\n"
    )


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def heading(text: str) -> str:
    return f"<h3>{escape(text)}</h3>"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], css_class: str | None = None
) -> str:
    """A table of plain values (escaped); `None` shows as a muted dash. `css_class="texts"`
    wraps long cells (answers side by side)."""
    head = "".join(f"<th>{escape(str(header))}</th>" for header in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>" for row in rows
    )
    opening = f"<table class={css_class}>" if css_class else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    return "<span class=muted>&ndash;</span>" if value is None else escape(str(value))


def heatmap(confusion: Confusion, corner: str = "gold \\ predicted") -> str:
    """A confusion matrix: rows gold, columns predicted; the diagonal green, the rest red."""
    columns = confusion.predicted
    peak = max((value for row in confusion.matrix for value in row), default=0) or 1
    head = f"<th>{escape(corner)}</th>" + "".join(f"<th>{escape(c)}</th>" for c in columns)
    lines = []
    for name, values in zip(confusion.labels, confusion.matrix, strict=True):
        cells = []
        for column, value in zip(columns, values, strict=True):
            hue = "5,150,105" if column == name else "220,38,38"
            alpha = 0.08 + 0.72 * value / peak if value else 0.0
            cells.append(
                f"<td class=cell style='background:rgba({hue},{alpha:.2f})'>{value or ''}</td>"
            )
        lines.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def verdict(passed: bool, headline: str, reasons: Sequence[str]) -> str:
    """A large PASS or FAIL banner with its reasons; lines starting "FAIL" in bold."""
    word = "PASS" if passed else "FAIL"
    items = "".join(
        f"<li class={'no' if reason.startswith('FAIL') else 'ok'}>{escape(reason)}</li>"
        for reason in reasons
    )
    return (
        f"<div class='verdict {word.lower()}'><div class=word>{word}</div>"
        f"<div>{escape(headline)}</div><ul>{items}</ul></div>"
    )
