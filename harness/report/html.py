"""The report as one self-contained HTML page: inline CSS, figures as base64 data URIs.

No script, no font, no stylesheet and no image is fetched from anywhere: the page opens
offline and from a CI artifact exactly as it was written. Its only links are to anchors in
the page and to the public issues a corpus entry or known failure cites.
"""

from __future__ import annotations

import base64
import html
import re

from harness.numerics.statuses import TABLE as STATUS_TABLE
from harness.report.text import FIGURE_TITLES, FOLD, NUM, slug

_LONG_CELL = 62  # longer than any adapter id in backticks

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2em auto;
       max-width: 1600px; padding: 0 1em; color: #212121; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.86em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
td.long { overflow-wrap: anywhere; min-width: 18em; }
div.scroll { overflow-x: auto; }
th { background: #f5f5f5; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.num { text-align: right; }
p.toc { font-size: 0.9em; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.92em; }
pre { background: #f7f7f7; padding: 0.7em; white-space: pre-wrap; font-size: 0.85em; border: 1px solid #eee; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
figcaption { font-size: 0.85em; color: #555; }
details summary { cursor: pointer; color: #1565c0; margin-top: 0.2em; }
""" + "\n".join(
    f"td.s-{s.name} {{ background: {s.colour}; color: {'#fff' if s.dark else '#000'}; }}" for s in STATUS_TABLE.values()
)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code> (their text literal: no bold or link inside),
    **bold** into <strong> and [text](https://...) into links."""
    codes: list[str] = []

    def code(m) -> str:  # set aside, so `2**126` stays 2**126 rather than opening bold text
        # identifiers (adapter ids, case ids, paths) may break after '.', '/' and '_' rather
        # than widen a table past the page: the browser only breaks there when it must
        codes.append("<code>" + re.sub(r"([./_])", r"\1<wbr>", m.group(1)) + "</code>")
        return f"\x00{len(codes) - 1}\x00"

    out = re.sub(r"`([^`]+)`", code, html.escape(str(text).replace("\x00", ""), quote=True))
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\[([^\]]+)\]\(((?:https://|#)[^)\s]+)\)", r'<a href="\2">\1</a>', out)
    out = re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], out)
    return out.replace("\n", "<br>")


def _table(header, rows) -> str:
    numeric = [bool(rows) and all(row[k][1] == NUM for row in rows if k < len(row) and str(row[k][0]))
               for k in range(len(header))]
    out = ['<div class="scroll"><table>', "<thead><tr>" + "".join(
        ("<th class='num'>" if n else "<th>") + f"{_inline(h)}</th>" for h, n in zip(header, numeric)) + "</tr></thead>",
        "<tbody>"]
    for row in rows:
        cells = []
        for text, status in row:
            classes = [f"s-{status}"] if status in STATUS_TABLE else (["num"] if status == NUM else [])
            if status == FOLD:  # (shown, summary, folded)
                shown, summary, folded = text
                content = (f"{_inline(shown)}<details><summary>{_inline(summary)}</summary>"
                           f"{_inline(folded)}</details>")
                text = shown + folded
            else:
                content = _inline(text)
            classes += ["long"] if len(str(text)) > _LONG_CELL else []  # may break anywhere rather than widen the page
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{content}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def render(blocks, figures: dict[str, bytes]) -> str:
    title = next((b[1] for b in blocks if b[0] == "h1"), "cestab report")
    body = []
    headings = [b[1] for b in blocks if b[0] == "h2"]
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            body.append(f"<h1>{_inline(block[1])}</h1>")
        elif kind == "h2":
            body.append(f'<h2 id="{slug(block[1])}">{_inline(block[1])}</h2>')
        elif kind == "toc":
            body.append('<p class="toc">Contents: ' + " · ".join(
                f'<a href="#{slug(h)}">{_inline(h)}</a>' for h in headings) + "</p>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "table":
            body.append(_table(block[1], block[2]))
        elif kind == "figure":
            name = block[1]
            data = base64.b64encode(figures[name]).decode("ascii")
            alt = html.escape(FIGURE_TITLES[name])
            body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{alt}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
