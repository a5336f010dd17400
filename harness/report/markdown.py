"""The report as Markdown: `stability.md`, figures referenced as `figures/<name>.png`."""

from __future__ import annotations

from harness.report.text import FIGURE_TITLES, FOLD, NUM, slug


def _cell(text, status: str = "") -> str:
    if status == FOLD:  # (shown, summary, folded): all of it, Markdown has no folding in a table
        text = f"{text[0]}\n{text[2]}"
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _table(header, rows) -> list[str]:
    """A pipe table; a column whose filled cells are all numbers is right-aligned."""
    align = []
    for k in range(len(header)):
        tags = [row[k][1] for row in rows if k < len(row) and str(row[k][0])]
        align.append("---:|" if tags and all(t == NUM for t in tags) else "---|")
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "".join(align)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(text, status) for text, status in row) + " |")
    return lines


def render(blocks) -> str:
    headings = [b[1] for b in blocks if b[0] == "h2"]
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "toc":
            lines += ["Contents: " + " · ".join(f"[{h}](#{slug(h)})" for h in headings), ""]
        elif kind == "pre":
            lines += ["```", block[1], "```", ""]
        elif kind == "table":
            lines += _table(block[1], block[2]) + [""]
        elif kind == "figure":
            lines += [f"![{FIGURE_TITLES[block[1]]}](figures/{block[1]})", ""]
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n".join(lines).rstrip("\n") + "\n"
